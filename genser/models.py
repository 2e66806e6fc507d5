"""Gen-SER and the classification baseline, built from one config; single-file checkpoints.

Both kinds share the featurizer (softmax layer weights), the frame encoder and the pooling, and
expose the same API (documented here; the method in docs/METHOD.md)::

    model = build_model(config, labels, input_dim=D, num_layers=L)
    loss, stats = model.loss(feats, lengths, targets)        # feats [B, T, L, D], lengths [B]
    out = model.predict(feats, lengths, nsteps=1, eta=0.0)   # {"pred": [B], "scores": [B, K]}
    save_model("exp/model.pt", model, extra={"epoch": 3})
    model, extra = load_model("exp/model.pt")

Gen-SER (docs/METHOD.md §2.4-2.8): the pooled encoder output c conditions the denoiser D(x_t, t, c),
and a learned projection of c gives the initial sample x1 in code space; training is target
matching towards the class's taxonomy code, inference is the N-step sampler followed by a
similarity decision against all codes. The classifier puts dropout + linear + cross-entropy on c.
"""
import copy
import os
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

from genser.nn.denoiser import Denoiser
from genser.nn.layers import (
    COMBINE_MODES,
    ENCODER_TYPES,
    NORMALIZE_MODES,
    AttentivePooling,
    Featurizer,
    FrameEncoder,
    MeanPooling,
    build_pooling,
    lengths_to_mask,
    masked_mean,
    spec_augment,
)
from genser.sampler import get_sampler, time_grid
from genser.schedules import SCHEDULE_DEFAULTS, build_schedule
from genser.target_matching import perturb, sample_time, tm_loss
from genser.taxonomy import TAXONOMY_DEFAULTS, build_taxonomy

__all__ = [
    "DEFAULT_CONFIG",
    "resolve_config",
    "build_model",
    "save_model",
    "load_model",
    "ModelError",
    "SERModel",
    "GenSERModel",
    "ClassifierModel",
    "Featurizer",
    "FrameEncoder",
    "MeanPooling",
    "AttentivePooling",
    "Denoiser",
]

CHECKPOINT_FORMAT = "genser-model"
CHECKPOINT_VERSION = 1

# Every key a config may hold, with its default: the recipe's model, chosen by nested
# cross-validation over training speakers on utterance-level features (docs/TRAINING.md; the
# evidence is bench/results/tune_emodb_whisper_emotion.md). Sizes are small on purpose: corpora
# such as EmoDB have ~500 training utterances, and the models must train in minutes on a CPU.
DEFAULT_CONFIG = {
    "model": "genser",  # genser | classifier
    "featurizer": {
        "layers": "all",  # "all" or a list of layer indices
        "normalize": "batch",  # batch (masked running standardisation) | layer | none
        "combine": "concat",  # concat (layers side by side) | weighted (softmax sum of layers)
    },
    # Training-time regularisers (no effect in eval mode): SpecAugment on the standardised
    # featurizer output, and mixup of pooled embeddings and targets (for Gen-SER the targets are
    # codes, so a mixed target is a point between two codes of the continuous label space).
    "augment": {
        "time_masks": 0,
        "time_width": 0.05,  # fraction of the valid frames, per mask
        "chan_masks": 0,
        "chan_width": 0.1,  # fraction of the channels, per mask
        "mixup": 0.0,  # Beta(alpha, alpha) mixing weight; 0: off
    },
    "encoder": {
        "type": "mlp",  # mlp (utterance vectors or frame by frame) | transformer | conv (over frames)
        "hidden": 256,
        "layers": 1,
        "heads": 4,
        "ff_mult": 2,
        "kernel": 5,  # conv only
        "dropout": 0.1,  # inside blocks and on the pooled vector
        "input_dropout": 0.1,  # on the featurizer output
    },
    "pooling": "mean",  # mean | attentive
    "taxonomy": dict(TAXONOMY_DEFAULTS),
    "schedule": dict(SCHEDULE_DEFAULTS),
    "tm": {
        "t_eps": 1e-3,  # t ~ U(t_eps, 1) ...
        "p_one": 0.25,  # ... except this share of each batch, at exactly t=1
        "ce_weight": 0.0,  # auxiliary cross-entropy over similarity logits (0: none)
        "ce_tau": 0.1,  # temperature of those logits and of the predicted posteriors
        "x1_weight": 0.5,  # MSE pulling the initial sample x1 towards the code (0: x1 is free)
    },
    "denoiser": {
        "hidden": 128,
        "layers": 1,
        "time_dim": 64,
        "ff_mult": 2,
        "dropout": 0.1,
        "level": "utterance",  # utterance (vectors) | frame (per-frame transport, mean decision)
    },
    "sampler": {"method": "tm"},  # tm (exact Gaussian-path step) | euler
}


class ModelError(Exception):
    """A checkpoint that cannot be read or does not describe a genser model."""


def _merge(defaults, user, path):
    """Deep-merge user over defaults; keys the defaults lack raise ValueError (strict)."""
    out = copy.deepcopy(defaults)
    for key, val in user.items():
        name = f"{path}.{key}" if path else str(key)
        if key not in defaults:
            raise ValueError(f"unknown config key {name!r}; known keys here: {sorted(defaults)}")
        if isinstance(defaults[key], dict):
            if not isinstance(val, dict):
                raise ValueError(f"config key {name!r} must be a mapping, got {val!r}")
            out[key] = _merge(defaults[key], val, name)
        else:
            out[key] = copy.deepcopy(val)
    return out


def _require(cond, msg):
    if not cond:
        raise ValueError(msg)


def _check_number(value, name, lo, hi, ends="[]"):
    """A real number between lo and hi (hi may be None); ``ends`` says which bounds are closed,
    as in interval notation: "[)" is lo <= value < hi."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (YAML reads 1e-3 as a string; write 1.0e-3)" if isinstance(value, str) else ""
        raise ValueError(f"{name} must be a number, got {value!r}{hint}")
    above = value >= lo if ends[0] == "[" else value > lo
    below = hi is None or (value <= hi if ends[1] == "]" else value < hi)
    if not (above and below):
        raise ValueError(f"{name} must lie in {ends[0]}{lo}, {hi if hi is not None else 'inf'}{ends[1]}, "
                         f"got {value!r}")


def resolve_config(config=None):
    """The full config: ``config`` merged over DEFAULT_CONFIG and checked (ValueError if bad)."""
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"config must be a mapping, got {type(config).__name__}")
    conf = _merge(DEFAULT_CONFIG, config or {}, "")
    _require(conf["model"] in ("genser", "classifier"), f"model must be genser or classifier, got {conf['model']!r}")
    layers = conf["featurizer"]["layers"]
    _require(layers == "all" or (isinstance(layers, list) and layers and all(isinstance(i, int) for i in layers)),
             f"featurizer.layers must be 'all' or a non-empty list of ints, got {layers!r}")
    _require(conf["featurizer"]["combine"] in COMBINE_MODES,
             f"featurizer.combine must be one of {COMBINE_MODES}, got {conf['featurizer']['combine']!r}")
    aug = conf["augment"]
    for key in ("time_masks", "chan_masks"):
        _require(isinstance(aug[key], int) and aug[key] >= 0, f"augment.{key} must be an int >= 0, got {aug[key]!r}")
    enc = conf["encoder"]
    _require(enc["type"] in ENCODER_TYPES, f"encoder.type must be one of {ENCODER_TYPES}, got {enc['type']!r}")
    for key in ("hidden", "heads", "ff_mult", "kernel"):
        _require(isinstance(enc[key], int) and enc[key] >= 1, f"encoder.{key} must be an int >= 1, got {enc[key]!r}")
    _require(isinstance(enc["layers"], int) and enc["layers"] >= 0,
             f"encoder.layers must be an int >= 0, got {enc['layers']!r}")
    _require(conf["featurizer"]["normalize"] in NORMALIZE_MODES,
             f"featurizer.normalize must be one of {NORMALIZE_MODES}, got {conf['featurizer']['normalize']!r}")
    for sec, key, lo, hi, ends in (("encoder", "dropout", 0, 1, "[)"), ("encoder", "input_dropout", 0, 1, "[)"),
                                   ("denoiser", "dropout", 0, 1, "[)"), ("tm", "t_eps", 0, 1, "[)"),
                                   ("tm", "p_one", 0, 1, "[]"), ("tm", "ce_weight", 0, None, "[)"),
                                   ("tm", "x1_weight", 0, None, "[)"), ("tm", "ce_tau", 0, None, "()"),
                                   ("augment", "time_width", 0, 1, "[]"), ("augment", "chan_width", 0, 1, "[]"),
                                   ("augment", "mixup", 0, None, "[)")):
        _check_number(conf[sec][key], f"{sec}.{key}", lo, hi, ends)
    _require(conf["pooling"] in ("mean", "attentive"), f"pooling must be mean or attentive, got {conf['pooling']!r}")
    den = conf["denoiser"]
    for key in ("hidden", "time_dim", "ff_mult"):
        _require(isinstance(den[key], int) and den[key] >= 1, f"denoiser.{key} must be an int >= 1")
    _require(den["time_dim"] % 2 == 0, f"denoiser.time_dim must be even, got {den['time_dim']}")
    _require(isinstance(den["layers"], int) and den["layers"] >= 0,
             f"denoiser.layers must be an int >= 0, got {den['layers']!r}")
    _require(den["level"] in ("utterance", "frame"), f"denoiser.level must be utterance or frame, got {den['level']!r}")
    _require(not (aug["mixup"] > 0 and conf["model"] == "genser" and den["level"] == "frame"),
             "augment.mixup mixes pooled embeddings; it needs denoiser.level: utterance")
    get_sampler(conf["sampler"]["method"])
    build_schedule(conf["schedule"])  # validates the schedule section
    return conf


class SERModel(nn.Module):
    """Shared trunk: featurizer -> frame encoder -> pooling (-> dropout)."""

    kind = None

    def __init__(self, config, labels, input_dim, num_layers):
        super().__init__()
        labels = [str(x) for x in labels]
        _require(len(labels) >= 2, f"need at least 2 labels, got {labels}")
        _require(len(set(labels)) == len(labels), f"duplicate labels in {labels}")
        _require(int(input_dim) >= 1 and int(num_layers) >= 1,
                 f"input_dim and num_layers must be >= 1, got {input_dim}, {num_layers}")
        self.config, self.labels = config, labels
        self.input_dim, self.num_layers = int(input_dim), int(num_layers)
        enc, feat = config["encoder"], config["featurizer"]
        self.featurizer = Featurizer(self.num_layers, feat["layers"], feat["normalize"], dim=self.input_dim,
                                     combine=feat["combine"])
        self.encoder = FrameEncoder(self.featurizer.output_dim(self.input_dim), enc["hidden"], enc["layers"], enc["type"], enc["heads"],
                                    enc["ff_mult"], enc["kernel"], enc["dropout"], enc["input_dropout"])
        self.pooling = build_pooling(config["pooling"], enc["hidden"])
        self.drop = nn.Dropout(enc["dropout"])

    @property
    def num_classes(self):
        return len(self.labels)

    def encode(self, feats, lengths):
        """feats [B, T, L, D], lengths [B] -> frames h [B, T, H], mask [B, T], pooled c [B, H]."""
        if feats.ndim != 4 or feats.shape[2] != self.num_layers or feats.shape[3] != self.input_dim:
            raise ValueError(f"feats must be [B, T, {self.num_layers}, {self.input_dim}], got {tuple(feats.shape)}")
        if lengths.shape != (feats.shape[0],):
            raise ValueError(f"lengths must have shape [{feats.shape[0]}], got {tuple(lengths.shape)}")
        mask = lengths_to_mask(lengths.to(feats.device), feats.shape[1])
        # Padding needs no zeroing here (a full copy of the features): the featurizer works frame
        # by frame with statistics of valid frames, and the encoder zeroes padded frames first.
        x = self.featurizer(feats.float(), mask)
        aug = self.config["augment"]
        if self.training and (aug["time_masks"] or aug["chan_masks"]):
            x = spec_augment(x, mask, aug["time_masks"], aug["time_width"], aug["chan_masks"], aug["chan_width"])
        h = self.encoder(x, mask)
        return h, mask, self.drop(self.pooling(h, mask))

    def draw_mixup(self, batch):
        """(perm [B], lam) for a mixup of this training batch, or None (off, eval mode, B < 2).
        Drawn from torch's global generator, which training reseeds every epoch."""
        alpha = self.config["augment"]["mixup"]
        if not self.training or alpha <= 0 or batch < 2:
            return None
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        return torch.randperm(batch), lam

    def soft_targets(self, targets, mix):
        """Targets as class probabilities [B, K]: one-hot, or the mixup of two one-hots."""
        onehot = F.one_hot(targets, self.num_classes).float()
        if mix is None:
            return onehot
        perm, lam = mix
        return lam * onehot + (1.0 - lam) * onehot[perm.to(onehot.device)]

    def _check_targets(self, targets, batch):
        if targets.shape != (batch,):
            raise ValueError(f"targets must have shape [{batch}], got {tuple(targets.shape)}")
        if batch and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
            raise ValueError(f"targets must lie in [0, {self.num_classes}), got [{int(targets.min())}, "
                             f"{int(targets.max())}]")

    def predict(self, feats, lengths, nsteps=1, eta=0.0, generator=None):
        """{"pred": LongTensor [B], "scores": FloatTensor [B, K] posteriors}; runs in eval mode."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self._predict(feats, lengths, nsteps, eta, generator)
        finally:
            self.train(was_training)


class ClassifierModel(SERModel):
    """The classification baseline: shared trunk + linear head + cross-entropy."""

    kind = "classifier"

    def __init__(self, config, labels, input_dim, num_layers):
        super().__init__(config, labels, input_dim, num_layers)
        self.head = nn.Linear(config["encoder"]["hidden"], self.num_classes)

    def logits(self, feats, lengths, mix=None):
        c = self.encode(feats, lengths)[2]
        if mix is not None:
            c = mix[1] * c + (1.0 - mix[1]) * c[mix[0].to(c.device)]
        return self.head(c)

    def loss(self, feats, lengths, targets, generator=None):
        """Cross-entropy (on mixed targets under mixup); stats: loss, ce, acc (floats)."""
        self._check_targets(targets, feats.shape[0])
        mix = self.draw_mixup(feats.shape[0])
        logits = self.logits(feats, lengths, mix)
        targets = targets.to(logits.device)
        ce = F.cross_entropy(logits, targets if mix is None else self.soft_targets(targets, mix))
        acc = (logits.argmax(-1) == targets).float().mean()
        return ce, {"loss": float(ce.detach()), "ce": float(ce.detach()), "acc": float(acc)}

    def _predict(self, feats, lengths, nsteps, eta, generator):
        # nsteps/eta/generator: accepted so that both kinds share one predict signature
        scores = torch.softmax(self.logits(feats, lengths), dim=-1)
        return {"pred": scores.argmax(-1), "scores": scores}


class GenSERModel(SERModel):
    """Gen-SER: target matching from x1 = W c to the taxonomy code, conditioned on c."""

    kind = "genser"

    def __init__(self, config, labels, input_dim, num_layers):
        super().__init__(config, labels, input_dim, num_layers)
        hidden = config["encoder"]["hidden"]
        den = config["denoiser"]
        self.taxonomy = build_taxonomy(config["taxonomy"], self.labels)
        self.schedule = build_schedule(config["schedule"])
        self.sampler = get_sampler(config["sampler"]["method"])
        self.level = den["level"]
        code_dim = self.taxonomy.dim
        # docs/METHOD.md §2.8 (initial sample): the speech-derived x1 is a learned projection into code space
        self.x1_proj = nn.Linear(hidden, code_dim)
        self.denoiser = Denoiser(code_dim, hidden, den["hidden"], den["layers"], den["time_dim"],
                                 den["ff_mult"], den["dropout"])

    def condition(self, feats, lengths, mix=None):
        """(x1, c, mask): x1 [B, Dc] (or [B, T, Dc] at frame level) and the matching condition."""
        h, mask, pooled = self.encode(feats, lengths)
        if mix is not None:  # utterance level only (resolve_config)
            pooled = mix[1] * pooled + (1.0 - mix[1]) * pooled[mix[0].to(pooled.device)]
        if self.level == "utterance":
            return self.x1_proj(pooled), pooled, mask
        # frame level: every frame carries its own state; its condition adds the utterance context
        cond = h + pooled[:, None, :]
        return self.x1_proj(cond), cond, mask

    def _pool(self, x, mask):
        return masked_mean(x, mask) if x.ndim == 3 else x

    def loss(self, feats, lengths, targets, generator=None):
        """TM loss (+ optional CE and x1 terms); stats: loss, mse, ce, acc (floats)."""
        self._check_targets(targets, feats.shape[0])
        tm = self.config["tm"]
        mix = self.draw_mixup(feats.shape[0])
        x1, cond, mask = self.condition(feats, lengths, mix)
        targets = targets.to(x1.device)
        soft = self.soft_targets(targets, mix)
        # the terminal sample: the class code, or under mixup the same mixture of two codes
        x0 = (soft @ self.taxonomy.codes.to(soft)).to(x1.dtype)
        if x1.ndim == 3:
            x0 = x0[:, None, :].expand_as(x1)
        # draw on the generator's device (a CUDA generator cannot fill CPU tensors), then move
        rng_device = generator.device if generator is not None else x1.device
        t = sample_time(x1.shape[0], tm["t_eps"], tm["p_one"], generator=generator, device=rng_device).to(x1)
        noise = torch.randn(x0.shape, generator=generator, device=rng_device).to(x1)
        x0_hat = self.denoiser(perturb(x0, x1, t, noise, self.schedule), t, cond)
        logits = self.taxonomy.scores(self._pool(x0_hat, mask)) / tm["ce_tau"]
        loss, stats = tm_loss(x0_hat, x0, logits, targets if mix is None else soft, tm["ce_weight"],
                              mask if x1.ndim == 3 else None)
        if tm["x1_weight"] > 0:
            x1_mse = tm_loss(x1, x0, mask=mask if x1.ndim == 3 else None)[0]
            loss = loss + tm["x1_weight"] * x1_mse
            stats["x1_mse"] = float(x1_mse.detach())
            stats["loss"] = float(loss.detach())
        stats["acc"] = float((logits.argmax(-1) == targets).float().mean())
        return loss, stats

    def generate(self, feats, lengths, nsteps=1, eta=0.0, generator=None, callback=None):
        """Run the sampler on ``time_grid(nsteps)``: the terminal sample [B, Dc] (frame level: mean
        over valid frames); ``callback`` sees every step (genser.sampler). ``nsteps=0`` returns the
        initial sample x1 itself: an ablation of what transport adds."""
        x1, cond, mask = self.condition(feats, lengths)
        if nsteps == 0:
            return self._pool(x1, mask)
        out = self.sampler(lambda x, t: self.denoiser(x, t.to(x.dtype), cond), x1, time_grid(nsteps),
                           self.schedule, eta=eta, generator=generator, callback=callback)
        return self._pool(out, mask)

    def _predict(self, feats, lengths, nsteps, eta, generator):
        x = self.generate(feats, lengths, nsteps, eta, generator)
        scores = self.taxonomy.posteriors(x, tau=self.config["tm"]["ce_tau"])
        return {"pred": self.taxonomy.decide(x), "scores": scores}


MODEL_CLASSES = {"genser": GenSERModel, "classifier": ClassifierModel}


def build_model(config, labels, input_dim, num_layers):
    """A model of kind ``config["model"]`` for ``labels`` and features [*, *, num_layers, input_dim]."""
    conf = resolve_config(config)
    return MODEL_CLASSES[conf["model"]](conf, labels, input_dim, num_layers)


def _check_plain(value, name):
    """Refuse values that torch.load(weights_only=True) could not read back."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"{name}: key {k!r} must be a str or int")
            _check_plain(v, f"{name}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{name}[{i}]")
    elif not (value is None or isinstance(value, (str, bool, int, float, torch.Tensor))):
        raise ValueError(f"{name} has type {type(value).__name__}; checkpoints hold only "
                         "dict/list/str/int/float/bool/None/tensor values (convert numpy scalars with float())")


def save_model(path, model, extra=None):
    """Write one self-describing checkpoint (config, labels, sizes, weights, extra) atomically."""
    if not isinstance(model, SERModel):
        raise TypeError(f"save_model expects a genser model, got {type(model).__name__}")
    _check_plain(extra, "extra")
    _check_plain(model.config, "config")
    path = os.fspath(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": model.kind,
        "config": copy.deepcopy(model.config),
        "labels": list(model.labels),
        "input_dim": model.input_dim,
        "num_layers": model.num_layers,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra if extra is not None else {},
    }
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_model(path, map_location="cpu"):
    """(model in eval mode, extra) from a checkpoint written by ``save_model``."""
    path = os.fspath(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # pickle/zip errors carry no file name
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not a genser model checkpoint (no format={CHECKPOINT_FORMAT!r})")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ModelError(f"{path}: unsupported checkpoint version {ckpt.get('version')!r}")
    try:
        model = build_model(ckpt["config"], ckpt["labels"], ckpt["input_dim"], ckpt["num_layers"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: checkpoint does not match its config: {exc}") from exc
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    model.eval()
    return model, ckpt["extra"]

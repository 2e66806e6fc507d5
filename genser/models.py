"""Gen-SER and the classification baseline, built from one resolved config (genser.config).

Both kinds share the featurizer (softmax layer weights), the frame encoder and the pooling, and
expose the same API (documented here; the method in docs/METHOD.md)::

    model = build_model(config, labels, input_dim=D, num_layers=L)
    loss, stats = model.loss(feats, lengths, targets)        # feats [B, T, L, D], lengths [B]
    out = model.predict(feats, lengths, nsteps=1, eta=0.0)   # {"pred": [B], "scores": [B, K]}

Gen-SER (docs/METHOD.md §2.4-2.8): the pooled encoder output c conditions the denoiser D(x_t, t, c),
and a learned projection of c gives the initial sample x1 in code space; training is target
matching towards the class's taxonomy code, inference is the N-step sampler followed by a
similarity decision against all codes. The classifier puts dropout + linear + cross-entropy on c.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from genser.config import require, resolve_config
from genser.nn.denoiser import Denoiser
from genser.nn.layers import (
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
from genser.schedules import build_schedule
from genser.target_matching import perturb, sample_time, tm_loss
from genser.taxonomy import build_taxonomy

__all__ = [
    "build_model",
    "SERModel",
    "GenSERModel",
    "ClassifierModel",
    "Featurizer",
    "FrameEncoder",
    "MeanPooling",
    "AttentivePooling",
    "Denoiser",
]


class SERModel(nn.Module):
    """Shared trunk: featurizer -> frame encoder -> pooling (-> dropout)."""

    kind = None

    def __init__(self, config, labels, input_dim, num_layers):
        super().__init__()
        labels = [str(x) for x in labels]
        require(len(labels) >= 2, f"need at least 2 labels, got {labels}")
        require(len(set(labels)) == len(labels), f"duplicate labels in {labels}")
        require(int(input_dim) >= 1 and int(num_layers) >= 1,
                 f"input_dim and num_layers must be >= 1, got {input_dim}, {num_layers}")
        self.config, self.labels = config, labels
        self.input_dim, self.num_layers = int(input_dim), int(num_layers)
        enc = config["encoder"]
        # The config's sections name the layers' arguments (genser.config.DEFAULT_CONFIG, the one
        # place for their defaults).
        self.featurizer = Featurizer(self.num_layers, dim=self.input_dim, **config["featurizer"])
        self.encoder = FrameEncoder(self.featurizer.output_dim(self.input_dim), **enc)
        self.pooling = build_pooling(config["pooling"], enc["hidden"])
        self.drop = nn.Dropout(enc["dropout"])
        # Temperature of the posteriors, fitted after training on held-out training speakers
        # (genser.trainer.calibrate_inner); the decision (argmax) never depends on it. Kept in
        # the checkpoint's extra, not the weights, so averaging and resuming never see it.
        self.temperature = 1.0

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
                return self.infer(feats, lengths, nsteps, eta, generator)
        finally:
            self.train(was_training)

    def infer(self, feats, lengths, nsteps=1, eta=0.0, generator=None):
        """``predict`` in the module's current mode and grad state (what an ONNX trace records)."""
        raise NotImplementedError


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

    def infer(self, feats, lengths, nsteps=1, eta=0.0, generator=None):
        # nsteps/eta/generator: accepted so that both kinds share one predict signature
        scores = torch.softmax(self.logits(feats, lengths) / self.temperature, dim=-1)
        return {"pred": scores.argmax(-1), "scores": scores}


class GenSERModel(SERModel):
    """Gen-SER: target matching from x1 = W c to the taxonomy code, conditioned on c."""

    kind = "genser"

    def __init__(self, config, labels, input_dim, num_layers):
        super().__init__(config, labels, input_dim, num_layers)
        hidden = config["encoder"]["hidden"]
        den = config["denoiser"]
        self.taxonomy = build_taxonomy(config["taxonomy"], self.labels)
        if config["posterior"]["map"] == "barycentric" and not self.taxonomy.independent:
            raise ValueError(f"posterior.map barycentric needs linearly independent codes; the "
                             f"{config['taxonomy']['type']} taxonomy's {self.taxonomy.num_classes} codes are not "
                             f"(a product of levels): set posterior.map: cosine")
        self.schedule = build_schedule(config["schedule"])
        self.sampler = get_sampler(config["sampler"]["method"])
        self.level = den["level"]
        code_dim = self.taxonomy.dim
        # docs/METHOD.md §2.8 (initial sample): the speech-derived x1 is a learned projection into code space
        self.x1_proj = nn.Linear(hidden, code_dim)
        self.denoiser = Denoiser(code_dim, hidden, hidden=den["hidden"], layers=den["layers"],
                                 time_dim=den["time_dim"], mult=den["ff_mult"], dropout=den["dropout"])

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

    def infer(self, feats, lengths, nsteps=1, eta=0.0, generator=None):
        return self.decide_samples(self.generate(feats, lengths, nsteps, eta, generator))

    def decide_samples(self, sample):
        """{"pred": [...], "scores": [..., K]} of terminal samples [..., D]: the nearest code
        (docs/METHOD.md §2.7), and the posteriors under the model's map and temperature, in
        which the decided class holds the largest. The barycentric coordinates can rank two
        near-tied classes otherwise than the cosines (the codes are not quite orthogonal); their
        two posteriors then swap, so that the confidence is the decision's."""
        post = self.config["posterior"]
        pred = self.taxonomy.decide(sample)
        scores = self.taxonomy.posteriors(sample, map=post["map"], tau=self.config["tm"]["ce_tau"],
                                          floor=post["floor"], temperature=self.temperature)
        top, pick = scores.max(-1, keepdim=True), pred.unsqueeze(-1)
        classes = torch.arange(scores.shape[-1], device=scores.device)
        mine = scores.gather(-1, pick)
        scores = torch.where(classes == pick, top.values, torch.where(classes == top.indices, mine, scores))
        return {"pred": pred, "scores": scores}


MODEL_CLASSES = {"genser": GenSERModel, "classifier": ClassifierModel}


def build_model(config, labels, input_dim, num_layers):
    """A model of kind ``config["model"]`` for ``labels`` and features [*, *, num_layers, input_dim]."""
    conf = resolve_config(config)
    return MODEL_CLASSES[conf["model"]](conf, labels, input_dim, num_layers)

"""The model config: every key with its default (DEFAULT_CONFIG), the one deep merge, and the checks.

``resolve_config(user)`` merges a user config over DEFAULT_CONFIG (strict: an unknown key is an
error) and checks every value; genser.models builds a model from the result. The method behind
the keys is docs/METHOD.md; how the defaults were chosen, docs/TRAINING.md.
"""
import copy

from genser.calibration import TEMPERATURE_OBJECTIVES
from genser.nn.layers import COMBINE_MODES, ENCODER_TYPES, NORMALIZE_MODES
from genser.sampler import get_sampler
from genser.schedules import SCHEDULE_DEFAULTS, build_schedule
from genser.taxonomy import POSTERIOR_MAPS, TAXONOMY_DEFAULTS

__all__ = ["DEFAULT_CONFIG", "merge", "resolve_config"]

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
        "input_dropout": 0.5,  # on the featurizer output (bench/results/tune_emodb_whisper_spknorm_trunk.md)
    },
    "pooling": "mean",  # mean | attentive
    "taxonomy": dict(TAXONOMY_DEFAULTS),
    "schedule": dict(SCHEDULE_DEFAULTS),
    "tm": {
        "t_eps": 1e-3,  # t ~ U(t_eps, 1) ...
        "p_one": 0.25,  # ... except this share of each batch, at exactly t=1
        "ce_weight": 0.0,  # auxiliary cross-entropy over similarity logits (0: none)
        "ce_tau": 0.1,  # temperature of those logits and of the cosine posterior map
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
    # Gen-SER's posteriors from the terminal sample (genser.taxonomy.Taxonomy.posteriors):
    # barycentric (its coordinates in the codes) | cosine (softmax of cosines / tm.ce_tau).
    # fit: the scoring rule the temperature is fitted by, for both heads (nll | brier:
    # genser.calibration.TEMPERATURE_OBJECTIVES; docs/METHOD.md §6)
    # (bench/results/calibration_maps_emodb_whisper.md, calibration_recipe_emodb_whisper.md)
    "posterior": {"map": "barycentric", "floor": 0.003, "fit": "nll"},
}


def merge(base, override, strict=False, path=""):
    """Deep merge of nested dicts, ``override`` over ``base`` (neither is changed).

    ``strict``: every key of ``override`` must be in ``base`` and a mapping must stay a mapping
    (ValueError naming the dotted key); otherwise a value of another type simply replaces it.
    """
    out = copy.deepcopy(base)
    for key, val in override.items():
        name = f"{path}.{key}" if path else str(key)
        if strict and key not in base:
            raise ValueError(f"unknown config key {name!r}; known keys here: {sorted(base)}")
        if isinstance(base.get(key), dict):
            if isinstance(val, dict):
                out[key] = merge(base[key], val, strict, name)
                continue
            if strict:
                raise ValueError(f"config key {name!r} must be a mapping, got {val!r}")
        out[key] = copy.deepcopy(val)
    return out


def require(cond, msg):
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
    conf = merge(DEFAULT_CONFIG, config or {}, strict=True)
    require(conf["model"] in ("genser", "classifier"), f"model must be genser or classifier, got {conf['model']!r}")
    layers = conf["featurizer"]["layers"]
    require(layers == "all" or (isinstance(layers, list) and layers and all(isinstance(i, int) for i in layers)),
             f"featurizer.layers must be 'all' or a non-empty list of ints, got {layers!r}")
    require(conf["featurizer"]["combine"] in COMBINE_MODES,
             f"featurizer.combine must be one of {COMBINE_MODES}, got {conf['featurizer']['combine']!r}")
    aug = conf["augment"]
    for key in ("time_masks", "chan_masks"):
        require(isinstance(aug[key], int) and aug[key] >= 0, f"augment.{key} must be an int >= 0, got {aug[key]!r}")
    enc = conf["encoder"]
    require(enc["type"] in ENCODER_TYPES, f"encoder.type must be one of {ENCODER_TYPES}, got {enc['type']!r}")
    for key in ("hidden", "heads", "ff_mult", "kernel"):
        require(isinstance(enc[key], int) and enc[key] >= 1, f"encoder.{key} must be an int >= 1, got {enc[key]!r}")
    require(isinstance(enc["layers"], int) and enc["layers"] >= 0,
             f"encoder.layers must be an int >= 0, got {enc['layers']!r}")
    require(conf["featurizer"]["normalize"] in NORMALIZE_MODES,
             f"featurizer.normalize must be one of {NORMALIZE_MODES}, got {conf['featurizer']['normalize']!r}")
    for sec, key, lo, hi, ends in (("encoder", "dropout", 0, 1, "[)"), ("encoder", "input_dropout", 0, 1, "[)"),
                                   ("denoiser", "dropout", 0, 1, "[)"), ("tm", "t_eps", 0, 1, "[)"),
                                   ("tm", "p_one", 0, 1, "[]"), ("tm", "ce_weight", 0, None, "[)"),
                                   ("tm", "x1_weight", 0, None, "[)"), ("tm", "ce_tau", 0, None, "()"),
                                   ("augment", "time_width", 0, 1, "[]"), ("augment", "chan_width", 0, 1, "[]"),
                                   ("augment", "mixup", 0, None, "[)")):
        _check_number(conf[sec][key], f"{sec}.{key}", lo, hi, ends)
    require(conf["pooling"] in ("mean", "attentive"), f"pooling must be mean or attentive, got {conf['pooling']!r}")
    den = conf["denoiser"]
    for key in ("hidden", "time_dim", "ff_mult"):
        require(isinstance(den[key], int) and den[key] >= 1, f"denoiser.{key} must be an int >= 1")
    require(den["time_dim"] % 2 == 0, f"denoiser.time_dim must be even, got {den['time_dim']}")
    require(isinstance(den["layers"], int) and den["layers"] >= 0,
             f"denoiser.layers must be an int >= 0, got {den['layers']!r}")
    require(den["level"] in ("utterance", "frame"), f"denoiser.level must be utterance or frame, got {den['level']!r}")
    require(not (aug["mixup"] > 0 and conf["model"] == "genser" and den["level"] == "frame"),
             "augment.mixup mixes pooled embeddings; it needs denoiser.level: utterance")
    require(conf["posterior"]["map"] in POSTERIOR_MAPS,
            f"posterior.map must be one of {POSTERIOR_MAPS}, got {conf['posterior']['map']!r}")
    _check_number(conf["posterior"]["floor"], "posterior.floor", 0, 1, "()")
    require(conf["posterior"]["fit"] in TEMPERATURE_OBJECTIVES,
            f"posterior.fit must be one of {sorted(TEMPERATURE_OBJECTIVES)}, got {conf['posterior']['fit']!r}")
    get_sampler(conf["sampler"]["method"])
    build_schedule(conf["schedule"])  # validates the schedule section
    return conf

"""Single-file model checkpoints: config, labels, sizes and weights, written atomically.

    save_model("exp/model.pt", model, extra={"epoch": 3})
    model, extra = load_model("exp/model.pt")

A checkpoint is data, never code: it holds only plain values and tensors, and loads with
``torch.load(..., weights_only=True)``. The write goes through genser.fileio.atomic_open.
"""
import copy
import io
import math
import os

import torch

from genser.fileio import atomic_open
from genser.models import SERModel, build_model

__all__ = ["save_model", "load_model", "ModelError"]

CHECKPOINT_FORMAT = "genser-model"
CHECKPOINT_VERSION = 1


class ModelError(Exception):
    """A checkpoint that cannot be read or does not describe a genser model."""


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
        # the posteriors' temperature (genser.trainer.calibrate_inner) travels with the model
        "extra": {**(extra or {}), "temperature": float(getattr(model, "temperature", 1.0))},
    }
    torch_save_atomic(payload, path)


def torch_save_atomic(obj, path):
    """``torch.save(obj)`` to ``path`` through the atomic writer (temp file, then rename).

    Serialised in memory first: torch's zip writer, handed a file that hits a full disk, raises
    "[enforce fail at inline_container.cc] unexpected pos" and drops the errno; a plain write
    of the bytes fails with an OSError that atomic_open re-raises naming ``path``.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getbuffer())


def _upgrade(config, path):
    """The config of an older checkpoint in today's schema. A config without a ``posterior``
    section predates the barycentric map: it keeps the cosine posteriors its temperature was
    fitted for. ``taxonomy.metric`` is gone (the decision is cosine, docs/METHOD.md §2.7), so a
    stored "cosine" is dropped and anything else refused."""
    if not isinstance(config, dict):
        return config
    if "posterior" not in config:
        config = {**config, "posterior": {"map": "cosine"}}
    tax = config.get("taxonomy")
    if not isinstance(tax, dict) or "metric" not in tax:
        return config
    if tax["metric"] != "cosine":
        raise ModelError(f"{path}: taxonomy.metric {tax['metric']!r} is no longer supported (cosine only)")
    return {**config, "taxonomy": {k: v for k, v in tax.items() if k != "metric"}}


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
        model = build_model(_upgrade(ckpt["config"], path), ckpt["labels"], ckpt["input_dim"], ckpt["num_layers"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: checkpoint does not match its config: {exc}") from exc
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    model.eval()
    temperature = ckpt["extra"].get("temperature", 1.0) if isinstance(ckpt["extra"], dict) else 1.0
    if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
        raise ModelError(f"{path}: temperature must be a positive number, got {temperature!r}")
    model.temperature = float(temperature)
    return model, ckpt["extra"]

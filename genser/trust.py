"""Which frontend a model checkpoint may name, judged by what the file is, not where it lies.

A model.pt can come from anyone, and the frontend spec it records (``extra["feats"]["frontend"]``)
names a file or folder that would be loaded. Loading is safe when it cannot execute code:

- transformers folders whose weights are ``*.safetensors`` and whose config.json has no
  ``auto_map`` (custom model code) and that hold no ``*.py`` files;
- s3prl upstreams computed by code alone (fbank, mfcc, ...), which load no file;
- s3prl checkpoints that load with ``torch.load(weights_only=True)``, which rebuilds tensors and
  plain containers only: a file that passes carries no pickled code.

Such a frontend loads from wherever it is (a relative path resolves against the model file's
folder, never the CWD). Pickles (pytorch_model.bin, a checkpoint that fails the weights-only
load), URLs and download sources (``*_url``/``*_custom`` upstreams) and remote code are refused
unless the user opts in (``trust=True``, genser-infer --trust_frontend).
"""
import argparse
import json
from pathlib import Path

import torch

from genser.frontend import UntrustedFrontendError, frontend_spec

__all__ = ["REMOTE_SUFFIXES", "S3PRL_CODE_ONLY", "UntrustedFrontendError", "check_hf_folder",
           "check_weights_only", "is_remote", "stored_frontend_spec"]

# s3prl upstreams whose 'path' is a download source (a URL, a hub repository), not a local file.
REMOTE_SUFFIXES = ("_url", "_custom")
# s3prl upstreams computed by code alone (no weights to fetch, load or ship).
S3PRL_CODE_ONLY = ("fbank", "fbank_no_cmvn", "mfcc", "mel", "spectrogram", "linear")


def is_remote(spec):
    """True when the spec's 'path' is something to download rather than a local file."""
    return "://" in spec.get("path", "") or (spec["type"] == "s3prl" and spec["name"].endswith(REMOTE_SUFFIXES))


def check_weights_only(path, where, hint):
    """Raises UntrustedFrontendError unless ``path`` loads with torch.load(weights_only=True)."""
    try:
        # argparse.Namespace (fairseq-style configs in s3prl checkpoints) is a plain attribute
        # bag: rebuilding one runs no code of the file's choosing.
        with torch.serialization.safe_globals([argparse.Namespace]):
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any failure means "not provably safe"
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise UntrustedFrontendError(f"{where} does not load with torch.load(weights_only=True), so loading "
                                     f"it could run code it carries ({reason}): {hint}") from None


def check_hf_folder(folder, where, hint):
    """Raises UntrustedFrontendError unless the transformers folder loads without running code:
    safetensors weights, no auto_map in config.json, no Python files."""
    folder = Path(folder)
    if not list(folder.glob("*.safetensors")):
        raise UntrustedFrontendError(f"{where} has no *.safetensors weights; pickled weights "
                                     f"(pytorch_model.bin) can run code when loaded: {hint}")
    config = folder / "config.json"
    if config.is_file():
        try:
            with open(config, encoding="utf-8") as f:
                auto_map = json.load(f).get("auto_map")
        except (OSError, ValueError, AttributeError) as exc:
            raise UntrustedFrontendError(f"{where}: cannot read {config}: {exc}") from None
        if auto_map:
            raise UntrustedFrontendError(f"{where}: {config} names custom model code (auto_map), which "
                                         f"would be imported: {hint}")
    code = sorted(p.name for p in folder.glob("*.py"))
    if code:
        raise UntrustedFrontendError(f"{where} holds Python files ({', '.join(code)}), i.e. custom model "
                                     f"code: {hint}")


def stored_frontend_spec(spec, model_path, trust=False):
    """The frontend spec recorded in the checkpoint ``model_path``, checked before anything loads.

    Relative paths resolve against the model file's folder. Unless ``trust``, the spec must name
    something that loads without running code (module docstring); else UntrustedFrontendError,
    one line naming the model file and the path. Callers build a stored spec with
    ``build_frontend(spec, safetensors_only=not trust)``, so transformers never falls back to
    pickled weights that appear after this check.
    """
    spec = frontend_spec(spec)
    if "path" not in spec:
        return spec
    model_path = Path(model_path)
    raw = spec["path"]
    where = f"{model_path}: frontend path {raw!r} (the 'feats.frontend.path' it records)"
    hint = (f"name the frontend yourself with --frontend_path, or pass --trust_frontend if you trust "
            f"{model_path.name} and its source")
    if is_remote(spec):
        if trust:
            return spec
        raise UntrustedFrontendError(f"{where} is a download source; genser does not fetch what a "
                                     f"checkpoint names: {hint}")
    path = (model_path.resolve().parent / raw).resolve()  # an absolute raw path stays itself
    spec["path"] = str(path)
    if trust or not path.exists():  # a missing path is reported by build_frontend
        return spec
    if spec["type"] == "s3prl" and path.is_file():
        # s3prl then loads the same file with weights_only=False: the check holds for the file's
        # content now, so it guards against what a model names, not against a writer racing us.
        check_weights_only(path, where, hint)
    elif spec["type"] == "hf" and path.is_dir():
        check_hf_folder(path, where, hint)
    return spec

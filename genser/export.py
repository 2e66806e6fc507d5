"""A trained model as a self-contained folder to ship (genser-export), and the checks of one.

    info = export_model("exp/.../fold_03/model.pt", tmp, licence="CC-BY-4.0", onnx_nsteps=[1, 3])
    verify_export("export/emodb_egemaps")   # ExportError naming a file changed since the export

The folder holds ``model.pt`` (its frontend spec pointing inside the folder), ``frontend/`` (the
frontend's checkpoint file or transformers folder, safetensors only, when it has one), a model
card ``README.md``, optional ONNX heads (genser/onnx_head.py) and ``export.yaml``, the card's
facts for programs plus the sha256 of every other file it wrote. Loading an export
(``Classifier.from_pretrained``, genser-infer, ``OnnxHead``) verifies those checksums and refuses
a changed file, naming it.
"""
import datetime
import hashlib
import logging
import os
import shutil
from pathlib import Path

import torch
import yaml

from genser.options import read_yaml
from genser.calibration import TEMPERATURE_OBJECTIVES
from genser.checkpoint import load_model, save_model
from genser.fileio import atomic_write, read_kv, read_list
from genser.frontend import FrontendError, frontend_spec
from genser.onnx_head import ExportError
from genser.trust import S3PRL_CODE_ONLY, check_hf_folder, check_weights_only, is_remote

__all__ = ["MARKER", "export_model", "export_folder_of", "replace_folder", "results_row", "verify_export",
           "model_card", "portable_frontend"]

log = logging.getLogger("genser.export")

# Files of a transformers folder that an export carries (safetensors weights, never pickles).
HF_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")
MARKER = "export.yaml"
TOLERANCE = 1e-4


# ---- checksums -----------------------------------------------------------------------------
def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checksums(folder):
    """{relative path: sha256} of every file under ``folder`` but export.yaml."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER}


def export_folder_of(model_path):
    """The export folder ``model_path`` lies in (the folder holds export.yaml), or None."""
    folder = Path(model_path).parent
    return folder if (folder / MARKER).is_file() else None


def verify_export(folder, names=None):
    """Raises ExportError naming the first file (of ``names``, default all) whose sha256 differs
    from the one export.yaml records, or that is missing. An export older than the checksums
    (no 'files' entry) is loaded with a warning."""
    folder = Path(folder)
    try:
        recorded = (yaml.safe_load((folder / MARKER).read_text(encoding="utf-8")) or {}).get("files")
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise ExportError(f"{folder / MARKER}: cannot read the export record: {exc}") from None
    if not recorded:
        log.warning("%s records no checksums (an export older than them): its files are not verified",
                    folder / MARKER)
        return
    for name in (recorded if names is None else names):
        path = folder / name
        if name not in recorded:
            raise ExportError(f"{path}: not listed in {folder / MARKER}; it was not written by genser-export")
        if not path.is_file():
            raise ExportError(f"{path}: missing; {folder / MARKER} lists it (sha256 {recorded[name][:12]}...)")
        if sha256(path) != recorded[name]:
            raise ExportError(f"{path}: its sha256 differs from the one {folder / MARKER} records: the file "
                              f"changed after the export (corrupted or tampered); export again or fetch it again")


# ---- the frontend --------------------------------------------------------------------------
def recipe_dir(model_path):
    """The recipe folder a model.pt of ser.sh lies in (the parent of its exp/), or None."""
    parts = Path(model_path).resolve().parts
    if "exp" not in parts:
        return None
    return Path(*parts[: len(parts) - 1 - parts[::-1].index("exp")])


def locate(raw, model_path, frontend_path):
    """The frontend file/folder on this machine: ``frontend_path``, else the recorded path
    (relative paths: the model's folder, as genser-infer resolves them, then the recipe folder,
    where stage 1 ran)."""
    if frontend_path is not None:
        candidates = [Path(frontend_path)]
    elif Path(raw).is_absolute():
        candidates = [Path(raw)]
    else:
        candidates = [model_path.resolve().parent / raw]
        if recipe_dir(model_path) is not None:
            candidates.append(recipe_dir(model_path) / raw)
    for path in candidates:
        if path.exists():
            return path.resolve()
    raise FrontendError(f"the frontend path {raw!r} that {model_path} records is not found (looked at "
                        f"{', '.join(map(str, candidates))}); give its location with --frontend_path")


def portable_frontend(spec, model_path, frontend_path=None):
    """(spec for the export, file or folder to copy into frontend/ or None); FrontendError says
    what is missing when the frontend cannot travel with the model."""
    spec = frontend_spec(spec)
    kind = spec["type"]
    if kind == "opensmile":
        return spec, None
    if kind == "s3prl" and "path" not in spec:
        if spec["name"] not in S3PRL_CODE_ONLY:
            raise FrontendError(f"{model_path}: s3prl upstream {spec['name']!r} downloads its weights when it is "
                                f"built, so an export cannot carry them; train on its *_local upstream with a "
                                f"checkpoint file (ser.sh --frontend <name>_local --frontend_path ...) and export that")
        return spec, None
    if is_remote(spec):
        raise FrontendError(f"{model_path}: the frontend {spec} is a download source, not a file an export can "
                            f"copy; save the checkpoint locally, and give it with --frontend_path")
    source = locate(spec["path"], model_path, frontend_path)
    where = f"{model_path}: frontend {source}"
    if kind == "s3prl":
        if not source.is_file():
            raise FrontendError(f"{where}: s3prl upstream {spec['name']!r} needs a checkpoint file")
        check_weights_only(source, where, "genser-infer would refuse it; re-save its weights as plain tensors")
    else:
        check_hf_folder(source, where, "genser-infer would refuse it; convert it, e.g. "
                        "model.save_pretrained(folder, safe_serialization=True), without custom code")
    return {**spec, "path": f"frontend/{source.name}"}, source


def copy_frontend(source, folder):
    """Copies a checkpoint file, or a transformers folder's config and safetensors, into folder/frontend/."""
    dest = folder / "frontend" / source.name
    dest.parent.mkdir(parents=True)
    if source.is_file():
        shutil.copyfile(source, dest)
        return
    dest.mkdir()
    for pattern in HF_FILES:
        for f in sorted(source.glob(pattern)):
            shutil.copyfile(f, dest / f.name)


# ---- the model card ------------------------------------------------------------------------
def results_row(results, kind):
    """The table header and the first row of system ``kind`` in a RESULTS.md written by
    genser-score(_seeds), or None."""
    lines = Path(results).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines[:-2]):
        if line.startswith("| System |") and lines[i + 1].startswith("| ---"):
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                if row.split("|")[1].strip() == kind:
                    return [line, lines[i + 1], row]
    return None


def default_results(model_path):
    """The experiment's RESULTS.md (over seeds), then the seed's: exp/<exp>/seed<S>/<model>/fold_<f>/."""
    above = list(model_path.resolve().parents)
    for candidate in (d / "RESULTS.md" for d in above[3:4] + above[2:3]):
        if candidate.is_file():
            return candidate
    return None


def training_facts(model_path, extra):
    """What the card says of the training run: task, fold, epochs, and the speakers from the data dir."""
    fold_dir = model_path.resolve().parent
    facts = {"task": extra.get("task"), "test_fold": extra.get("fold"), "epochs": extra.get("epochs"),
             "averaged_epochs": extra.get("averaged_epochs"), "identity": extra.get("identity")}
    config = fold_dir.parent / "config.yaml"
    train_list = fold_dir / "train.list"
    if config.is_file() and train_list.is_file():
        conf = read_yaml(config)
        utts = read_list(train_list)
        facts["train_utterances"] = len(utts)
        spk_file = (recipe_dir(model_path) or fold_dir) / conf.get("data_dir", "") / "utt2spk"
        if spk_file.is_file():
            spk = read_kv(spk_file)
            facts["train_speakers"] = sorted({spk[u] for u in utts if u in spk})
        facts["train_options"] = {k: conf[k] for k in ("epochs", "batch_size", "lr", "average", "seed") if k in conf}
    return facts


def flow(value):
    """A YAML value on one line."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10 ** 6).strip()


def frontend_note(spec):
    if spec["type"] == "opensmile":
        return "openSMILE, from the opensmile package: pip install 'genser[opensmile]'"
    if "path" in spec:
        return f"its files are in `{spec['path']}`"
    return "computed by s3prl, no weights"


def norm_note(norm):
    """What the card says of the feature normalisation the model expects."""
    if not norm:
        return "none (the features as the frontend gives them)"
    what = "mean and variance" if norm.get("norm_vars") else "mean"
    return (f"per-speaker CMVN ({what}, relevance {float(norm['relevance']):g}): a speaker's features are "
            f"normalised with their own moments, shrunk towards the training moments stored in model.pt by "
            f"the relevance. A file classified alone is a speaker of one clip, normalised alone against the "
            f"training moments; give a speaker's files together (genser-infer --utt2spk, "
            f"`classify_files(paths, speaker=...)`) to use their moments")


def posterior_note(info):
    """What the card says of the posteriors and their temperature."""
    post = info.get("posteriors")
    if not post:
        return "not recorded"
    t = f"temperature {post['temperature']:g}"
    fitted = f" by {post['fit']}" if post.get("fit") in TEMPERATURE_OBJECTIVES else ""
    t += f" (fitted on held-out training speakers{fitted})" if post["temperature"] != 1.0 else " (not calibrated)"
    if info["kind"] != "genser":
        return f"softmax of the logits, {t}"
    if post["map"] == "cosine":
        return f"softmax of the cosines to the codes over tau {post['tau']:g}, {t}"
    return (f"the barycentric coordinates of the sample in the codes (floor {post['floor']:g}), {t}; "
            f"the decision is the nearest code")


def model_card(info, row):
    """README.md of the export."""
    facts, meta = info["training"], info["features"]
    speakers = facts.get("train_speakers")
    protocol = (f"trained with test fold `{facts['test_fold']}` held out"
                + (f" on {facts['train_utterances']} utterances" if "train_utterances" in facts else "")
                + (f" of {len(speakers)} speakers ({' '.join(speakers)})" if speakers else "")
                + f"; {facts['epochs']} epochs, the weights averaged over epochs {facts['averaged_epochs']}.")
    heads = info["onnx"]
    lines = [f"# {info['name']}", "",
             ("A Gen-SER model (generative transport to taxonomy codes)" if info["kind"] == "genser"
              else "A genser classifier (the classification baseline)")
             + f" for speech {facts['task']} recognition, exported by genser-export.", "",
             f"- licence: {info['licence']}",
             f"- training corpus: {info['corpus'] or 'not recorded'}",
             f"- protocol: {protocol}",
             f"- labels ({len(info['labels'])}): {', '.join(info['labels'])}",
             f"- frontend: `{flow(frontend_spec(meta['frontend']))}` ({frontend_note(meta['frontend'])})",
             f"- features: layers {meta['layers']}, pooling `{meta['pooling']}`, {meta['num_layers']} x {meta['dim']}",
             f"- normalisation: {norm_note(info['norm'])}",
             f"- posteriors: {posterior_note(info)}",
             f"- exported {info['date']} from `{info['source']}` (training identity {facts['identity']}); "
             f"`export.yaml` holds the sha256 of every file, checked when the folder is loaded", "",
             "## Results", ""]
    if row:
        lines += [f"From `{info['results']}` (all folds of the experiment, not only this model's):", "", *row, ""]
        if "clip UA" in row[0]:  # the summary by evaluation protocol (genser.bin.score_seeds)
            lines += ["Each column names an evaluation protocol: `clip` is what one file of an unknown speaker gets "
                      "(each clip normalised alone), `speaker-K` what K files of the speaker given together get, "
                      "`speaker-all` all of them (docs/TRAINING.md, \"Evaluation protocols\").", ""]
    else:
        lines += ["No RESULTS.md row was found for this model (give one with genser-export --results).", ""]
    lines += ["## Use", "", "```sh", "genser-infer --model model.pt recording.wav", "```", "",
              "```python", "from genser.inference import Classifier", "",
              "print(Classifier.from_pretrained('.').classify_file('recording.wav'))", "```", ""]
    if heads:
        lines += ["## ONNX head", "",
                  f"Features in, posteriors out; the frontend is not in the graph. Inputs: `feats` float32 "
                  f"[batch, frames, {meta['num_layers']}, {meta['dim']}] (batch, frames, layers, dim: the features "
                  f"as stage 1 stores them, frames = 1 when pooled) and `lengths` int64 [batch]; output: "
                  f"`scores` float32 [batch, labels], in the label order above. "
                  + ("The features must be normalised first as the normalisation line above says (the training "
                     "moments are `extra.norm` or `extra.feats.cmvn` in model.pt)." if info["norm"]
                     else "The features are not normalised."), "",
                  "| file | sampler steps | max abs difference to torch |", "|---|---|---|",
                  *(f"| {h['file']} | {h['nsteps'] if h['nsteps'] else '-'} | {h['max_diff']:.1e} |" for h in heads), ""]
    return "\n".join(lines)


# ---- the export ----------------------------------------------------------------------------
def export_onnx(model, folder, nsteps_list):
    """Writes and checks the ONNX graphs; returns their records for the card."""
    from genser.onnx_head import example_inputs, export_head, max_difference

    records = []
    for nsteps in (nsteps_list if model.kind == "genser" else [None]):
        name = f"head_nsteps{nsteps}.onnx" if nsteps else "head.onnx"
        export_head(model, folder / name, nsteps=nsteps or 1)
        feats, lengths = example_inputs(model, batch=4, frames=5)
        diff = max_difference(model, folder / name, feats, lengths, nsteps=nsteps or 1)
        if not diff <= TOLERANCE:
            raise ExportError(f"{name}: ONNX Runtime and torch differ by {diff:.2e} (> {TOLERANCE:g})")
        log.info("%s: ONNX Runtime vs torch max |difference| %.2e", name, diff)
        records.append({"file": name, "nsteps": nsteps, "max_diff": diff})
    return records


def check_export(folder):
    """Loads the export as genser-infer does (untrusted, checksums verified) and classifies a
    pseudo waveform; ExportError if that fails."""
    from genser.inference import Classifier, InferenceError

    try:
        clf = Classifier.from_pretrained(folder)
        wav = 0.1 * torch.randn(clf.sample_rate, generator=torch.Generator().manual_seed(0))
        clf.posteriors([wav], "a pseudo waveform")
    except InferenceError as exc:
        raise ExportError(f"the export in {folder} does not load back: {exc}") from None


def export_model(model_path, folder, *, licence, name=None, corpus=None, results=None, frontend_path=None,
                 onnx_nsteps=None):
    """Fills ``folder`` (fresh and empty) with the export of ``model_path``; returns the info written
    to export.yaml. ``onnx_nsteps``: a list of sampler steps for ONNX heads (None: no ONNX)."""
    from genser.inference import model_norm

    model_path, folder = Path(model_path), Path(folder)
    model, extra = load_model(model_path)
    meta = extra.get("feats")
    if not meta or "frontend" not in meta:
        raise FrontendError(f"{model_path} records no frontend (no 'feats' entry): it was not written by "
                            f"genser.bin.train, and an export without its frontend could not be used")
    spec, source = portable_frontend(meta["frontend"], model_path, frontend_path)
    if source is not None:
        copy_frontend(source, folder)
    meta = {**meta, "frontend": {**meta["frontend"], **spec}}
    save_model(folder / "model.pt", model, extra={**extra, "feats": meta})
    results = Path(results) if results else default_results(model_path)
    row = results_row(results, model.kind) if results is not None and results.is_file() else None
    if row is None:
        log.warning("no RESULTS.md row for %s (looked at %s); the card says so", model.kind, results)
    recipe = recipe_dir(model_path)
    norm = model_norm(extra)
    norm = {k: norm[k] for k in ("kind", "norm_vars", "relevance") if k in norm} if norm else None
    info = {"name": name or folder.name, "kind": model.kind, "labels": list(model.labels), "licence": licence,
            "corpus": corpus or (recipe.name if recipe else None), "training": training_facts(model_path, extra),
            "features": meta, "norm": norm, "results": str(results) if row else None, "source": str(model_path),
            "posteriors": {**model.config["posterior"], "tau": model.config["tm"]["ce_tau"],
                           "temperature": float(model.temperature)},
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "onnx": export_onnx(model, folder, onnx_nsteps) if onnx_nsteps else []}
    atomic_write(folder / "README.md", model_card(info, row) + "\n")
    info["files"] = checksums(folder)  # last: every file the export wrote, export.yaml aside
    atomic_write(folder / MARKER, yaml.safe_dump(info, sort_keys=False))
    # temp files are created 0600; a folder to ship is readable as the umask allows
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
    return info


def replace_folder(tmp, out):
    """Renames the finished export into place; an earlier export there is replaced, anything else refused."""
    if out.exists():
        if not (out / MARKER).is_file():
            raise ExportError(f"{out} exists and is not a genser export (no {MARKER}); choose another --out_dir")
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)

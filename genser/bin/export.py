"""Write a trained model as a self-contained folder that can be shipped (genser-export).

    genser-export --model exp/emotion_egemaps_mean_normauto_train/seed0/genser/fold_03/model.pt \
        --out_dir export/emodb_egemaps_genser --licence CC-BY-4.0 [--onnx --nsteps "1 3"]
    genser-infer --model export/emodb_egemaps_genser/model.pt a.wav

The folder holds:

- ``model.pt``: the checkpoint, its frontend spec rewritten to point inside the folder;
- ``frontend/``: the frontend's checkpoint file or transformers folder (safetensors only), when
  the frontend has one (s3prl's hand-crafted upstreams and openSMILE need none);
- ``README.md``: the model card (corpus, protocol, the RESULTS.md row, labels, frontend spec,
  licence) and ``export.yaml``, the same facts for programs;
- with ``--onnx``: ``head.onnx`` (classifier) or ``head_nsteps<N>.onnx`` (Gen-SER, one fixed
  graph per N): stored features in, posteriors out (genser/onnx_head.py). Each graph is checked
  against torch (max |difference| <= 1e-4) before it is kept.

A frontend that cannot travel (a download source, an s3prl upstream that fetches its weights, a
file that genser-infer would refuse to load) stops the export with a message saying what is
missing. The folder is built under a temporary name and renamed into place; the export is then
loaded back with genser-infer's loader (no --trust_frontend) and run on a pseudo waveform.
"""
import argparse
import datetime
import logging
import os
import shutil
from pathlib import Path

import torch
import yaml

from genser.bin.common import read_yaml, setup_logging
from genser.fileio import atomic_write, read_kv, read_list
from genser.frontend import REMOTE_SUFFIXES, FrontendError, check_weights_only, frontend_spec
from genser.checkpoint import ModelError, load_model, save_model
from genser.onnx_head import ExportError

log = logging.getLogger("genser.export")

# s3prl upstreams computed by code alone (no weights to fetch or ship).
S3PRL_CODE_ONLY = ("fbank", "fbank_no_cmvn", "mfcc", "mel", "spectrogram", "linear")
# Files of a transformers folder that an export carries (safetensors weights, never pickles).
HF_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")
MARKER = "export.yaml"
TOLERANCE = 1e-4


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by training (stage 3)")
    p.add_argument("--out_dir", required=True, help="export folder (replaced if it holds an earlier export)")
    p.add_argument("--licence", "--license", dest="licence", required=True,
                   help='licence of the exported model, e.g. "CC-BY-4.0" (mind the corpus licence)')
    p.add_argument("--corpus", default=None, help="training corpus name for the card (default: the recipe "
                   "folder the model lies in, egs/<corpus>/exp/...)")
    p.add_argument("--results", default=None, help="RESULTS.md whose row the card quotes (default: the "
                   "experiment's RESULTS.md, then the seed's)")
    p.add_argument("--frontend_path", default=None, help="where the frontend file or folder the model names "
                   "is now (default: its recorded path, relative to the model's folder or the recipe folder)")
    p.add_argument("--onnx", action="store_true", help="also export the head as ONNX (needs genser[onnx])")
    p.add_argument("--nsteps", default="1", help='Gen-SER sampler steps of the ONNX graphs, e.g. "1 3"')
    p.add_argument("--no_check", action="store_true", help="skip loading the export back with genser-infer")
    return p


# ---------------------------------------------------------------------------------------------
def recipe_dir(model_path):
    """The recipe folder a model.pt of ser.sh lies in (the parent of its exp/), or None."""
    parts = model_path.resolve().parts
    if "exp" not in parts:
        return None
    return Path(*parts[: len(parts) - 1 - parts[::-1].index("exp")])


def locate(raw, model_path, frontend_path):
    """The frontend file/folder on this machine: --frontend_path, else the recorded path
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
    if (kind == "s3prl" and spec["name"].endswith(REMOTE_SUFFIXES)) or "://" in spec["path"]:
        raise FrontendError(f"{model_path}: the frontend {spec} is a download source, not a file an export can "
                            f"copy; save the checkpoint locally, and give it with --frontend_path")
    source = locate(spec["path"], model_path, frontend_path)
    where = f"{model_path}: frontend {source}"
    if kind == "s3prl":
        if not source.is_file():
            raise FrontendError(f"{where}: s3prl upstream {spec['name']!r} needs a checkpoint file")
        check_weights_only(source, where, "genser-infer would refuse it; re-save its weights as plain tensors")
    elif not list(source.glob("*.safetensors")):
        raise FrontendError(f"{where} has no *.safetensors weights: genser-infer loads a frontend folder named by a "
                            f"model only from safetensors (pickled .bin weights can run code); convert it, e.g. "
                            f"model.save_pretrained(folder, safe_serialization=True)")
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


# ---------------------------------------------------------------------------------------------
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
             f"- exported {info['date']} from `{info['source']}` (training identity {facts['identity']})", "",
             "## Results", ""]
    if row:
        lines += [f"From `{info['results']}` (all folds of the experiment, not only this model's):", "", *row, ""]
    else:
        lines += ["No RESULTS.md row was found for this model (give one with genser-export --results).", ""]
    lines += ["## Use", "", "```sh", "genser-infer --model model.pt recording.wav", "```", ""]
    if heads:
        lines += ["## ONNX head", "",
                  "Features in, posteriors out; the frontend is not in the graph. Inputs: `feats` float32 "
                  "[batch, frames, layers, dim] (the features as stage 1 stores them, frames = 1 when pooled) "
                  "and `lengths` int64 [batch]; output: `scores` float32 [batch, labels], in the label order "
                  "above.", "",
                  "| file | sampler steps | max abs difference to torch |", "|---|---|---|",
                  *(f"| {h['file']} | {h['nsteps'] if h['nsteps'] else '-'} | {h['max_diff']:.1e} |" for h in heads), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
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
    """Loads the export as genser-infer does (untrusted) and classifies a pseudo waveform."""
    from genser.bin.infer import classify, load_classifier

    model, frontend, meta = load_classifier(folder / "model.pt", "cpu")
    wav = 0.1 * torch.randn(frontend.sample_rate, generator=torch.Generator().manual_seed(0))
    _, scores = classify(model, frontend, meta, [wav])
    if not torch.isfinite(scores).all():
        raise SystemExit(f"error: {folder / 'model.pt'}: the export gives non-finite scores")


def parse_nsteps(text):
    try:
        steps = [int(x) for x in str(text).replace(",", " ").split()]
    except ValueError:
        steps = []
    if not steps or min(steps) < 1:
        raise SystemExit(f'error: --nsteps must be positive integers such as "1 3", got {text!r}')
    return steps


def build(params, folder):
    """Fills ``folder`` (a fresh temp folder); returns the info written to export.yaml."""
    model_path = Path(params.model)
    model, extra = load_model(model_path)
    meta = extra.get("feats")
    if not meta or "frontend" not in meta:
        raise FrontendError(f"{model_path} records no frontend (no 'feats' entry): it was not written by "
                            f"genser.bin.train, and an export without its frontend could not be used")
    spec, source = portable_frontend(meta["frontend"], model_path, params.frontend_path)
    if source is not None:
        copy_frontend(source, folder)
    meta = {**meta, "frontend": {**meta["frontend"], **spec}}
    save_model(folder / "model.pt", model, extra={**extra, "feats": meta})
    results = Path(params.results) if params.results else default_results(model_path)
    row = results_row(results, model.kind) if results is not None and results.is_file() else None
    if row is None:
        log.warning("no RESULTS.md row for %s (looked at %s); the card says so", model.kind, results)
    recipe = recipe_dir(model_path)
    info = {"name": Path(params.out_dir).name, "kind": model.kind, "labels": list(model.labels),
            "licence": params.licence, "corpus": params.corpus or (recipe.name if recipe else None),
            "training": training_facts(model_path, extra), "features": meta, "results": str(results) if row else None,
            "source": str(model_path), "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "onnx": export_onnx(model, folder, parse_nsteps(params.nsteps)) if params.onnx else []}
    atomic_write(folder / "README.md", model_card(info, row) + "\n")
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
            raise SystemExit(f"error: {out} exists and is not a genser export (no {MARKER}); choose another --out_dir")
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def main(argv=None):
    params = get_parser().parse_args(argv)
    setup_logging()
    out = Path(params.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.{os.getpid()}")
    tmp.mkdir()
    try:
        try:
            info = build(params, tmp)
            if not params.no_check:
                check_export(tmp)
        except (ModelError, FrontendError, ExportError) as exc:
            raise SystemExit(f"error: cannot export {params.model}: {' '.join(str(exc).split())}") from None
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s (%s, %d labels%s) to %s", params.model, info["kind"], len(info["labels"]),
             f", ONNX: {' '.join(h['file'] for h in info['onnx'])}" if info["onnx"] else "", out)


if __name__ == "__main__":
    main()

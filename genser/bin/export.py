"""Write a trained model as a self-contained folder that can be shipped (genser-export).

    genser-export --model exp/emotion_egemaps_mean_cmvnauto_train/seed0/genser/fold_03/model.pt \
        --out_dir export/emodb_egemaps_genser --licence CC-BY-4.0 [--onnx --nsteps "1 3"]
    genser-infer --model export/emodb_egemaps_genser/model.pt a.wav

The folder holds:

- ``model.pt``: the checkpoint, its frontend spec rewritten to point inside the folder;
- ``frontend/``: the frontend's checkpoint file or transformers folder (safetensors only), when
  the frontend has one (s3prl's hand-crafted upstreams and openSMILE need none);
- ``README.md``: the model card (corpus, protocol, the RESULTS.md row, labels, frontend spec,
  the normalisation the model expects, licence) and ``export.yaml``, the same facts for programs
  plus the sha256 of every file written (loading the folder verifies them);
- with ``--onnx``: ``head.onnx`` (classifier) or ``head_nsteps<N>.onnx`` (Gen-SER, one fixed
  graph per N): stored features in, posteriors out (genser/onnx_head.py). Each graph is checked
  against torch (max |difference| <= 1e-4) before it is kept.

A frontend that cannot travel (a download source, an s3prl upstream that fetches its weights, a
file that genser-infer would refuse to load) stops the export with a message saying what is
missing. The folder is built under a temporary name and renamed into place; the export is then
loaded back as genser-infer loads it (no --trust_frontend) and run on a pseudo waveform. The
library side is genser/export.py.
"""
import argparse
import logging
import os
import shutil
from pathlib import Path

from genser.bin.common import setup_logging
from genser.checkpoint import ModelError
from genser.export import check_export, export_model, replace_folder
from genser.frontend import FrontendError
from genser.onnx_head import ExportError
from genser.scoring import parse_steps

log = logging.getLogger("genser.export")


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


def parse_nsteps(text):
    try:
        return parse_steps(text, minimum=1)  # the ONNX heads sample: at least one step
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def main(argv=None):
    params = get_parser().parse_args(argv)
    setup_logging()
    nsteps = parse_nsteps(params.nsteps) if params.onnx else None
    out = Path(params.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.{os.getpid()}")
    tmp.mkdir()
    try:
        try:
            info = export_model(params.model, tmp, licence=params.licence, name=out.name, corpus=params.corpus,
                                results=params.results, frontend_path=params.frontend_path, onnx_nsteps=nsteps)
            if not params.no_check:
                check_export(tmp)
        except (ModelError, FrontendError, ExportError) as exc:
            raise SystemExit(f"error: cannot export {params.model}: {' '.join(str(exc).split())}") from None
        try:
            replace_folder(tmp, out)
        except ExportError as exc:
            raise SystemExit(f"error: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s (%s, %d labels%s) to %s", params.model, info["kind"], len(info["labels"]),
             f", ONNX: {' '.join(h['file'] for h in info['onnx'])}" if info["onnx"] else "", out)


if __name__ == "__main__":
    main()

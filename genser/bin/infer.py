"""Classify wav files with a trained genser model (genser-infer).

    genser-infer --model exp/emotion_fbank/genser/fold_1/model.pt a.wav b.flac
    genser-infer --model model.pt --wav_scp data/test/wav.scp --nsteps 3 > predictions.tsv

The checkpoint carries the label list and the description of the frontend its features came
from, so the same frontend is rebuilt here: no data dir, no feature dump. Prints one line per
file: id, predicted label and the posterior of every label.
"""
import argparse
import logging
import sys

import torch

from genser.audio import AudioReader
from genser.bin.common import setup_logging
from genser.features import from_matrix, pad_collate, stack_layers, to_matrix
from genser.fileio import read_kv
from genser.frontend import build_frontend
from genser.models import load_model

log = logging.getLogger("genser.infer")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by training (stage 3)")
    p.add_argument("wavs", nargs="*", help="audio files (any rate, mono or stereo)")
    p.add_argument("--wav_scp", help="Kaldi wav.scp of utterances to classify")
    p.add_argument("--nsteps", type=int, default=1, help="Gen-SER sampling steps")
    p.add_argument("--eta", type=float, default=0.0, help="sampler stochasticity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p


def load_classifier(model_path, device):
    """(model, frontend, feats meta) from a checkpoint written by genser.bin.train."""
    model, extra = load_model(model_path, map_location=device)
    meta = extra.get("feats")
    if not meta or "frontend" not in meta:
        raise SystemExit(f"error: {model_path} does not record its frontend (no 'feats' entry); "
                         f"it was not written by genser.bin.train")
    frontend = build_frontend(meta["frontend"], device=device)
    return model.to(device).eval(), frontend, meta


def featurize(frontend, meta, wavs):
    """Waveforms -> [T, L, D] arrays exactly as stage 1 stored them (layers kept, pooling)."""
    outputs, lengths = frontend(wavs)
    return [from_matrix(to_matrix(f, meta["pooling"]), meta)
            for f in stack_layers(outputs, lengths, meta["layers"])]


@torch.no_grad()
def classify(model, frontend, meta, wavs, *, nsteps=1, eta=0.0, generator=None):
    """Posteriors [B, K] and predicted label indices [B] for a list of 1-D 16 kHz waveforms."""
    batch, lengths, _ = pad_collate([(f, 0) for f in featurize(frontend, meta, wavs)])
    device = next(model.parameters()).device
    out = model.predict(batch.to(device), lengths.to(device), nsteps=nsteps, eta=eta, generator=generator)
    return out["pred"].cpu(), out["scores"].cpu()


def main(argv=None):
    params = get_parser().parse_args(argv)
    setup_logging()
    items = {w: w for w in params.wavs}
    if params.wav_scp:
        items.update(read_kv(params.wav_scp))
    if not items:
        raise SystemExit("error: give audio files or --wav_scp")
    model, frontend, meta = load_classifier(params.model, params.device)
    reader = AudioReader(target_sr=frontend.sample_rate)
    generator = torch.Generator(device=params.device).manual_seed(params.seed)
    print("\t".join(["id", "label", *model.labels]))
    for utt, path in items.items():  # one at a time: any length, no padding effects
        pred, scores = classify(model, frontend, meta, [reader(utt, path)], nsteps=params.nsteps,
                                eta=params.eta, generator=generator)
        print("\t".join([utt, model.labels[int(pred[0])], *(f"{s:.4f}" for s in scores[0].tolist())]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()

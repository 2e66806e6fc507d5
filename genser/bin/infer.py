"""Classify wav files with a trained genser model (genser-infer).

    genser-infer --model exp/emotion_fbank/genser/fold_1/model.pt a.wav b.flac
    genser-infer --model model.pt --wav_scp data/test/wav.scp --nsteps 3 > predictions.tsv

The checkpoint carries the label list and the description of the frontend its features came
from, so the same frontend is rebuilt here: no data dir, no feature dump. Prints one line per
file: id, predicted label and the posterior of every label (stdout holds only that table; an
unreadable input is reported on stderr, one line each, the others are still classified, and the
exit status is then 1).

A model.pt can come from anyone, and the frontend file it names would be unpickled, which can run
code. That file is loaded only when it lies in the model's folder (relative paths resolve there)
and passes ``torch.load(weights_only=True)``, transformers folders only from safetensors; else
name the file yourself (``--frontend_path``) or opt in (``--trust_frontend``).
"""
import argparse
import logging
import sys

import torch

from genser.audio import AudioError, AudioReader
from genser.bin.common import setup_logging
from genser.checkpoint import ModelError, load_model
from genser.features import check_finite, from_matrix, pad_collate, stack_layers, to_matrix
from genser.fileio import read_kv
from genser.frontend import FrontendError, build_frontend, frontend_spec, stored_frontend_spec

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
    p.add_argument("--frontend_path", default=None,
                   help="frontend checkpoint (s3prl *_local) or transformers folder to use instead of the one "
                   "model.pt names (loaded as you name it, relative to the CWD)")
    p.add_argument("--trust_frontend", action="store_true",
                   help="load the frontend file model.pt names even if it is a URL, lies outside the model's "
                   "folder or fails torch.load(weights_only=True): it may run code, so only for models you trust")
    return p


def load_classifier(model_path, device, frontend_path=None, trust_frontend=False):
    """(model, frontend, feats meta) from a checkpoint written by genser.bin.train.

    Every failure is a one-line SystemExit naming ``model_path``. The frontend file the
    checkpoint names goes through ``stored_frontend_spec`` unless ``frontend_path`` replaces it.
    """
    try:
        model, extra = load_model(model_path, map_location=device)
    except ModelError as exc:
        raise SystemExit(f"error: {_one_line(exc)}") from None
    meta = extra.get("feats")
    if not meta or "frontend" not in meta:
        raise SystemExit(f"error: {model_path} does not record its frontend (no 'feats' entry); "
                         f"it was not written by genser.bin.train")
    # NaN/inf weights (a diverged run) give NaN posteriors for every input: refuse the model once
    # instead of printing a table of nan.
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise SystemExit(f"error: {model_path}: non-finite (NaN or inf) weights in {len(bad)} tensor(s), e.g. "
                         f"{bad[0]}; the training run diverged, use another checkpoint")
    try:
        if frontend_path is not None:  # named by the user: loaded as given
            spec = frontend_spec({**meta["frontend"], "path": frontend_path})
        else:
            spec = stored_frontend_spec(meta["frontend"], model_path, trust=trust_frontend)
        # Transformers folders from the checkpoint's spec: safetensors only, even when trusted.
        frontend = build_frontend(spec, device=device, safetensors_only=frontend_path is None)
    except FrontendError as exc:
        raise SystemExit(f"error: {model_path}: cannot rebuild its frontend: {_one_line(exc)}") from None
    return model.to(device).eval(), frontend, meta


def _one_line(exc):
    """An exception message on one line (stderr stays one line per problem)."""
    return " ".join(str(exc).split()) or type(exc).__name__


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
    model, frontend, meta = load_classifier(params.model, params.device, params.frontend_path,
                                            params.trust_frontend)
    reader = AudioReader(target_sr=frontend.sample_rate)
    generator = torch.Generator(device=params.device).manual_seed(params.seed)
    print("\t".join(["id", "label", *model.labels]))
    failed = []
    for utt, path in items.items():  # one at a time: any length, no padding effects
        try:
            wav = reader(utt, path)
            pred, scores = classify(model, frontend, meta, [wav], nsteps=params.nsteps, eta=params.eta,
                                    generator=generator)
            check_finite(utt, scores.numpy(), f"the scores of {params.model} for {path}")
        except (AudioError, ValueError, RuntimeError) as exc:
            # One line per bad input on stderr; stdout keeps only the table of the good ones.
            msg = _one_line(exc)
            log.error("%s", msg if utt in msg else f"utt {utt} ({path}): {msg}")
            failed.append(utt)
            continue
        print("\t".join([utt, model.labels[int(pred[0])], *(f"{s:.4f}" for s in scores[0].tolist())]))
        sys.stdout.flush()
    if failed:
        raise SystemExit(f"error: {len(failed)} of {len(items)} input(s) could not be classified: "
                         f"{' '.join(failed[:10])}{' ...' if len(failed) > 10 else ''}")


if __name__ == "__main__":
    main()

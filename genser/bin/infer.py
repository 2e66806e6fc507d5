"""Classify audio files with a trained genser model (genser-infer), short clips or long recordings.

    genser-infer --model exp/emotion_fbank/genser/fold_1/model.pt a.wav b.flac
    genser-infer --model model.pt --wav_scp data/test/wav.scp --nsteps 3 > predictions.tsv
    genser-infer --model model.pt --segment vad --out_dir timelines meeting.wav
    genser-infer --model model.pt --segment window --window 3 --hop 1.5 --out_dir timelines recordings/

Inputs: files, directories (every audio file under them, recursively) and ``--wav_scp``.

``--segment none`` (the default) classifies each file whole and prints one line per file: id,
label and the posterior of every label. ``--segment vad`` splits each recording at the speech
regions found by the Silero voice-activity detector (offline, from the model file of the
silero-vad package), ``--segment window`` into fixed windows; each segment is classified on its
own and stdout holds one line per segment (id, start, end, label, posteriors). With
``--out_dir`` each recording also gets <name>.tsv, <name>.json (its timeline) and <name>.png
(the emotion track over the waveform). A long recording is streamed in blocks and each segment
is read on its own, so memory does not grow with the recording's length (docs/METHOD.md §7).
A recording without speech is reported ("no speech found") and gets an empty timeline.

``--min_confidence P`` prints the label ``unknown`` where the largest posterior is below P.

A model trained on speaker-normalised features (``--feat_norm speaker``, genser/cmvn.py) gets
the same normalisation: the segments of a recording are taken as one speaker and normalised with
their own moments, shrunk towards the training dump's; a file classified whole is a speaker of
one utterance, which leans on the training dump's moments, unless ``--cmvn_unit all`` says that
every input is the same speaker (docs/TRAINING.md).

stdout holds only the table; an unreadable input is reported on stderr, one line each, the
others are still classified, and the exit status is then 1.

A model.pt can come from anyone, and the frontend file it names would be unpickled, which can run
code. That file is loaded only when it lies in the model's folder (relative paths resolve there)
and passes ``torch.load(weights_only=True)``, transformers folders only from safetensors; else
name the file yourself (``--frontend_path``) or opt in (``--trust_frontend``).
"""
import argparse
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from genser.audio import AudioError, AudioReader
from genser.bin.common import load_config, setup_logging, str_or_none
from genser.checkpoint import ModelError, load_model
from genser.cmvn import normalize_unit
from genser.features import check_finite, from_matrix, pad_collate, stack_layers, to_matrix
from genser.fileio import atomic_open, read_kv
from genser.frontend import FrontendError, build_frontend, frontend_spec, stored_frontend_spec
from genser.vad import SILERO_FRAME, SILERO_RATE, SileroVAD, VADError, fixed_windows, speech_regions

log = logging.getLogger("genser.infer")

UNKNOWN = "unknown"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")
SEGMENT_MODES = ("none", "vad", "window")
LONG_WHOLE_S = 60.0  # --segment none warns above this length (seconds)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by training (stage 3)")
    p.add_argument("wavs", nargs="*", help="audio files (any rate, mono or stereo) or directories of them")
    p.add_argument("--wav_scp", help="Kaldi wav.scp of utterances to classify")
    p.add_argument("--nsteps", type=int, default=1, help="Gen-SER sampling steps")
    p.add_argument("--eta", type=float, default=0.0, help="sampler stochasticity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--min_confidence", type=float, default=0.0,
                   help=f"print '{UNKNOWN}' where the largest posterior is below this (0: never)")
    p.add_argument("--cmvn_unit", default="file", choices=("file", "all"),
                   help="for a model trained on per-speaker CMVN: file: each file (with its segments) is one "
                   "speaker; all: every input of the run is one speaker (files classified whole)")
    g = p.add_argument_group("long recordings")
    g.add_argument("--segment", default="none", choices=SEGMENT_MODES,
                   help="none: classify each file whole; vad: one segment per speech region; window: fixed windows")
    g.add_argument("--out_dir", help="write <name>.tsv, <name>.json and <name>.png per recording here")
    g.add_argument("--window", type=float, default=3.0, help="--segment window: window length (s)")
    g.add_argument("--hop", type=float, default=1.5, help="--segment window: hop between window starts (s)")
    g.add_argument("--vad_threshold", type=float, default=0.5, help="speech probability that starts speech")
    g.add_argument("--min_speech", type=float, default=0.25, help="shortest speech region kept (s)")
    g.add_argument("--min_silence", type=float, default=0.5, help="shorter pauses do not split a segment (s)")
    g.add_argument("--speech_pad", type=float, default=0.1, help="padding added to each side of a region (s)")
    g.add_argument("--max_segment", type=float, default=20.0,
                   help="longer speech regions are cut into equal parts (s); bounds what the frontend sees")
    g.add_argument("--block_seconds", type=float, default=30.0, help="streaming block length (s)")
    g.add_argument("--vad_model", type=str_or_none, default=None,
                   help="Silero VAD TorchScript file (default: the one the silero-vad package ships)")
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
    if extra.get("norm"):  # the model's own normalisation (genser-train --feat_norm), as a dump's cmvn entry
        meta = {**meta, "cmvn": extra["norm"]}
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


def as_stored(meta, feats, where):
    """The features as the model's training dump held them: normalised per speaker when that dump
    was (its ``cmvn`` entry, genser/cmvn.py), with ``feats`` taken as the utterances of one speaker."""
    if not meta.get("cmvn"):
        return feats
    out, alone = normalize_unit(feats, meta["cmvn"])
    if alone:
        log.warning("%s: one utterance, for a model trained on per-speaker CMVN without shrinkage "
                    "(relevance 0): normalised with the training dump's moments alone", where)
    return out


@torch.no_grad()
def predict(model, feats, *, nsteps=1, eta=0.0, generator=None):
    """(predicted label indices [B], posteriors [B, K]) for stored-form features, [T, L, D] each."""
    batch, lengths, _ = pad_collate([(f, 0) for f in feats])
    device = next(model.parameters()).device
    out = model.predict(batch.to(device), lengths.to(device), nsteps=nsteps, eta=eta, generator=generator)
    return out["pred"].cpu(), out["scores"].cpu()


def classify(model, frontend, meta, wavs, *, nsteps=1, eta=0.0, generator=None, where="the input"):
    """Posteriors [B, K] and predicted label indices [B] for a list of 1-D 16 kHz waveforms
    (for a model trained on per-speaker CMVN, the waveforms are taken as one speaker)."""
    feats = as_stored(meta, featurize(frontend, meta, wavs), where)
    return predict(model, feats, nsteps=nsteps, eta=eta, generator=generator)


def report_failure(utt, path, exc, failed):
    """One line per bad input on stderr (stdout keeps only the table of the good ones)."""
    msg = _one_line(exc)
    log.error("%s", msg if utt in msg else f"utt {utt} ({path}): {msg}")
    failed.append(utt)


def features_of_run(frontend, meta, reader, items, failed):
    """{utt: stored-form features} of every input, normalised together as one speaker
    (--cmvn_unit all); an input that cannot be read is logged and added to ``failed``."""
    raw = {}
    for utt, path, _ in tqdm(items, desc="features", unit="file", disable=len(items) < 2 or None, file=sys.stderr):
        try:
            raw[utt] = featurize(frontend, meta, [reader(utt, path)])[0]
        except (AudioError, ValueError, RuntimeError) as exc:
            report_failure(utt, path, exc, failed)
    return dict(zip(raw, as_stored(meta, list(raw.values()), f"the {len(raw)} inputs")))


def decide(labels, scores, min_confidence):
    """The label of the largest posterior, or UNKNOWN when that posterior is below ``min_confidence``."""
    best = int(np.argmax(scores))
    return labels[best] if scores[best] >= min_confidence else UNKNOWN


# ---- inputs --------------------------------------------------------------------------------
def collect_inputs(wavs, wav_scp):
    """[(id, path, name)]: files as given (id = the path), every audio file under a directory
    (id = its path relative to the directory, without the suffix) and wav.scp entries; ``name``
    is a file-name-safe form of the id for --out_dir, unique within the run."""
    items = []
    for arg in wavs:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise SystemExit(f"error: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {path}")
            items += [(str(p.relative_to(path).with_suffix("")), str(p), None) for p in found]
        else:
            items.append((arg, arg, Path(arg).stem))
    if wav_scp:
        items += [(utt, path, None) for utt, path in read_kv(wav_scp).items()]
    seen, ids, out = {}, set(), []
    for utt, path, name in items:
        if utt in ids:
            raise SystemExit(f"error: input {utt!r} is given twice")
        ids.add(utt)
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name or utt).strip("._") or "rec"
        seen[base] = seen.get(base, 0) + 1
        out.append((utt, path, base if seen[base] == 1 else f"{base}_{seen[base]}"))
    return out


# ---- long recordings -----------------------------------------------------------------------
def scan(reader, utt, path, block_seconds, vad=None):
    """One streaming pass over a recording: (duration s, peak |sample| per 32 ms frame, speech
    probability per frame or None). Nothing longer than a block is held in memory."""
    peaks, probs, samples = [], [], 0
    rest = torch.zeros(0)
    if vad is not None:
        vad.reset()
    for block in reader.stream(utt, path, block_seconds):
        samples += block.numel()
        if vad is not None:
            probs.append(vad(block))
        block = torch.cat([rest, block])
        n = block.numel() // SILERO_FRAME
        peaks.append(block[:n * SILERO_FRAME].reshape(n, SILERO_FRAME).abs().amax(dim=1).numpy())
        rest = block[n * SILERO_FRAME:]
    if rest.numel():
        peaks.append(rest.abs().amax(dim=0, keepdim=True).numpy())
    if vad is not None:
        probs.append(vad.flush())
    envelope = np.concatenate(peaks) if peaks else np.zeros(0, dtype=np.float32)
    return samples / reader.target_sr, envelope, (np.concatenate(probs) if vad is not None else None)


def segment_recording(params, reader, vad, utt, path):
    """(duration, envelope, [(start, end)]) of one recording under --segment vad or window."""
    duration, envelope, probs = scan(reader, utt, path, params.block_seconds,
                                     vad if params.segment == "vad" else None)
    if params.segment == "window":
        return duration, envelope, fixed_windows(duration, params.window, params.hop)
    spans = speech_regions(probs, SILERO_FRAME / SILERO_RATE, duration, threshold=params.vad_threshold,
                           min_speech=params.min_speech, min_silence=params.min_silence,
                           pad=params.speech_pad, max_segment=params.max_segment)
    return duration, envelope, spans


def classify_segments(params, model, frontend, meta, reader, generator, utt, path, spans):
    """Timeline rows {start, end, label, scores{label: p}}: each segment read from the file on its own."""
    def features(start, end):
        return featurize(frontend, meta, [reader(utt, path, start=start, end=end)])

    if meta.get("cmvn"):  # the segments of a recording are one speaker: all their features first
        stored = as_stored(meta, [features(*span)[0] for span in spans], f"utt {utt} ({path})")
        feats = ([f] for f in stored)
    else:  # one segment at a time: memory does not grow with the recording
        feats = (features(*span) for span in spans)
    rows = []
    for (start, end), f in zip(spans, feats):
        _, scores = predict(model, f, nsteps=params.nsteps, eta=params.eta, generator=generator)
        scores = scores[0].numpy()
        check_finite(utt, scores, f"the scores of {params.model} for {path} [{start:.3f}, {end:.3f}]")
        rows.append({"start": round(float(start), 3), "end": round(float(end), 3),
                     "label": decide(model.labels, scores, params.min_confidence),
                     "scores": {label: round(float(s), 4) for label, s in zip(model.labels, scores)}})
    return rows


def write_timeline(out_dir, name, utt, path, duration, rows, labels, envelope):
    """<out_dir>/<name>.tsv, .json and .png, each written atomically."""
    from genser.plots import plot_timeline  # matplotlib only when plotting

    out_dir = Path(out_dir)
    with atomic_open(out_dir / f"{name}.tsv") as f:
        f.write("\t".join(["start", "end", "label", *labels]) + "\n")
        for r in rows:
            f.write("\t".join([f"{r['start']:.3f}", f"{r['end']:.3f}", r["label"],
                               *(f"{r['scores'][k]:.4f}" for k in labels)]) + "\n")
    with atomic_open(out_dir / f"{name}.json") as f:
        json.dump({"id": utt, "path": str(path), "duration": round(duration, 3), "labels": labels,
                   "segments": rows}, f, indent=1)
        f.write("\n")
    plot_timeline(envelope, SILERO_FRAME / SILERO_RATE, rows, labels, out_dir / f"{name}.png",
                  title=f"{utt} ({duration:.1f} s, {len(rows)} segments)")


def main(argv=None):
    params = load_config(get_parser(), argv)
    setup_logging()
    if not 0.0 <= params.min_confidence <= 1.0:
        raise SystemExit(f"error: --min_confidence must lie in [0, 1], got {params.min_confidence}")
    for name in ("window", "hop", "max_segment", "block_seconds"):
        if not getattr(params, name) > 0:
            raise SystemExit(f"error: --{name} must be positive, got {getattr(params, name)}")
    if not 0.0 < params.vad_threshold < 1.0:
        raise SystemExit(f"error: --vad_threshold must lie in (0, 1), got {params.vad_threshold}")
    items = collect_inputs(params.wavs, params.wav_scp)
    if not items:
        raise SystemExit("error: give audio files, directories or --wav_scp")
    model, frontend, meta = load_classifier(params.model, params.device, params.frontend_path,
                                            params.trust_frontend)
    reader = AudioReader(target_sr=frontend.sample_rate)
    vad = None
    if params.segment == "vad":
        try:
            vad = SileroVAD(params.vad_model)
        except VADError as exc:
            raise SystemExit(f"error: {_one_line(exc)}") from None
    generator = torch.Generator(device=params.device).manual_seed(params.seed)
    long_mode = params.segment != "none"
    failed, run_feats = [], {}
    if params.cmvn_unit == "all" and meta.get("cmvn"):
        if long_mode:
            raise SystemExit("error: --cmvn_unit all takes files classified whole (--segment none); a "
                             "segmented recording is one speaker already")
        run_feats = features_of_run(frontend, meta, reader, items, failed)
    print("\t".join(["id", *(["start", "end"] if long_mode else []), "label", *model.labels]))
    bar = tqdm(items, desc="recordings", unit="file", disable=len(items) < 2 or None, file=sys.stderr)
    for utt, path, name in bar:  # one at a time: any length, no padding effects
        if utt in failed:
            continue
        try:
            if long_mode:
                duration, envelope, spans = segment_recording(params, reader, vad, utt, path)
                if not spans:
                    log.warning("utt %s (%s): no speech found (%.1f s); empty timeline", utt, path, duration)
                rows = classify_segments(params, model, frontend, meta, reader, generator, utt, path, spans)
                if params.out_dir:
                    write_timeline(params.out_dir, name, utt, path, duration, rows, model.labels, envelope)
            elif utt in run_feats:
                _, scores = predict(model, [run_feats[utt]], nsteps=params.nsteps, eta=params.eta,
                                    generator=generator)
            else:
                wav = reader(utt, path)
                if wav.numel() > LONG_WHOLE_S * reader.target_sr:
                    log.warning("utt %s (%s): %.0f s classified whole, as one utterance; --segment vad or "
                                "window classifies a long recording in segments", utt, path,
                                wav.numel() / reader.target_sr)
                _, scores = classify(model, frontend, meta, [wav], nsteps=params.nsteps, eta=params.eta,
                                     generator=generator, where=f"utt {utt} ({path})")
            if not long_mode:
                scores = scores[0].numpy()
                check_finite(utt, scores, f"the scores of {params.model} for {path}")
                rows = [{"label": decide(model.labels, scores, params.min_confidence),
                         "scores": dict(zip(model.labels, scores.tolist()))}]
        except (AudioError, ValueError, RuntimeError) as exc:
            report_failure(utt, path, exc, failed)
            continue
        for r in rows:
            times = [f"{r['start']:.3f}", f"{r['end']:.3f}"] if long_mode else []
            print("\t".join([utt, *times, r["label"], *(f"{r['scores'][k]:.4f}" for k in model.labels)]))
        sys.stdout.flush()
    if failed:
        raise SystemExit(f"error: {len(failed)} of {len(items)} input(s) could not be classified: "
                         f"{' '.join(failed[:10])}{' ...' if len(failed) > 10 else ''}")


if __name__ == "__main__":
    main()

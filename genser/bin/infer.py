"""Classify audio files with a trained genser model (genser-infer), short clips or long recordings.

    genser-infer --model exp/emotion_fbank/genser/fold_1/model.pt a.wav b.flac
    genser-infer --model model.pt --wav_scp data/test/wav.scp --nsteps 3 > predictions.tsv
    genser-infer --model model.pt --segment vad --out_dir timelines meeting.wav
    genser-infer --model export/emodb_whisper --utt2spk spk.txt recordings/

Inputs: files, directories (recursively) and ``--wav_scp``; ``--model`` is a model.pt or an
exported folder (its checksums are verified). One line per file (id, label, posteriors), or with
``--segment vad|window`` per segment (id, start, end, ...), and with ``--out_dir`` <name>.tsv,
.json (the timeline: model, nsteps, eta, version) and .png. A per-speaker CMVN model normalises
each file alone (the clip protocol) unless ``--same_speaker`` or ``--utt2spk FILE`` (lines
``<path, file name or id> <speaker>``) groups them; a recording's segments are one speaker.
A frontend that cannot run code loads from anywhere (genser/trust.py); pickles, URLs and custom
code need ``--trust_frontend``. An unreadable input is one line on stderr (exit status 1).
"""
import argparse
import logging
import sys

from tqdm import tqdm

from genser.bin.common import load_config, setup_logging, str_or_none
from genser.inference import (UNKNOWN, Classifier, InferenceError, check_segment_options, collect_inputs,
                              one_line, read_utt2spk)
from genser.scoring import parse_steps

log = logging.getLogger("genser.infer")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by training (stage 3), or an exported folder")
    p.add_argument("wavs", nargs="*", help="audio files (any rate, mono or stereo) or directories of them")
    p.add_argument("--wav_scp", help="Kaldi wav.scp of utterances to classify")
    p.add_argument("--nsteps", type=int, default=1, help="Gen-SER sampling steps (>= 1)")
    p.add_argument("--eta", type=float, default=0.0, help="sampler stochasticity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--min_confidence", type=float, default=0.0,
                   help=f"print '{UNKNOWN}' where the (calibrated) largest posterior is below this (0: never)")
    p.add_argument("--same_speaker", action="store_true",
                   help="per-speaker CMVN models: every input is one speaker (files classified whole)")
    p.add_argument("--utt2spk", default=None, help="per-speaker CMVN models: lines '<path, file name or id> "
                   "<speaker>' grouping the inputs by speaker (files classified whole)")
    p.add_argument("--cmvn_unit", default="file", choices=("file", "all"), help="old spelling: all = --same_speaker")
    p.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    g = p.add_argument_group("long recordings")
    g.add_argument("--segment", default="none", choices=("none", "vad", "window"),
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
                   help="load the frontend model.pt names even if it is a URL, a pickle or custom code: it may "
                   "run code, so only for models you trust")
    return p


def print_row(utt, pred, labels):
    times = [f"{pred.start:.3f}", f"{pred.end:.3f}"] if pred.start is not None else []
    print("\t".join([utt, *times, pred.label, *(f"{pred.posteriors[k]:.4f}" for k in labels)]), flush=True)


def run(params):
    segmented = params.segment != "none"
    same = params.same_speaker or params.cmvn_unit == "all"
    if same or params.utt2spk:
        flag = "--utt2spk" if params.utt2spk else "--cmvn_unit all" if params.cmvn_unit == "all" else "--same_speaker"
        if segmented:
            raise InferenceError(f"{flag} takes files classified whole (--segment none); a segmented recording is "
                                 f"one speaker already")
        if same and params.utt2spk:
            raise InferenceError(f"give --utt2spk or {flag}, not both")
    lengths = {k: getattr(params, k) for k in ("window", "hop", "max_segment", "block_seconds")}
    if segmented:
        check_segment_options(segment=params.segment, vad_threshold=params.vad_threshold, **lengths)
    segment_options = {**lengths, **{k: getattr(params, k) for k in (
        "vad_threshold", "min_speech", "min_silence", "speech_pad", "vad_model")}}
    if not 0.0 <= params.min_confidence <= 1.0:
        raise InferenceError(f"--min_confidence must lie in [0, 1], got {params.min_confidence}")
    items = collect_inputs(params.wavs, params.wav_scp)
    if not items:
        raise InferenceError("give audio files, directories or --wav_scp")
    utt2spk = read_utt2spk(params.utt2spk) if params.utt2spk else None
    clf = Classifier.from_pretrained(params.model, device=params.device, frontend_path=params.frontend_path,
                                     trust_frontend=params.trust_frontend, nsteps=params.nsteps, eta=params.eta,
                                     seed=params.seed, min_confidence=params.min_confidence)
    if (same or utt2spk) and not clf.norm:
        log.info("%s was trained without speaker normalisation: the speaker grouping changes nothing", params.model)
    failed = []

    def on_error(utt, path, exc):
        msg = one_line(exc)
        log.error("%s", msg if utt in msg else f"utt {utt} ({path}): {msg}")
        failed.append(utt)

    print("\t".join(["id", *(["start", "end"] if segmented else []), "label", *clf.labels]), flush=True)
    if (same or utt2spk) and clf.norm:  # a speaker's files are normalised together: all of them first
        preds = clf.classify_files([p for _, p, _ in items], ids=[u for u, _, _ in items], utt2spk=utt2spk,
                                   speaker="all" if same else None, on_error=on_error, progress=not params.quiet)
        for (utt, _, _), pred in zip(items, preds):
            if pred is not None:
                print_row(utt, pred, clf.labels)
    else:
        bar = tqdm(items, desc="recordings" if segmented else "files", unit="file", file=sys.stderr,
                   disable=params.quiet)
        for utt, path, name in bar:  # one at a time: any length, no padding effects
            try:
                if segmented:
                    timeline = clf.timeline(path, params.segment, utt=utt, progress=not params.quiet, **segment_options)
                    preds = timeline.segments
                    if params.out_dir:
                        timeline.write(params.out_dir, name, utt)
                else:
                    preds = clf.classify_files([path], ids=[utt])
            except InferenceError as exc:
                on_error(utt, path, exc)
                continue
            for pred in preds:
                print_row(utt, pred, clf.labels)
    if failed:
        raise InferenceError(f"{len(failed)} of {len(items)} input(s) could not be classified: "
                             f"{' '.join(failed[:10])}{' ...' if len(failed) > 10 else ''}")


def main(argv=None):
    params = load_config(get_parser(), argv)
    setup_logging()
    try:
        parse_steps(params.nsteps, minimum=1)  # the one check of --nsteps (decode and export use it too)
        run(params)
    except (InferenceError, ValueError) as exc:
        raise SystemExit(f"error: {one_line(exc)}") from None


if __name__ == "__main__":
    main()

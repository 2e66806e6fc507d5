#!/usr/bin/env python3
"""Memory and speed of genser-infer on long recordings (docs/METHOD.md §7).

    python bench/long_audio.py --minutes "1 4 16" --out bench/results/long_audio.md

Writes 22050 Hz recordings of the given lengths (a speech-like amplitude-modulated tone), and
classifies each in a fresh process as genser-infer does (genser.inference.Classifier) with an fbank model (untrained weights: the cost
does not depend on them): ``--segment window`` (3 s windows, streamed) against ``--segment
none`` (the whole file through the frontend at once), reporting the peak resident memory of the
process and the wall time; and the VAD pass alone on the shortest recording, as a real-time
factor. Each setting runs ``--repeats`` times, interleaved; medians are quoted.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def write_recording(path, minutes, sr=22050):
    """Syllable-rate modulated tones, written block by block (the bench itself stays small)."""
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for start in range(0, int(minutes * 60), 10):
            t = start + np.arange(10 * sr) / sr
            x = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
            f.write(x.astype(np.float32))


def child(args):
    """Classifies one recording in this process (genser.inference, the code behind genser-infer)
    and prints its peak RSS (MiB) and wall time (s) as JSON. ``args``: model, file, then the
    segmentation as JSON ({} = the file whole, else Classifier.timeline's keyword arguments)."""
    from genser.inference import Classifier

    model, path, options = args[0], args[1], json.loads(args[2])
    start = time.perf_counter()
    clf = Classifier.from_pretrained(model)
    if options:
        clf.timeline(path, **options)
    else:
        clf.classify_file(path)
    wall = time.perf_counter() - start
    print(json.dumps({"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall_s": wall}),
          file=sys.stderr)


def run(model, path, options):
    proc = subprocess.run([sys.executable, __file__, "--child", str(model), str(path), json.dumps(options)],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise SystemExit(f"classifying {path} ({options or 'whole'}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stderr.strip().splitlines()[-1])


def make_model(path):
    import torch

    from genser.checkpoint import save_model
    from genser.models import build_model

    torch.manual_seed(0)
    model = build_model({"model": "classifier"}, ["neutral", "happy", "angry", "sad"], input_dim=240,
                        num_layers=2)
    meta = {"frontend": {"type": "s3prl", "name": "fbank_no_cmvn"}, "layers": [0], "num_layers": 1, "dim": 240,
            "pooling": "meanstd", "dtype": "float32"}
    save_model(path, model, extra={"feats": meta})


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", default="1 4 16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    params = p.parse_args()
    minutes = [float(m) for m in params.minutes.split()]
    work = Path(tempfile.mkdtemp(prefix="genser-long-"))
    model = work / "model.pt"
    make_model(model)
    wavs = {m: work / f"rec{m:g}min.wav" for m in minutes}
    for m, path in wavs.items():
        write_recording(path, m)
    modes = {"window (streamed)": {"segment": "window", "window": 3, "hop": 3}, "none (whole file)": {}}
    results = {}
    for _ in range(params.repeats):
        for m, path in wavs.items():
            for name, options in modes.items():
                results.setdefault((name, m), []).append(run(model, path, options))
    vad_runs = [run(model, wavs[minutes[0]], {"segment": "vad", "min_speech": 1e9}) for _ in range(params.repeats)]
    lines = ["# genser-infer on long recordings", "",
             f"- command: `python bench/long_audio.py --minutes \"{params.minutes}\" --repeats {params.repeats}`",
             "- fbank_no_cmvn (mean+std) classifier, 22050 Hz mono input, OMP_NUM_THREADS=1; medians of "
             f"{params.repeats} runs, each in a fresh process (peak RSS includes the Python, torch and s3prl "
             "imports)", "",
             "| mode | minutes | peak RSS (MiB) | wall (s) | real-time factor |", "| --- | ---: | ---: | ---: | ---: |"]
    for (name, m), runs in results.items():
        rss = statistics.median(r["rss_mib"] for r in runs)
        wall = statistics.median(r["wall_s"] for r in runs)
        lines.append(f"| {name} | {m:g} | {rss:.0f} | {wall:.1f} | {wall / (60 * m):.4f} |")
    vad_wall = statistics.median(r["wall_s"] for r in vad_runs)
    lines += ["", f"VAD pass (Silero, TorchScript, 1 thread; `min_speech=1e9` so that no segment is classified) "
              f"on {minutes[0]:g} min: {vad_wall:.1f} s, real-time factor {vad_wall / (60 * minutes[0]):.3f}, peak RSS "
              f"{statistics.median(r['rss_mib'] for r in vad_runs):.0f} MiB.", ""]
    text = "\n".join(lines)
    print(text)
    if params.out:
        Path(params.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

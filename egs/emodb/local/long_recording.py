#!/usr/bin/env python3
"""A long recording from EmoDB clips, and the score of a genser-infer timeline against it.

    . ./path.sh
    local/long_recording.py join --speaker 03 --out long03.wav --ref long03.ref.tsv
    genser-infer --model <fold_03 model.pt> --segment vad --out_dir timelines long03.wav
    local/long_recording.py score --ref long03.ref.tsv --timeline timelines/long03.json

join: every clip of one speaker (sorted by name), separated by --gap seconds of room noise
(-60 dBFS), into one wav; the reference lists each clip's start, end and emotion.
score: each reference clip is matched to the segment that overlaps it most; prints the number
of segments, the boundary errors (median and max |start - clip start|, |end - clip end|) and
the share of clips whose segment has the clip's emotion.
"""
import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import soundfile as sf

from genser.corpora.emodb import EMOTIONS


def join(args):
    clips = sorted(Path(args.corpus_dir, "wav").glob(f"{args.speaker}*.wav"))
    if not clips:
        raise SystemExit(f"error: no clips of speaker {args.speaker} under {args.corpus_dir}/wav")
    rng = np.random.default_rng(0)
    sr = sf.info(str(clips[0])).samplerate
    room = lambda: (1e-3 * rng.standard_normal(int(args.gap * sr))).astype(np.float32)  # noqa: E731
    refs, t = [], args.gap
    with sf.SoundFile(args.out, "w", samplerate=sr, channels=1, subtype="PCM_16") as out:
        out.write(room())
        for clip in clips:
            x, clip_sr = sf.read(str(clip), dtype="float32")
            if clip_sr != sr:
                raise SystemExit(f"error: {clip} is at {clip_sr} Hz, the others at {sr} Hz")
            out.write(x)
            out.write(room())
            refs.append(f"{t:.3f}\t{t + len(x) / sr:.3f}\t{EMOTIONS[clip.stem[5]]}\t{clip.stem}")
            t += len(x) / sr + args.gap
    Path(args.ref).write_text("start\tend\tlabel\tclip\n" + "\n".join(refs) + "\n")
    print(f"{args.out}: {len(clips)} clips, {t:.1f} s")


def score(args):
    refs = [line.split("\t") for line in Path(args.ref).read_text().splitlines()[1:]]
    segments = json.loads(Path(args.timeline).read_text())["segments"]
    starts, ends, right = [], [], 0
    for start, end, label, _ in refs:
        start, end = float(start), float(end)
        overlap = [max(0.0, min(end, s["end"]) - max(start, s["start"])) for s in segments]
        if not overlap or max(overlap) == 0:
            starts.append(float("inf"))
            ends.append(float("inf"))
            continue
        seg = segments[int(np.argmax(overlap))]
        starts.append(abs(seg["start"] - start))
        ends.append(abs(seg["end"] - end))
        right += seg["label"] == label
    print(f"{len(refs)} clips, {len(segments)} segments; |start error| median {statistics.median(starts):.3f} s, "
          f"max {max(starts):.3f} s; |end error| median {statistics.median(ends):.3f} s, max {max(ends):.3f} s; "
          f"within 0.3 s: {sum(a <= 0.3 and b <= 0.3 for a, b in zip(starts, ends))}/{len(refs)}; "
          f"label = clip's emotion: {right}/{len(refs)} ({100 * right / len(refs):.1f} %)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    j = sub.add_parser("join")
    j.add_argument("--corpus_dir", default="../../../shared/corpora/emodb")
    j.add_argument("--speaker", required=True)
    j.add_argument("--gap", type=float, default=1.5)
    j.add_argument("--out", required=True)
    j.add_argument("--ref", required=True)
    s = sub.add_parser("score")
    s.add_argument("--ref", required=True)
    s.add_argument("--timeline", required=True)
    args = p.parse_args()
    join(args) if args.command == "join" else score(args)


if __name__ == "__main__":
    main()

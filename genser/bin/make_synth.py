"""Generates the embedded synthetic emotional speech corpus: wavs plus a Kaldi data dir.

Example: python -m genser.bin.make_synth --out_dir downloads/synth --data_dir data/all
The same --seed gives the same corpus, byte for byte. A .done stamp of the options in OUT_DIR and
in the data dir makes a re-run with the same options a no-op.
"""
import argparse
import logging
import sys
from pathlib import Path

from genser.bin.common import load_config, setup_logging, str_or_none
from genser.fileio import atomic_write
from genser.synth import EMOTIONS, generate_corpus


def get_parser():
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", required=True, help="where wav/ (and data/ by default) go")
    parser.add_argument("--data_dir", type=str_or_none, default=None,
                        help="data dir to write (default: OUT_DIR/data)")
    parser.add_argument("--num_speakers", type=int, default=8, help="speakers, alternately f/m")
    parser.add_argument("--utts_per_class", type=int, default=10,
                        help="utterances per speaker and emotion")
    parser.add_argument("--num_folds", type=int, default=4,
                        help="speaker-disjoint folds, genders balanced")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--sr", type=int, default=16000, help="sample rate (Hz)")
    parser.add_argument("--min_dur", type=float, default=1.5, help="shortest utterance (s)")
    parser.add_argument("--max_dur", type=float, default=3.0, help="longest utterance (s)")
    parser.add_argument("--emotions", nargs="+", default=list(EMOTIONS), choices=list(EMOTIONS),
                        help="emotions to generate (class order of labels.emo)")
    return parser


def main(argv=None):
    """Entry point."""
    args = load_config(get_parser(), argv)
    setup_logging()
    data_dir = Path(args.data_dir or Path(args.out_dir) / "data")
    options = {k: v for k, v in sorted(vars(args).items()) if k not in ("out_dir", "data_dir", "config")}
    stamp = " ".join(f"{k}={v}" for k, v in options.items()) + "\n"
    stamps = [Path(args.out_dir) / ".done", data_dir / ".done"]
    if all(p.is_file() and p.read_text() == stamp for p in stamps):
        logging.info("%s is up to date (%s); skipping generation", data_dir, args.out_dir)
        return 0
    try:
        data_dir = generate_corpus(args.out_dir, data_dir=args.data_dir,
                                   num_speakers=args.num_speakers,
                                   utts_per_class=args.utts_per_class, seed=args.seed, sr=args.sr,
                                   num_folds=args.num_folds, min_dur=args.min_dur,
                                   max_dur=args.max_dur, emotions=tuple(args.emotions))
    except ValueError as exc:
        logging.error("%s", exc)
        return 1
    for path in stamps:
        atomic_write(path, stamp)
    logging.info("wrote %s", data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks a Kaldi-style data dir and lists every problem (exit status 1 if any).

Example: python -m genser.bin.validate_data_dir data/all --check_audio true
"""
import argparse
import logging
import sys

from genser.bin.common import load_config, setup_logging, str2bool
from genser.datadir import DataDirError, load_data_dir
from genser.validate import validate_data_dir


def get_parser():
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="data dir (wav.scp, utt2spk, spk2utt, utt2emo, ...)")
    parser.add_argument("--check_audio", type=str2bool, default=True,
                        help="also check that every audio file exists and is readable")
    return parser


def main(argv=None):
    """Entry point; returns 0 for a valid dir, 1 otherwise."""
    args = load_config(get_parser(), argv)
    setup_logging()
    try:
        validate_data_dir(args.data_dir, check_audio=args.check_audio)
    except DataDirError as exc:
        logging.error("%s", exc)
        return 1
    data = load_data_dir(args.data_dir)
    summary = [f"{len(data)} utterances", f"{len(data.spk2utt())} speakers"]
    for attr in ("emo", "gender", "fold"):
        values = data.attr(attr)
        if values:
            counts = {}
            for v in values.values():
                counts[v] = counts.get(v, 0) + 1
            summary.append(f"{attr}: " + " ".join(f"{k}={n}" for k, n in sorted(counts.items())))
    logging.info("%s is valid: %s", args.data_dir, "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

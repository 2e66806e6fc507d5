"""Splits a data dir into nj parts: DIR/split{nj}/{1..nj}/ (contiguous sorted utterance ids).

Example: python -m genser.bin.split_data data/all 4
"""
import argparse
import logging
import sys

from genser.bin.common import load_config, setup_logging
from genser.datadir import split_data_dir


def get_parser():
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="data dir to split")
    parser.add_argument("nj", type=int, help="number of parts")
    return parser


def main(argv=None):
    """Entry point: prints the split dirs, one per line."""
    args = load_config(get_parser(), argv)
    setup_logging()
    try:
        dirs = split_data_dir(args.data_dir, args.nj)
    except (ValueError, OSError) as exc:
        logging.error("%s", exc)
        return 1
    for d in dirs:
        print(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())

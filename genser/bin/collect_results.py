"""Gather the results of several experiments into one table per evaluation protocol, corpora as
columns and systems as rows (Gen-SER N=1 and N=3, the classifier, the LR probe), as a paper sets them.

    python -m genser.bin.collect_results \
        --exp EmoDB=egs/emodb/exp/emotion_whisper_base_mean_cmvnauto_train \
        --exp URDU=egs/urdu/exp/emotion_whisper_base_mean_cmvnauto_train --out RESULTS_collected.md

Reads the exp dirs as the recipes' stages 4-5 left them (any recipe, egs/custom included); see
genser/collect.py.
"""
import argparse
import sys
from pathlib import Path

from genser.collect import collect
from genser.fileio import atomic_write
from genser.options import name_value_pairs


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", action="append", default=[], metavar="NAME=EXP_DIR",
                   help="a column: its name and a recipe's exp dir (repeat, in column order)")
    p.add_argument("--title", default="Results by evaluation protocol")
    p.add_argument("--out", help="Markdown file (default: standard output)")
    return p


def main(argv=None):
    params = get_parser().parse_args(argv)
    try:
        exps = name_value_pairs(params.exp, "--exp", "NAME=EXP_DIR", "column")
        text = f"# {params.title}\n\n" + collect(exps)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if params.out:
        atomic_write(Path(params.out), text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

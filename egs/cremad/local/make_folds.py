#!/usr/bin/env python3
"""Writes the CREMA-D fold file: 5 speaker-disjoint, gender-balanced folds (seed 0).

    python local/make_folds.py --demographics /db/CREMA-D/VideoDemographics.csv --out local/folds.txt

The committed local/folds.txt was made this way; genser.corpora.cremad computes the same
assignment when no --fold_file is given.
"""
import argparse
import collections

from genser.corpora.cremad import NUM_FOLDS, SEED, make_folds, read_demographics
from genser.fileio import atomic_open


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demographics", required=True, help="VideoDemographics.csv")
    parser.add_argument("--out", required=True, help="fold file to write")
    parser.add_argument("--num_folds", type=int, default=NUM_FOLDS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    gender = read_demographics(args.demographics)
    folds = make_folds(gender, args.num_folds, args.seed)
    per_fold = collections.defaultdict(collections.Counter)
    for actor, fold in folds.items():
        per_fold[fold][gender[actor]] += 1
    with atomic_open(args.out) as f:
        f.write(f"# CREMA-D actor -> fold: {args.num_folds} speaker-disjoint, gender-balanced folds\n"
                f"# made by local/make_folds.py --seed {args.seed} from VideoDemographics.csv\n")
        for fold in sorted(per_fold, key=int):
            c = per_fold[fold]
            f.write(f"# fold {fold}: {c['m'] + c['f']} actors ({c['m']} male, {c['f']} female)\n")
        for actor in sorted(folds):
            f.write(f"{actor} {folds[actor]}\n")


if __name__ == "__main__":
    main()

"""Stage 2: the label list and the test folds of an experiment.

    python -m genser.bin.make_labels --data_dir data/all --task emotion --folds all \
        --out_dir exp/emotion_fbank

Writes labels.txt (the class order) and folds.txt (test folds to run), and logs the label counts
per fold. The taxonomy codes are the model's (stage 3 logs their pairwise cosines).
"""
import argparse
import logging
from collections import Counter
from pathlib import Path

from genser.bin.common import setup_logging
from genser.datadir import ATTR_OF_TASK, load_data_dir
from genser.fileio import write_list
from genser.folds import test_folds

log = logging.getLogger("genser.make_labels")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--folds", default="all", help='test folds: "all" or a list such as "1 2"')
    p.add_argument("--out_dir", required=True)
    return p


def select_folds(data, requested, data_dir):
    available = test_folds(data)
    if requested.strip() == "all":
        return available
    folds = requested.split()
    unknown = [f for f in folds if f not in available]
    if unknown:
        raise SystemExit(f"error: folds {unknown} are not in {data_dir}/utt2fold (test folds: {available})")
    return folds


def count_table(data, attr, labels):
    """Label counts per fold, as text lines for the log."""
    utt2label = getattr(data, attr)
    per_fold = Counter((data.fold[u], utt2label[u]) for u in data.utts)
    folds = sorted({f for f, _ in per_fold})
    width = max(len(x) for x in labels + ["fold"]) + 2
    lines = ["fold".ljust(width) + "".join(x.rjust(width) for x in labels)]
    for fold in folds:
        lines.append(fold.ljust(width) + "".join(str(per_fold[fold, x]).rjust(width) for x in labels))
    return lines


def main(argv=None):
    params = get_parser().parse_args(argv)
    setup_logging()
    data = load_data_dir(params.data_dir)
    attr = ATTR_OF_TASK[params.task]
    labels = data.labels(params.task)
    unknown = sorted({(u, x) for u, x in getattr(data, attr).items() if x not in labels})
    if unknown:
        utt, label = unknown[0]
        raise SystemExit(f"error: utterance {utt} has label '{label}' in {params.data_dir}/utt2{attr}, "
                         f"which is not in {params.data_dir}/labels.{attr} ({len(unknown)} such utterances)")
    folds = select_folds(data, params.folds, params.data_dir)
    out = Path(params.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_list(out / "labels.txt", labels)
    write_list(out / "folds.txt", folds)
    log.info("task %s: %d labels %s; %d utterances; test folds %s", params.task, len(labels), labels,
             len(data.utts), folds)
    for line in count_table(data, attr, labels):
        log.info("counts  %s", line)


if __name__ == "__main__":
    main()

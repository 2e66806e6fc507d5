"""Stage 2: the label list and the test folds of an experiment.

    python -m genser.bin.make_labels --data_dir data/all --task emotion --folds all \
        --out_dir exp/emotion_fbank

Writes labels.txt (the class order) and folds.txt (test folds to run), and logs the label counts
per fold. The taxonomy codes are the model's (stage 3 logs their pairwise cosines).

Degenerate test folds (genser.folds.degenerate_folds: fewer than --min_fold_utts utterances, or a
class without a training example) are refused, naming each fold and why, unless
--allow_degenerate_folds true: then they are listed in degenerate_folds.txt, which stage 5 reads to
mark them in RESULTS.md.
"""
import argparse
import logging
from collections import Counter
from pathlib import Path

from genser.bin.common import setup_logging, str2bool
from genser.datadir import ATTR_OF_TASK, load_data_dir
from genser.fileio import atomic_write, write_list
from genser.folds import DEGENERATE_FOLDS, MIN_FOLD_UTTS, degenerate_folds, test_folds

log = logging.getLogger("genser.make_labels")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--folds", default="all", help='test folds: "all" or a list such as "1 2"')
    p.add_argument("--out_dir", required=True)
    p.add_argument("--min_fold_utts", type=int, default=MIN_FOLD_UTTS,
                   help="smallest test fold that is not degenerate")
    p.add_argument("--allow_degenerate_folds", type=str2bool, default=False,
                   help="run degenerate folds anyway (warned about, and marked in RESULTS.md)")
    return p


def check_folds(data, params, folds, labels, out):
    """Refuses degenerate folds (SystemExit 1) unless allowed; then warns and lists them in
    <out>/degenerate_folds.txt (removed when there are none, so that no stale mark survives)."""
    bad = degenerate_folds(data, params.task, folds, labels, params.min_fold_utts)
    listing = out / DEGENERATE_FOLDS
    if not bad:
        listing.unlink(missing_ok=True)
        return
    lines = [f"fold {fold}: {'; '.join(reasons)}" for fold, reasons in bad.items()]
    if not params.allow_degenerate_folds:
        raise SystemExit(f"error: {len(bad)} of {len(folds)} test folds of {params.data_dir} are degenerate:\n  "
                         + "\n  ".join(lines) + "\nleave them out (--folds), merge speakers or classes in the "
                         "data, or run them anyway with --allow_degenerate_folds true (RESULTS.md marks them)")
    atomic_write(listing, "".join(f"{fold}\t{'; '.join(reasons)}\n" for fold, reasons in bad.items()))
    for line in lines:
        log.warning("DEGENERATE %s", line)
    log.warning("running %d degenerate fold(s) as --allow_degenerate_folds asks; their scores mean little, "
                "and RESULTS.md marks them (list: %s)", len(bad), listing)


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
    for line in count_table(data, attr, labels):
        log.info("counts  %s", line)
    check_folds(data, params, folds, labels, out)
    write_list(out / "labels.txt", labels)
    write_list(out / "folds.txt", folds)
    log.info("task %s: %d labels %s; %d utterances; test folds %s", params.task, len(labels), labels,
             len(data.utts), folds)


if __name__ == "__main__":
    main()

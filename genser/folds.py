"""Folds of a data dir (utt2fold): their order, the test folds, and a fold's train/dev/test split."""
import logging
import random
from pathlib import Path

from genser.datadir import DataDir, load_data_dir

logger = logging.getLogger(__name__)

# Fold names that are never test folds (fixed partitions of a corpus).
NON_TEST_FOLDS = ("train", "dev")
_SPECIAL = {"train": 0, "dev": 1, "test": 2}


def fold_key(fold):
    """Sort key of fold names: numbers by value ("2" before "10"), then train, dev, test, then the rest by name."""
    return (0, int(fold), fold) if fold.isdigit() else (1, _SPECIAL.get(fold, 3), fold)


def test_folds(data):
    """Fold names usable as test folds (all folds but 'train'/'dev'), numeric ones in number order."""
    data = data if isinstance(data, DataDir) else load_data_dir(data)
    if not data.fold:
        raise ValueError(f"data dir {data.path} has no utt2fold")
    return sorted({f for f in data.fold.values() if f not in NON_TEST_FOLDS}, key=fold_key)


test_folds.__test__ = False  # not a pytest test, although its name starts with "test_"


def fold_split(data, fold, dev_ratio=0.1, seed=0):
    """(train_utts, dev_utts, test_utts) for test fold ``fold``, each sorted.

    test = utterances of ``fold``.  dev = the 'dev' fold if one exists, otherwise every utterance
    of a seeded subset of the remaining speakers (round(dev_ratio * speakers), at least one; with
    a single remaining speaker, a seeded utterance subset instead).  train = the rest.
    """
    data = data if isinstance(data, DataDir) else load_data_dir(data)
    fold = str(fold)
    folds = test_folds(data)
    if fold not in folds:
        raise ValueError(f"fold {fold!r} is not a test fold of {data.path}/utt2fold "
                         f"(test folds: {folds})")
    utts = data.utts
    missing = [u for u in utts if u not in data.fold]
    if missing:
        raise ValueError(f"utt {missing[0]} has no fold in {data.path}/utt2fold")
    test = [u for u in utts if data.fold[u] == fold]
    rest = [u for u in utts if data.fold[u] != fold]
    if any(data.fold[u] == "dev" for u in utts):
        dev = [u for u in rest if data.fold[u] == "dev"]
    elif dev_ratio <= 0:
        dev = []
    else:
        rng = random.Random(f"genser-dev:{seed}:{fold}")
        speakers = sorted({data.spk[u] for u in rest})
        if len(speakers) >= 2:
            n = min(len(speakers) - 1, max(1, round(dev_ratio * len(speakers))))
            chosen = set(rng.sample(speakers, n))
            dev = [u for u in rest if data.spk[u] in chosen]
        else:
            logger.warning("fold %s of %s: one training speaker only; dev set is an utterance "
                           "subset of that speaker", fold, data.path)
            n = min(len(rest) - 1, max(1, round(dev_ratio * len(rest))))
            dev = sorted(rng.sample(rest, n)) if n > 0 else []
    dev_set = set(dev)
    train = [u for u in rest if u not in dev_set]
    if not train:
        raise ValueError(f"fold {fold} of {data.path}: no training utterances left")
    return train, sorted(dev), test


# A test fold smaller than this scores too few utterances to mean much (one utterance: 0 or 100 %),
# yet counts as much as any other fold in the mean ± std over folds.
MIN_FOLD_UTTS = 5
DEGENERATE_FOLDS = "degenerate_folds.txt"


def degenerate_folds(data, task, folds, labels, min_fold_utts=MIN_FOLD_UTTS):
    """{fold: [reason, ...]} for the test folds in ``folds`` that cannot be scored fairly.

    A fold is degenerate when its test set has fewer than ``min_fold_utts`` utterances, or when a
    class of ``labels`` has no example outside the test fold (train and dev together; which of
    them goes to dev depends on the training seed): the model cannot learn that class, because it
    has no utterance at all, a single one (in this fold), or only speakers of this fold have it.
    """
    data = data if isinstance(data, DataDir) else load_data_dir(data)
    utt2label = data.attr(task)
    out = {}
    for fold in folds:
        reasons = []
        test = [u for u in data.utts if data.fold.get(u) == fold]
        if len(test) < min_fold_utts:
            reasons.append(f"{len(test)} test utterance(s), fewer than the minimum {min_fold_utts}")
        for label in labels:
            have = [u for u in data.utts if utt2label.get(u) == label]
            if any(data.fold.get(u) != fold for u in have):
                continue
            if not have:
                reasons.append(f"class {label} has no utterance at all")
            elif len(have) == 1:
                reasons.append(f"class {label} has a single utterance ({have[0]}), in this fold: "
                               f"no training example")
            else:
                speakers = sorted({data.spk[u] for u in have})
                reasons.append(f"class {label} is absent from the fold's training speakers (only "
                               f"{', '.join(speakers)} of this fold have it): no training example")
        if reasons:
            out[fold] = reasons
    return out


def read_degenerate_folds(exp_dir):
    """{fold: reasons text} from <exp_dir>/degenerate_folds.txt (stage 2), or, for a seed<S> dir of
    the recipe, its parent's; {} when there is none."""
    exp_dir = Path(exp_dir)
    for folder in (exp_dir, exp_dir.parent):
        path = folder / DEGENERATE_FOLDS
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            return {f: reasons for f, _, reasons in (line.partition("\t") for line in lines if line.strip())}
        if not exp_dir.name.startswith("seed"):
            break
    return {}


def inner_groups(speakers, k, seed):
    """Speakers shuffled (seeded) and dealt round-robin into k groups."""
    speakers = sorted(speakers)
    random.Random(f"tune:{seed}").shuffle(speakers)
    return [speakers[i::k] for i in range(k)]


def label_balanced_groups(counts, k, seed):
    """Speakers in k groups whose label distributions are as alike as the speakers allow.

    ``counts``: {speaker: [utterances per class]}. Where speaker and label depend on each other
    (a talk show's guests each in one mood), groups dealt at random can leave a class almost
    absent from the speakers a calibration model trains on and abundant in those it is checked
    on; its held-out posteriors are then no better than chance and say nothing about the fold's
    model. Greedy, in the spirit of stratified group k-fold: the most label-skewed speakers first
    (seeded shuffle, then a stable sort), each into the group that keeps every class's share most
    even across the groups, ties to the group with fewer utterances. Deterministic for a seed.
    """
    speakers = sorted(counts)
    random.Random(f"balanced:{seed}").shuffle(speakers)
    num_classes = len(next(iter(counts.values()))) if counts else 0
    totals = [sum(counts[s][c] for s in speakers) or 1 for c in range(num_classes)]

    def skew(s):
        n = sum(counts[s]) or 1
        shares = [x / n for x in counts[s]]
        mean = sum(shares) / len(shares)
        return sum((x - mean) ** 2 for x in shares)

    speakers.sort(key=skew, reverse=True)
    groups = [[] for _ in range(k)]
    held = [[0] * num_classes for _ in range(k)]

    def spread(g, s):
        # sum over classes of the variance over groups of the group's share of the class
        total = 0.0
        for c in range(num_classes):
            shares = [(held[h][c] + (counts[s][c] if h == g else 0)) / totals[c] for h in range(k)]
            mean = sum(shares) / k
            total += sum((x - mean) ** 2 for x in shares)
        return total

    for s in speakers:
        g = min(range(k), key=lambda h: (spread(h, s), sum(held[h]), h))
        groups[g].append(s)
        held[g] = [a + b for a, b in zip(held[g], counts[s])]
    return [sorted(g) for g in groups]


def inner_splits(data, fold, k, seed):
    """[(fit utterances, validation utterances)] of an inner cross-validation for outer test fold
    ``fold`` (bench/tune.py, the probe's choice of C): speaker-disjoint, and built from the other
    folds' utterances only, so that nothing is chosen on the test fold."""
    train_utts = [u for u in data.utts if data.fold[u] != fold]
    groups = inner_groups({data.spk[u] for u in train_utts}, k, seed)
    return [([u for u in train_utts if data.spk[u] not in set(g)], [u for u in train_utts if data.spk[u] in set(g)])
            for g in groups]

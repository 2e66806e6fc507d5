"""Cross-corpus and multi-corpus data dirs (egs/cross): pooling, label maps, train/test cells.

The corpus recipes each write ``egs/<corpus>/data/all``.  Cross-corpus work combines them
without preparing any corpus again:

``pool_corpora``
    one data dir holding every utterance of the listed corpora, ids prefixed by the corpus
    (``emodb_03a01Fa``, ``urdu_SM1_F10_A010``) so they never clash, the corpus in ``utt2corpus``
    and the corpus' own label in ``utt2emo``.  Features are extracted once, on this dir.
``build_cell``
    the data dir of one matrix cell (training corpora x one test corpus), a subset of the pool:
    labels mapped onto the shared taxonomy through one label map per corpus (``corpus_label
    shared_label`` lines); classes outside the map are dropped and counted.  ``utt2fold`` says
    what ``genser.bin.train`` does with each utterance: ``train`` for training-only corpora
    (never a test fold), the corpus' own speaker-disjoint folds when the test corpus is also a
    training corpus (each fold model trains on the other folds plus the other corpora), and one
    fold named after the corpus when it is only tested.

Label sets: ``shared`` keeps the classes of the label maps and names them by the shared label;
``full`` keeps every class of the training corpora as a corpus-specific leaf
(``emodb_boredom``) whose family is the shared label (or, outside the map, the corpus label),
for a hierarchical taxonomy (``genser.taxonomy``, type ``hierarchical``).  Either way the
cell's ``label2shared`` file maps each model label to the shared label it is scored as.
"""
import collections
import filecmp
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from genser.datadir import load_data_dir, write_data_dir
from genser.fileio import atomic_open, atomic_write, write_kv

logger = logging.getLogger(__name__)

LABEL_SETS = ("shared", "full")
# Default shared taxonomy: the four classes that cross-corpus SER shares (as in EmoBox).
SHARED_LABELS = ("neutral", "happy", "angry", "sad")
TRAIN_FOLD = "train"  # never a test fold (genser.folds.NON_TEST_FOLDS)


class CrossError(ValueError):
    """A corpus data dir, label map or cell request that cannot be combined."""


def prefixed(corpus, name):
    """The pooled id of an utterance / speaker / recording id ``name`` of ``corpus``."""
    return f"{corpus}_{name}"


def read_label_map(path):
    """Reads "corpus_label shared_label" lines (``#`` comments) into an ordered dict.

    A line with another number of fields, or a corpus label listed twice, is an error naming
    the file and line: a silently ignored line would drop a class from every experiment.
    """
    path = Path(path)
    out, first = {}, {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CrossError(f"label map {path} not found") from None
    for lineno, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CrossError(f"{path}:{lineno}: expected 'corpus_label shared_label', got {line!r}")
        if parts[0] in out:
            raise CrossError(f"{path}:{lineno}: label {parts[0]!r} already mapped on line "
                             f"{first[parts[0]]}")
        out[parts[0]], first[parts[0]] = parts[1], lineno
    if not out:
        raise CrossError(f"label map {path} maps no label")
    return out


def _subset_order(utt):
    # A hash order spreads a small subset over speakers and classes, where id order would take
    # the first speakers only; md5 keeps it stable across runs and Python versions.
    return hashlib.md5(utt.encode("utf-8")).hexdigest()


def pool_corpora(sources, out_dir, max_per_class=0, keep_labels=None):
    """Writes the pooled data dir of ``sources`` ({corpus: data dir}); returns its records.

    ``max_per_class`` > 0 keeps that many utterances per (corpus, label), chosen in a fixed
    hash order (small runs and tests); 0 keeps everything. ``keep_labels`` ({corpus: set of
    labels}) keeps only those labels' utterances: the classes a shared-label cell maps, so that
    no feature is extracted for a clip that every cell drops.
    """
    records, labels = [], []
    for corpus, data_dir in sources.items():
        if not corpus or any(c.isspace() or c == "/" for c in corpus):
            raise CrossError(f"corpus name {corpus!r} must be non-empty without spaces or '/' "
                             f"(it prefixes every id)")
        data_dir = Path(data_dir)
        if not (data_dir / "wav.scp").is_file():
            raise CrossError(
                f"{data_dir}/wav.scp not found: the {corpus} data dir is made by its recipe, "
                f"run `cd {data_dir.parent.parent} && ./run.sh --stage 0 --stop_stage 0` "
                f"(with --corpus_dir pointing at the corpus)")
        data = load_data_dir(data_dir)
        if not data.emo:
            raise CrossError(f"{data_dir}/utt2emo not found: {corpus} has no emotion labels")
        # Relative audio paths in a corpus recipe are relative to that recipe's directory.
        recipe_dir = data_dir.resolve().parent.parent
        utts = data.utts
        if keep_labels is not None:
            dropped = sorted({data.emo.get(u) for u in utts} - set(keep_labels.get(corpus, ())), key=str)
            utts = [u for u in utts if data.emo.get(u) in keep_labels.get(corpus, ())]
            if dropped:
                logger.info("%s: not pooled, no shared class: %s", corpus, " ".join(map(str, dropped)))
        if max_per_class > 0:
            per_label = collections.defaultdict(list)
            for utt in sorted(utts, key=_subset_order):
                per_label[data.emo[utt]].append(utt)
            utts = sorted(u for group in per_label.values() for u in group[:max_per_class])
        for utt in utts:
            if utt not in data.emo:
                raise CrossError(f"utterance {utt} has no label in {data_dir}/utt2emo")
            rec = {"utt": prefixed(corpus, utt), "spk": prefixed(corpus, data.spk[utt]),
                   "emo": data.emo[utt], "gender": data.gender.get(utt),
                   "fold": prefixed(corpus, data.fold[utt]) if utt in data.fold else None}
            if utt in data.segments:
                rid, start, end = data.segments[utt]
                rec.update(rec=prefixed(corpus, rid), start=start, end=None if end < 0 else end,
                           path=_resolve(data.wav[rid], recipe_dir))
            else:
                rec["path"] = _resolve(data.wav[utt], recipe_dir)
            records.append((corpus, rec))
        for label in data.labels("emotion"):
            if label not in labels:
                labels.append(label)
    out_dir = Path(out_dir)
    recs = [rec for _, rec in records]
    for key in ("gender", "fold"):  # a data dir has an attribute for all utterances or none
        if any(rec[key] is None for rec in recs):
            for rec in recs:
                rec.pop(key)
    write_data_dir(out_dir, recs, {"emo": labels})
    write_kv(out_dir / "utt2corpus", {rec["utt"]: corpus for corpus, rec in records})
    counts = collections.Counter((corpus, rec["emo"]) for corpus, rec in records)
    with atomic_open(out_dir / "counts") as f:
        f.write("corpus label utterances\n")
        for (corpus, label), n in sorted(counts.items()):
            f.write(f"{corpus} {label} {n}\n")
    logger.info("pooled %d utterances of %s into %s", len(recs), " ".join(sources), out_dir)
    return recs


def _resolve(path, base):
    # A wav.scp entry may be a command ("sox ... |"), which is passed on as it is.
    if path.endswith("|") or Path(path).is_absolute():
        return path
    return str((base / path).resolve())


def build_cell(pool_dir, out_dir, train_sets, test_set, label_maps, label_set="shared",
               shared_labels=SHARED_LABELS):
    """Writes the data dir of one cell; returns a summary dict (also written as ``cell.yaml``).

    ``label_maps``: {corpus: {corpus_label: shared_label}} for every corpus of the cell.
    Dropped utterances are counted per (corpus, label, reason) in the log, in ``dropped`` and
    in the summary.
    """
    if label_set not in LABEL_SETS:
        raise CrossError(f"label set must be one of {LABEL_SETS}, got {label_set!r}")
    train_sets = list(dict.fromkeys(train_sets))
    if not train_sets or not test_set:
        raise CrossError("a cell needs at least one training corpus and a test corpus")
    pool_dir, out_dir = Path(pool_dir), Path(out_dir)
    pool = load_data_dir(pool_dir)
    utt2corpus = pool.extra.get("corpus")
    if not utt2corpus:
        raise CrossError(f"{pool_dir}/utt2corpus not found: {pool_dir} is not a pooled data dir "
                         f"(made by pool_corpora, egs/cross stage 1)")
    corpora = train_sets + ([test_set] if test_set not in train_sets else [])
    present = set(utt2corpus.values())
    absent = [c for c in corpora if c not in present]
    if absent:
        raise CrossError(f"corpus {' '.join(absent)} is not in the pooled dir {pool_dir} (it holds "
                         f"{' '.join(sorted(present))}); add it to --corpora and rerun stage 1")
    missing_maps = [c for c in corpora if c not in label_maps]
    if missing_maps:
        raise CrossError(f"no label map for corpus {' '.join(missing_maps)}")
    shared = list(shared_labels)
    both_sides = test_set in train_sets

    def shared_of(corpus, label):
        target = label_maps[corpus].get(label)
        return target if target in shared else None

    # Leaves of the full label set: every class of the training corpora, in corpus order and
    # the corpus' own label order.
    pool_labels = pool.labels("emotion")
    leaves, families = [], {}
    if label_set == "full":
        seen = {(utt2corpus[u], pool.emo[u]) for u in pool.utts}
        for corpus in train_sets:
            for label in pool_labels:
                if (corpus, label) in seen:
                    leaf = prefixed(corpus, label)
                    leaves.append(leaf)
                    # Outside the map, the leaf is its own family (EmoDB boredom: "boredom").
                    families[leaf] = shared_of(corpus, label) or label
    stand_in = {}  # shared label -> a training leaf of that family (test-only corpus refs)
    for leaf in leaves:
        stand_in.setdefault(families[leaf], leaf)

    records, extra, dropped = [], {"corpus": {}}, collections.Counter()
    for utt in pool.utts:
        corpus = utt2corpus[utt]
        if corpus not in corpora:
            continue
        label = pool.emo[utt]
        target = shared_of(corpus, label)
        training = corpus in train_sets
        if label_set == "shared":
            if target is None:
                dropped[corpus, label, "not in the label map"] += 1
                continue
            emo = target
        elif training:
            emo = prefixed(corpus, label)
        elif target is None:
            dropped[corpus, label, "not in the label map"] += 1
            continue
        elif target not in stand_in:
            dropped[corpus, label, f"no training class of family {target}"] += 1
            continue
        else:
            # The model has no leaf of a test-only corpus; its reference is a training leaf of
            # the same family, and scoring is at the family level (label2shared) anyway.
            emo = stand_in[target]
        if corpus == test_set and both_sides:
            fold = pool.fold.get(utt)
            if fold is None:
                raise CrossError(f"utterance {utt} has no fold in {pool_dir}/utt2fold, so {corpus} "
                                 f"cannot be tested speaker-disjointly")
            fold = fold[len(corpus) + 1:]  # the corpus' own fold name
        elif corpus == test_set:
            fold = corpus
        else:
            fold = TRAIN_FOLD
        rec = {"utt": utt, "spk": pool.spk[utt], "emo": emo, "fold": fold}
        if pool.gender:
            rec["gender"] = pool.gender[utt]
        if utt in pool.segments:
            rid, start, end = pool.segments[utt]
            rec.update(rec=rid, start=start, end=None if end < 0 else end, path=pool.wav[rid])
        else:
            rec["path"] = pool.wav[utt]
        records.append(rec)
        extra["corpus"][utt] = corpus
    for (corpus, label, why), n in sorted(dropped.items()):
        logger.info("dropped %d utterance(s) of %s label %r: %s", n, corpus, label, why)
    tested = [r for r in records if extra["corpus"][r["utt"]] == test_set]
    trained = [r for r in records if extra["corpus"][r["utt"]] in train_sets]
    if not tested:
        raise CrossError(f"cell {'+'.join(train_sets)} -> {test_set}: no test utterance is left "
                         f"after the label maps")
    if not trained:
        raise CrossError(f"cell {'+'.join(train_sets)} -> {test_set}: no training utterance left")
    if label_set == "shared":
        used = {r["emo"] for r in records}
        labels = [x for x in shared if x in used]
        label2shared = {x: x for x in labels}
    else:
        labels = leaves
        label2shared = {leaf: families[leaf] for leaf in leaves if families[leaf] in shared}
    if len(labels) < 2:
        raise CrossError(f"cell {'+'.join(train_sets)} -> {test_set}: fewer than 2 classes left "
                         f"({labels})")
    # Built next to its final place, then moved there whole (see _replace_dir).
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    final_dir, out_dir = out_dir, Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out_dir, 0o777 & ~umask)  # mkdtemp makes it 0700
    write_data_dir(out_dir, records, {"emo": labels})
    write_kv(out_dir / "utt2corpus", extra["corpus"])
    write_kv(out_dir / "label2shared", label2shared)
    if label_set == "full":
        write_kv(out_dir / "families", {leaf: families[leaf] for leaf in leaves})
    with atomic_open(out_dir / "dropped") as f:
        f.write("corpus label utterances reason\n")
        for (corpus, label, why), n in sorted(dropped.items()):
            f.write(f"{corpus} {label} {n} {why}\n")
    summary = {
        "train_sets": train_sets, "test_set": test_set, "label_set": label_set,
        "shared_labels": [x for x in shared if x in label2shared.values()],
        "labels": labels, "utterances": len(records), "test_utterances": len(tested),
        "speaker_disjoint_folds": both_sides,
        "dropped": {f"{c} {lab}": n for (c, lab, _), n in sorted(dropped.items())},
    }
    atomic_write(out_dir / "cell.yaml", yaml.safe_dump(summary, sort_keys=False))
    _replace_dir(out_dir, final_dir)
    logger.info("cell %s -> %s (%s labels): %d utterances, %d of them tested%s; %d dropped",
                "+".join(train_sets), test_set, label_set, len(records), len(tested),
                " (speaker-disjoint folds)" if both_sides else "", sum(dropped.values()))
    return summary


def _same_files(a, b):
    names = sorted(p.name for p in a.iterdir())
    if not b.is_dir() or names != sorted(p.name for p in b.iterdir()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names if (a / n).is_file())


def _replace_dir(tmp, final):
    """Moves the finished dir ``tmp`` to ``final`` unless ``final`` already holds the same files.

    A cell dir is rebuilt on every run of stage 3, possibly while a run with other features
    trains on it: an identical rebuild leaves it untouched, a different one replaces it whole
    (two renames), so no reader sees a half-written dir.
    """
    if _same_files(tmp, final):
        shutil.rmtree(tmp)
        return
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old.{os.getpid()}")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if not _same_files(tmp, final):  # another run made it at the same moment, differently
            raise
        shutil.rmtree(tmp)
    if old is not None:
        shutil.rmtree(old)


def write_train_config(base, out, families=None):
    """Copies the training YAML ``base`` to ``out``; with ``families`` ({leaf: family}) its
    model_conf.taxonomy becomes the hierarchical code over them (other taxonomy keys kept).

    Generated rather than written by hand, so that the cross recipe follows whatever the shared
    training configuration (egs/TEMPLATE/conf/train.yaml) currently says.
    """
    base = Path(base)
    try:
        conf = yaml.safe_load(base.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise CrossError(f"training config {base} not found") from None
    if not isinstance(conf, dict):
        raise CrossError(f"{base}: a training config must be a YAML mapping")
    if families is not None:
        model_conf = dict(conf.get("model_conf") or {})
        taxonomy = dict(model_conf.get("taxonomy") or {})
        taxonomy.update(type="hierarchical", families=dict(families))
        model_conf["taxonomy"] = taxonomy
        conf["model_conf"] = model_conf
    header = f"# Generated from {base} by genser.cross.write_train_config; do not edit.\n"
    atomic_write(out, header + yaml.safe_dump(conf, sort_keys=False))
    return conf


def normalize_per_corpus(feat_dir, data_dir, out_dir):
    """Writes a copy of the dump ``feat_dir`` standardised per corpus (``data_dir``'s utt2corpus).

    Every corpus gets zero mean and unit variance per layer and dimension (genser.cmvn with the
    corpus as the group, no shrinkage). It is unsupervised adaptation: the statistics of a test
    corpus come from its audio, never from its labels, but they do use the test audio, so results
    with it are labelled by the feature tag (``..._cnorm``). Recording or channel differences
    between corpora (EmoDB's studio at 22 kHz against URDU's broadcast audio) otherwise shift
    every feature, which fbank features carry straight through. Returns {corpus: number of utterances}.
    """
    from genser.cmvn import normalize_dump

    utt2corpus = load_data_dir(data_dir).extra.get("corpus")
    if not utt2corpus:
        raise CrossError(f"{data_dir}/utt2corpus not found: normalisation per corpus needs the pooled dir")
    try:
        return normalize_dump(feat_dir, utt2corpus, out_dir, group="corpus", norm_vars=True, relevance=0.0)
    except ValueError as exc:
        raise CrossError(f"{data_dir}: {exc}") from None

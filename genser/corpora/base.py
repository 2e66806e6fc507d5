"""Helpers shared by the corpus preparers: errors, count checks, the counts table, folds."""
import collections
import logging
import os
import random
import re
from pathlib import Path

from genser.datadir import GENDERS
from genser.fileio import atomic_open
from genser.folds import fold_key

logger = logging.getLogger(__name__)

GENDER_LABELS = list(GENDERS)  # fixed order of labels.gender for every corpus
ALL = "all"  # name of the pooled row in the counts table


class CorpusError(ValueError):
    """A corpus copy that is damaged, incomplete or not laid out as expected."""


def kaldi_id(text):
    """Makes a Kaldi-safe id (no whitespace or slashes) from a free-form name, e.g. a speaker."""
    safe = re.sub(r"[^0-9A-Za-z_.+-]+", "_", text.strip()).strip("_")
    if not safe:
        raise ValueError(f"cannot make an id from {text!r}")
    return safe


def fold_order(folds):
    """Sorts fold names naturally (genser.folds.fold_key)."""
    return sorted(folds, key=fold_key)


def count_table(records):
    """Returns {fold or "all": Counter} with keys "total", "emo:<label>", "gender:<g>", "spk"."""
    table = collections.defaultdict(collections.Counter)
    speakers = collections.defaultdict(set)
    for rec in records:
        for row in (rec.get("fold", ALL), ALL) if rec.get("fold") else (ALL,):
            table[row]["total"] += 1
            if rec.get("emo") is not None:
                table[row][f"emo:{rec['emo']}"] += 1
            if rec.get("gender") is not None:
                table[row][f"gender:{rec['gender']}"] += 1
            speakers[row].add(rec["spk"])
    for row, spks in speakers.items():
        table[row]["spk"] = len(spks)
    return dict(table)


def format_counts(records, labels):
    """The `counts` file: one row per fold (and "all"), one column per label, header first."""
    table = count_table(records)
    columns = ["total", "spk"]
    columns += [f"emo:{lab}" for lab in labels.get("emo", [])]
    columns += [f"gender:{lab}" for lab in labels.get("gender", [])]
    rows = fold_order([f for f in table if f != ALL]) + [ALL]
    lines = ["fold " + " ".join(columns)]
    for row in rows:
        lines.append(row + " " + " ".join(str(table.get(row, {}).get(c, 0)) for c in columns))
    return "\n".join(lines) + "\n"


def compare_counts(records, expected):
    """Lists the differences between the counts found and ``expected``.

    ``expected`` may hold "total" (int), "speakers" (int), "emo" ({label: n}), "gender"
    ({g: n}) and "fold" ({fold: n}); keys left out are not checked.
    """
    table = count_table(records)
    pooled = table.get(ALL, collections.Counter())
    diffs = []

    def check(what, found, want):
        if found != want:
            diffs.append(f"{what}: found {found}, expected {want}")

    if "total" in expected:
        check("utterances", pooled["total"], expected["total"])
    if "speakers" in expected:
        check("speakers", pooled["spk"], expected["speakers"])
    for attr in ("emo", "gender"):
        for lab, want in expected.get(attr, {}).items():
            check(f"{attr} {lab!r}", pooled[f"{attr}:{lab}"], want)
    for fold, want in expected.get("fold", {}).items():
        check(f"fold {fold!r}", table.get(fold, {}).get("total", 0), want)
    extra = set(table) - {ALL} - set(expected.get("fold", {}))
    if expected.get("fold") and extra:
        diffs.append(f"unexpected folds: {' '.join(fold_order(extra))}")
    return diffs


def check_counts(name, corpus_dir, records, expected, allow_incomplete):
    """Refuses (CorpusError) a copy whose counts differ from ``expected``; only warns when allowed."""
    if not expected:  # a user's own list (custom): there is nothing published to compare with
        logger.info("%s: %d utterances (no expected counts to check)", name, len(records))
        return
    diffs = compare_counts(records, expected)
    if not diffs:
        logger.info("%s: counts match the expected ones (%d utterances)", name, len(records))
        return
    msg = (f"{name} at {corpus_dir} does not have the expected counts (a damaged or incomplete "
           f"copy?): " + "; ".join(diffs))
    if allow_incomplete:
        logger.warning("%s (continuing: --allow_incomplete true)", msg)
    else:
        raise CorpusError(msg + ". Pass --allow_incomplete true to use it anyway.")


def missing_files(name, missing, allow_incomplete):
    """Refuses referenced audio that is absent: ``missing`` is a list of (path, referenced_by)."""
    if not missing:
        return
    shown = "; ".join(f"{path} (listed in {ref})" for path, ref in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    msg = f"{name}: {len(missing)} referenced audio file(s) missing: {shown}{more}"
    if allow_incomplete:
        logger.warning("%s; skipping them (--allow_incomplete true)", msg)
    else:
        raise CorpusError(msg + ". Pass --allow_incomplete true to skip them.")


def unusable_audio(path):
    """Why a file cannot be audio (empty, or a git-lfs pointer never pulled), else None."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size == 0:
        return "empty file"
    if head.startswith(b"version https://git-lfs"):
        return "git-lfs pointer, not audio (run `git lfs pull` in the corpus clone)"
    return None


def drop_unusable(name, records, allow_incomplete):
    """Refuses (or, when allowed, drops) records whose audio is empty or a git-lfs pointer."""
    bad = [(rec, why) for rec in records if (why := unusable_audio(rec["path"]))]
    if not bad:
        return records
    shown = "; ".join(f"{rec['utt']}: {rec['path']}: {why}" for rec, why in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    msg = f"{name}: {len(bad)} unusable audio file(s): {shown}{more}"
    if not allow_incomplete:
        raise CorpusError(msg + ". Pass --allow_incomplete true to skip them.")
    logger.warning("%s; skipping them (--allow_incomplete true)", msg)
    dropped = {id(rec) for rec, _ in bad}
    return [rec for rec in records if id(rec) not in dropped]


def finalize(name, corpus_dir, data_dir, records, labels, expected, allow_incomplete):
    """Checks audio files and counts, then writes the data dir and its `counts` file."""
    from genser.datadir import write_data_dir  # imported late: keeps module import light

    records = drop_unusable(name, records, allow_incomplete)
    if not records:
        raise CorpusError(f"{name}: no utterances found under {corpus_dir}")
    check_counts(name, corpus_dir, records, expected or {}, allow_incomplete)
    records = sorted(records, key=lambda r: r["utt"].encode("utf-8"))
    seen = {}
    for rec in records:
        if rec["utt"] in seen:
            raise CorpusError(f"{name}: duplicate utterance id {rec['utt']!r}: "
                              f"{seen[rec['utt']]} and {rec['path']}")
        seen[rec["utt"]] = rec["path"]
    data_dir = Path(data_dir)
    write_data_dir(data_dir, records, labels)
    text = format_counts(records, labels)
    with atomic_open(data_dir / "counts") as f:
        f.write(text)
    logger.info("%s: wrote %d utterances to %s; counts per fold:\n%s",
                name, len(records), data_dir, text.rstrip())
    return records


def assign_speaker_folds(spk2gender, num_folds, seed=0):
    """Seeded, gender-balanced, speaker-disjoint folds: returns {spk: "1".."num_folds"}.

    Speakers of each gender are shuffled with ``random.Random(seed)``, then all are dealt
    round-robin (genders one after the other), so each fold gets about the same number of
    speakers and of each gender.  ``spk2gender`` values may be None (no gender known).
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if len(spk2gender) < num_folds:
        raise ValueError(f"cannot make {num_folds} speaker-disjoint folds from "
                         f"{len(spk2gender)} speakers")
    rng = random.Random(seed)
    order = []
    for gender in sorted({str(g) for g in spk2gender.values()}):
        group = sorted(s for s, g in spk2gender.items() if str(g) == gender)
        rng.shuffle(group)
        order += group
    return {spk: str(i % num_folds + 1) for i, spk in enumerate(order)}


def balanced_speaker_folds(spk2count, num_folds):
    """Speaker-disjoint folds balanced by utterance count: returns {spk: "1".."num_folds"}.

    Greedy longest-processing-time assignment: speakers in decreasing order of ``spk2count``
    (ties by speaker id), each to the fold with the fewest utterances so far (ties: the lowest
    fold number).  Deterministic, and with very uneven speakers (URDU: 2 to 80 utterances) the
    folds differ by at most the size of the smallest speakers, where dealing speakers
    round-robin would not.
    """
    num_folds = int(num_folds)
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if len(spk2count) < num_folds:
        raise ValueError(f"cannot make {num_folds} speaker-disjoint folds from "
                         f"{len(spk2count)} speakers")
    bad = sorted(s for s, n in spk2count.items() if int(n) < 1)
    if bad:
        raise ValueError(f"speaker {bad[0]} has no utterances")
    load = [0] * num_folds
    out = {}
    for spk in sorted(spk2count, key=lambda s: (-int(spk2count[s]), s)):
        fold = min(range(num_folds), key=lambda f: (load[f], f))
        load[fold] += int(spk2count[spk])
        out[spk] = str(fold + 1)
    return out


def read_fold_file(path):
    """Reads "speaker fold" lines (comments with #) into a dict; duplicates raise."""
    path = Path(path)
    out = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise CorpusError(f"{path}:{lineno}: expected 'speaker fold', got {line!r}")
            if parts[0] in out:
                raise CorpusError(f"{path}:{lineno}: speaker {parts[0]} listed twice")
            out[parts[0]] = parts[1]
    return out


def download_and_unzip(name, url, dest_dir, extract_to=None):
    """Fetches the zip at ``url`` into ``dest_dir`` and unpacks it into ``extract_to`` (default:
    ``dest_dir``); the archive is written as .part and renamed, so a broken fetch leaves no zip."""
    import urllib.request
    import zipfile

    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    archive = dest_dir / url.rstrip("/").rsplit("/", 1)[-1]
    part = archive.with_name(archive.name + ".part")
    logger.info("%s: downloading %s -> %s", name, url, archive)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            while block := resp.read(1 << 20):
                out.write(block)
    except OSError as exc:  # URLError, HTTPError and socket errors are all OSErrors
        part.unlink(missing_ok=True)
        raise CorpusError(f"{name}: could not download {url} ({exc}). Download and unzip it "
                          f"yourself, then pass --corpus_dir") from exc
    os.replace(part, archive)
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(extract_to or dest_dir)
    except zipfile.BadZipFile as exc:
        raise CorpusError(f"{name}: {archive} (from {url}) is not a zip archive: {exc}") from exc
    return archive


def abspath(path):
    """Absolute path without resolving symlinks (keeps the user's own links visible)."""
    return os.path.abspath(os.fspath(path))

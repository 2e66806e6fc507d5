"""Kaldi-style data directories: one text file per attribute, keyed by utterance id.

Files: ``wav.scp`` (utt path, or rec path with ``segments``), ``utt2spk``, ``spk2utt``,
``utt2emo``, ``utt2gender`` (m/f), ``utt2fold``, optional ``segments`` (utt rec start end) and
``utt2dur``; label lists ``labels.emo``, ``labels.gender`` fix the class order.  All keyed files
are sorted in C-locale order, as Kaldi's ``utils/validate_data_dir.sh`` requires.

Validation is genser.validate; folds (order, test folds, splits) are genser.folds.
"""
import logging
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from genser.fileio import read_kv, read_list, write_kv, write_list

logger = logging.getLogger(__name__)

ATTR_OF_TASK = {"emotion": "emo", "gender": "gender"}
# attribute -> file name of the per-utterance files genser knows.
UTT_FILES = {"spk": "utt2spk", "emo": "utt2emo", "gender": "utt2gender", "fold": "utt2fold",
             "dur": "utt2dur"}
LABELLED_ATTRS = ("emo", "gender")
GENDERS = ("f", "m")
_RECORD_KEYS = {"utt", "path", "spk", "emo", "gender", "fold", "dur", "rec", "start", "end"}


class DataDirError(ValueError):
    """A data dir with problems; ``problems`` lists them, each naming the id and the file."""

    def __init__(self, data_dir, problems, max_shown=200):
        self.data_dir = Path(data_dir)
        self.problems = list(problems)
        shown = self.problems[:max_shown]
        more = len(self.problems) - len(shown)
        msg = f"data dir {data_dir} has {len(self.problems)} problem(s):\n" + "\n".join(
            f"  - {p}" for p in shown)
        if more:
            msg += f"\n  ... and {more} more"
        super().__init__(msg)


@dataclass
class DataDir:
    """A loaded data dir. Per-utterance attributes are dicts keyed by utterance id."""

    path: Path
    wav: dict  # utt -> path (or rec -> path when segments exist)
    spk: dict
    emo: dict = field(default_factory=dict)
    gender: dict = field(default_factory=dict)
    fold: dict = field(default_factory=dict)
    dur: dict = field(default_factory=dict)  # utt -> float seconds
    segments: dict = field(default_factory=dict)  # utt -> (rec, start, end)
    label_lists: dict = field(default_factory=dict)  # attr -> [labels] from labels.<attr>
    extra: dict = field(default_factory=dict)  # other utt2<name> files: name -> {utt: value}

    @property
    def utts(self):
        """Sorted utterance ids (those of utt2spk)."""
        return sorted(self.spk)

    def __len__(self):
        return len(self.spk)

    def attr(self, name):
        """The dict of attribute ``name`` (``emo``, ``gender``, ``fold``, ... or an extra one)."""
        name = ATTR_OF_TASK.get(name, name)
        if name in UTT_FILES:
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        raise KeyError(f"data dir {self.path} has no utt2{name}")

    def labels(self, task):
        """Class list for ``task`` (``emotion``/``gender`` or an attribute name), in fixed order."""
        attr = ATTR_OF_TASK.get(task, task)
        if attr in self.label_lists:
            return list(self.label_lists[attr])
        values = self.attr(attr)
        if not values:
            raise ValueError(f"data dir {self.path}: no utt2{attr} for task {task!r}")
        return sorted(set(values.values()))

    def targets(self, task, utts=None, labels=None):
        """Integer class index of each utterance for ``task`` in ``labels`` (default: the data
        dir's own label list); a missing or unknown label raises, naming the utterance and file."""
        attr = ATTR_OF_TASK.get(task, task)
        labels = self.labels(task) if labels is None else list(labels)
        index = {lab: i for i, lab in enumerate(labels)}
        values = self.attr(attr)
        path = self.path / f"utt2{attr}"
        out = []
        for utt in self.utts if utts is None else utts:
            if utt not in values:
                raise ValueError(f"utterance {utt} has no label in {path}")
            if values[utt] not in index:
                raise ValueError(f"utterance {utt}: label {values[utt]!r} in {path} is not in the label "
                                 f"list {labels}")
            out.append(index[values[utt]])
        return out

    def spk2utt(self):
        """Speaker -> sorted list of its utterances."""
        out = defaultdict(list)
        for utt in self.utts:
            out[self.spk[utt]].append(utt)
        return dict(sorted(out.items()))

    def audio(self, utt):
        """(path, start, end) of an utterance; start/end are None without segments."""
        if utt in self.segments:
            rec, start, end = self.segments[utt]
            if rec not in self.wav:
                raise KeyError(f"utt {utt}: recording {rec} of segments not in {self.path}/wav.scp")
            return self.wav[rec], start, end
        if utt not in self.wav:
            raise KeyError(f"utt {utt} not in {self.path}/wav.scp")
        return self.wav[utt], None, None

    def subset(self, utts):
        """A new DataDir restricted to ``utts`` (path unchanged)."""
        keep = set(utts)
        unknown = sorted(keep - set(self.spk))
        if unknown:
            raise KeyError(f"utts not in {self.path}: {unknown[:5]}")

        def sub(d):
            return {k: v for k, v in d.items() if k in keep}

        segments = sub(self.segments)
        if segments:
            recs = {rec for rec, _, _ in segments.values()}
            wav = {k: v for k, v in self.wav.items() if k in recs}
        else:
            wav = sub(self.wav)
        return DataDir(path=self.path, wav=wav, spk=sub(self.spk), emo=sub(self.emo),
                       gender=sub(self.gender), fold=sub(self.fold), dur=sub(self.dur),
                       segments=segments, label_lists=dict(self.label_lists),
                       extra={k: sub(v) for k, v in self.extra.items()})


# ----------------------------------------------------------------------------------------------
# Writing and loading
# ----------------------------------------------------------------------------------------------
def _check_id(value, what, where):
    s = str(value)
    if not s or any(c.isspace() for c in s):
        raise ValueError(f"{where}: invalid {what} {s!r} (empty or containing whitespace)")
    return s


def write_data_dir(data_dir, records, labels=None):
    """Writes a data dir from ``records`` (dicts: utt, path, spk [, emo, gender, fold, dur,
    rec, start, end]).  ``labels`` = {"emo": [...], "gender": [...]} fixes the class order;
    without it the sorted set of values is written (a label list is only written for an
    attribute the records have).  Returns the data dir Path.
    """
    data_dir = Path(data_dir)
    records = list(records)
    if not records:
        raise ValueError(f"write_data_dir({data_dir}): no records")
    per_attr = defaultdict(dict)
    wav, segments, seen = {}, {}, set()
    for i, rec in enumerate(records):
        where = f"record {i} for {data_dir}"
        unknown = set(rec) - _RECORD_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_RECORD_KEYS)})")
        for key in ("utt", "path", "spk"):
            if rec.get(key) in (None, ""):
                raise ValueError(f"{where}: missing {key!r}")
        utt = _check_id(rec["utt"], "utterance id", where)
        if utt in seen:
            raise ValueError(f"{where}: duplicate utterance id {utt}")
        seen.add(utt)
        per_attr["spk"][utt] = _check_id(rec["spk"], "speaker id", f"utt {utt}")
        for attr in ("emo", "gender", "fold"):
            if rec.get(attr) is not None:
                per_attr[attr][utt] = _check_id(rec[attr], attr, f"utt {utt}")
        if rec.get("dur") is not None:
            per_attr["dur"][utt] = f"{float(rec['dur']):.3f}"
        if rec.get("rec") is not None:
            rid = _check_id(rec["rec"], "recording id", f"utt {utt}")
            if rid in wav and wav[rid] != str(rec["path"]):
                raise ValueError(f"utt {utt}: recording {rid} has two paths: {wav[rid]} and {rec['path']}")
            wav[rid] = str(rec["path"])
            start = float(rec.get("start") or 0.0)
            end = float(rec["end"]) if rec.get("end") is not None else -1.0
            segments[utt] = f"{rid} {start:.3f} {end:.3f}"
        else:
            if rec.get("start") is not None or rec.get("end") is not None:
                raise ValueError(f"utt {utt}: start/end given without 'rec'")
            wav[utt] = str(rec["path"])
    if segments and len(segments) != len(seen):
        raise ValueError(f"{data_dir}: either all records or none must have 'rec' (segments)")
    for attr in ("emo", "gender", "fold", "dur"):
        if per_attr[attr] and len(per_attr[attr]) != len(seen):
            missing = sorted(seen - set(per_attr[attr]))
            raise ValueError(f"{data_dir}: {attr} given for some records but not for utts "
                             f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if per_attr["gender"]:
        bad = sorted(u for u, g in per_attr["gender"].items() if g not in GENDERS)
        if bad:
            raise ValueError(f"{data_dir}: gender must be one of {GENDERS}; utt {bad[0]} has "
                             f"{per_attr['gender'][bad[0]]!r}")

    labels = dict(labels or {})
    for attr in LABELLED_ATTRS:  # check before anything is written
        if labels.get(attr) is not None:
            outside = sorted(u for u, v in per_attr[attr].items() if v not in labels[attr])
            if outside:
                u = outside[0]
                raise ValueError(f"{data_dir}: utt {u} has {attr} {per_attr[attr][u]!r}, not in the "
                                 f"label list {list(labels[attr])} ({len(outside)} such utts)")

    data_dir.mkdir(parents=True, exist_ok=True)
    # Remove stale optional files so the dir describes exactly these records.
    for name in ("segments", "utt2emo", "utt2gender", "utt2fold", "utt2dur", "labels.emo",
                 "labels.gender"):
        (data_dir / name).unlink(missing_ok=True)
    write_kv(data_dir / "wav.scp", wav)
    if segments:
        write_kv(data_dir / "segments", segments)
    for attr, name in UTT_FILES.items():
        if per_attr[attr]:
            write_kv(data_dir / name, per_attr[attr])
    write_kv(data_dir / "spk2utt", spk2utt_of(per_attr["spk"]))
    for attr in LABELLED_ATTRS:
        if not per_attr[attr]:
            continue  # no utt2<attr>, so no label list either (e.g. a corpus without gender)
        if labels.get(attr) is not None:
            write_list(data_dir / f"labels.{attr}", labels[attr])
        else:
            write_list(data_dir / f"labels.{attr}", sorted(set(per_attr[attr].values())))
    return data_dir


def spk2utt_of(utt2spk):
    """{spk: "utt1 utt2 ..."} from {utt: spk}, utterances sorted."""
    out = defaultdict(list)
    for utt in sorted(utt2spk):
        out[utt2spk[utt]].append(utt)
    return {spk: " ".join(utts) for spk, utts in out.items()}


def load_data_dir(data_dir):
    """Reads a data dir into a DataDir (no cross-file validation: see validate_data_dir)."""
    data_dir = Path(data_dir)
    for name in ("wav.scp", "utt2spk"):
        if not (data_dir / name).is_file():
            raise DataDirError(data_dir, [f"{data_dir / name}: missing (required file)"])
    kw = {"path": data_dir, "wav": read_kv(data_dir / "wav.scp")}
    for attr, name in UTT_FILES.items():
        p = data_dir / name
        kw[attr] = read_kv(p) if p.is_file() else {}
    kw["dur"] = {u: _float(v, u, data_dir / "utt2dur") for u, v in kw["dur"].items()}
    kw["segments"] = _read_segments(data_dir)
    kw["label_lists"] = {attr: read_list(data_dir / f"labels.{attr}") for attr in LABELLED_ATTRS
                         if (data_dir / f"labels.{attr}").is_file()}
    known = set(UTT_FILES.values())
    kw["extra"] = {p.name[len("utt2"):]: read_kv(p) for p in sorted(data_dir.glob("utt2*"))
                   if p.is_file() and p.name not in known}
    return DataDir(**kw)


def parse_segment(utt, value, path):
    """(rec, start, end) of the line ``utt value`` of the segments file ``path``; an end < 0 means
    the end of the recording, as in Kaldi. DataDirError names the file and utterance otherwise."""
    path = Path(path)
    parts = value.split()
    if len(parts) != 3:
        raise DataDirError(path.parent, [f"{path}: utt {utt}: expected 'utt rec start end', got {utt} {value!r}"])
    start, end = _float(parts[1], utt, path), _float(parts[2], utt, path)
    if start < 0 or 0 <= end <= start:
        raise DataDirError(path.parent, [f"{path}: utt {utt}: bad times start={start} end={end}"])
    return parts[0], start, end


def _read_segments(data_dir):
    """{utt: (rec, start, end)} of data_dir/segments; {} without one."""
    path = Path(data_dir) / "segments"
    if not path.is_file():
        return {}
    return {utt: parse_segment(utt, value, path) for utt, value in read_kv(path).items()}


def read_audio(data_dir):
    """{utt: (path, start, end)} in utterance order: wav.scp, cut by segments when the data dir has
    them (start and end are None without). Needs only these two files (a split of the dir, say)."""
    data_dir = Path(data_dir)
    if not (data_dir / "wav.scp").is_file():
        raise DataDirError(data_dir, [f"{data_dir / 'wav.scp'}: missing (stage 0 makes it; "
                                      f"utils/split_data.sh the splits)"])
    data = DataDir(path=data_dir, wav=read_kv(data_dir / "wav.scp"), spk={},
                   segments=_read_segments(data_dir))
    try:
        return {utt: data.audio(utt) for utt in sorted(data.segments or data.wav)}
    except KeyError as exc:
        raise DataDirError(data_dir, [exc.args[0]]) from None


def _float(value, utt, path):
    try:
        return float(value)
    except ValueError:
        raise DataDirError(path.parent, [f"{path}: utt {utt}: not a number: {value!r}"]) from None


# ----------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------
_SUBSET_FILES = ("utt2spk", "utt2emo", "utt2gender", "utt2fold", "utt2dur", "segments",
                 "feats.scp", "text")


def split_data_dir(data_dir, nj):
    """Creates ``data_dir/split{nj}/{1..nj}/`` by contiguous sorted utterance ids, balanced counts.

    Every per-utterance file (wav.scp, utt2*, segments, feats.scp, text) is subset, spk2utt is
    rebuilt and labels.* are copied.  Returns the list of split dirs.
    """
    data_dir = Path(data_dir)
    nj = int(nj)
    utt2spk = read_kv(data_dir / "utt2spk")
    utts = sorted(utt2spk)
    if nj < 1:
        raise ValueError(f"split_data_dir({data_dir}): nj must be >= 1, got {nj}")
    if nj > len(utts):
        raise ValueError(f"split_data_dir({data_dir}): cannot split {len(utts)} utterances into "
                         f"{nj} jobs")
    files = {name: read_kv(data_dir / name) for name in _SUBSET_FILES if (data_dir / name).is_file()}
    files.update({p.name: read_kv(p) for p in sorted(data_dir.glob("utt2*"))
                  if p.is_file() and p.name not in files})
    wav = read_kv(data_dir / "wav.scp")
    segments = files.get("segments")
    out = []
    base, rem = divmod(len(utts), nj)
    start = 0
    for j in range(nj):
        size = base + (1 if j < rem else 0)
        chunk = utts[start:start + size]
        start += size
        keep = set(chunk)
        sub = data_dir / f"split{nj}" / str(j + 1)
        sub.mkdir(parents=True, exist_ok=True)
        for name, d in files.items():
            part = {k: v for k, v in d.items() if k in keep}
            if name == "feats.scp":  # relative ark paths are relative to the scp's own folder
                part = {k: _rebase_ark(v, data_dir, sub) for k, v in part.items()}
            write_kv(sub / name, part)
        if segments is not None:
            recs = {segments[u].split()[0] for u in chunk if u in segments}
            write_kv(sub / "wav.scp", {k: v for k, v in wav.items() if k in recs})
        else:
            write_kv(sub / "wav.scp", {k: v for k, v in wav.items() if k in keep})
        write_kv(sub / "spk2utt", spk2utt_of({u: utt2spk[u] for u in chunk}))
        for lab in sorted(data_dir.glob("labels.*")):
            shutil.copyfile(lab, sub / lab.name)
        out.append(sub)
    return out


def _rebase_ark(loc, old_dir, new_dir):
    """'ark:offset' of a feats.scp moved from ``old_dir`` to ``new_dir`` (absolute paths unchanged)."""
    ark, sep, offset = loc.rpartition(":")
    if not sep or os.path.isabs(ark):
        return loc
    return f"{os.path.relpath(Path(old_dir).resolve() / ark, Path(new_dir).resolve())}:{offset}"

"""Validation of a Kaldi-style data dir (genser.datadir): every problem found, each naming the
file, line and id, in one DataDirError; optionally that every audio file can be read.
"""
import math
import re
from collections import defaultdict
from pathlib import Path

from genser.datadir import GENDERS, LABELLED_ATTRS, UTT_FILES, DataDirError, parse_segment, spk2utt_of


def _scan(path, problems, nfields=None):
    """Tolerant reader: returns {key: value}, reporting empty/duplicate/unsorted ids and field counts."""
    out, prev, unsorted_reported = {}, None, False
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                problems.append(f"{path}:{lineno}: empty line")
                continue
            if line[0].isspace():
                problems.append(f"{path}:{lineno}: empty id (line starts with whitespace)")
                continue
            parts = line.split(None, 1)
            key, value = parts[0], (parts[1].strip() if len(parts) > 1 else "")
            nf = 1 + len(value.split())
            if nfields is not None and nf != nfields:
                problems.append(f"{path}:{lineno}: id {key}: expected {nfields} fields, got {nf}")
            elif nfields is None and not value:
                problems.append(f"{path}:{lineno}: id {key}: no value")
            if key in out:
                problems.append(f"{path}:{lineno}: duplicate id {key}")
                continue
            if prev is not None and key.encode() < prev.encode() and not unsorted_reported:
                problems.append(f"{path}:{lineno}: not sorted: id {key} comes after {prev} "
                                "(sort with LC_ALL=C sort)")
                unsorted_reported = True
            prev = key
            out[key] = value
    return out


def _diff_ids(ref, other, ref_name, other_name, problems, what="utt"):
    missing = sorted(set(ref) - set(other))
    extra = sorted(set(other) - set(ref))
    for u in missing:
        problems.append(f"{other_name}: {what} {u} of {ref_name} is missing")
    for u in extra:
        problems.append(f"{other_name}: {what} {u} is not in {ref_name}")


def _near_duplicates(path, what, values, problems):
    """Reports values that differ only in case or in spaces vs underscores (``Anger``/``anger``,
    ``spk 16``/``spk_16``): almost always one class or speaker spelt two ways, which would
    silently become two classes (or two speakers, breaking speaker-disjoint folds)."""
    groups = defaultdict(set)
    for v in values:
        groups[re.sub(r"[\s_]+", "_", v.strip()).casefold()].add(v)
    for forms in sorted(sorted(g) for g in groups.values() if len(g) > 1):
        problems.append(f"{path}: {what} {' and '.join(map(repr, forms))} differ only in case or spaces/"
                        f"underscores; spell them one way")


def validate_data_dir(data_dir, check_audio=False):
    """Raises DataDirError listing every problem found; returns None for a valid dir.

    With ``check_audio`` every wav.scp path (not pipes) must exist and be readable by soundfile,
    and segment ends must lie within the recording.
    """
    data_dir = Path(data_dir)
    problems = []
    if not data_dir.is_dir():
        raise DataDirError(data_dir, [f"{data_dir}: not a directory"])
    for name in ("wav.scp", "utt2spk", "spk2utt"):
        if not (data_dir / name).is_file():
            hint = " (make it with utils/utt2spk_to_spk2utt.sh)" if name == "spk2utt" else ""
            problems.append(f"{data_dir / name}: missing (required file){hint}")
    if problems:
        raise DataDirError(data_dir, problems)

    utt2spk = _scan(data_dir / "utt2spk", problems, nfields=2)
    _near_duplicates(data_dir / "utt2spk", "speakers", utt2spk.values(), problems)
    wav = _scan(data_dir / "wav.scp", problems)
    spk2utt = _scan(data_dir / "spk2utt", problems)
    utt_name = str(data_dir / "utt2spk")

    segments = {}
    if (data_dir / "segments").is_file():
        seg_path = data_dir / "segments"
        for utt, value in _scan(seg_path, problems, nfields=4).items():
            if len(value.split()) != 3:  # (reported by _scan)
                continue
            try:
                segments[utt] = parse_segment(utt, value, seg_path)
            except DataDirError as exc:
                problems += exc.problems
        _diff_ids(utt2spk, segments, utt_name, str(seg_path), problems)
        for utt, (rec, _, _) in sorted(segments.items()):
            if rec not in wav:
                problems.append(f"{seg_path}: utt {utt}: recording {rec} not in {data_dir / 'wav.scp'}")
    else:
        _diff_ids(utt2spk, wav, utt_name, str(data_dir / "wav.scp"), problems)

    # spk2utt must be the exact inverse of utt2spk.
    expected = spk2utt_of(utt2spk)
    s2u_name = str(data_dir / "spk2utt")
    _diff_ids(expected, spk2utt, utt_name, s2u_name, problems, what="speaker")
    for spk in sorted(set(expected) & set(spk2utt)):
        got = spk2utt[spk].split()
        if sorted(got) != expected[spk].split():
            problems.append(f"{s2u_name}: speaker {spk}: utterances {got} do not match utt2spk "
                            f"({expected[spk].split()})")
        elif got != sorted(got):
            problems.append(f"{s2u_name}: speaker {spk}: utterance list not sorted")

    labels = {}
    for attr in LABELLED_ATTRS:
        p = data_dir / f"labels.{attr}"
        if p.is_file():
            lab = [x.strip() for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
            dups = sorted({x for x in lab if lab.count(x) > 1})
            for d in dups:
                problems.append(f"{p}: duplicate label {d}")
            if not lab:
                problems.append(f"{p}: empty label list")
            _near_duplicates(p, "labels", lab, problems)
            labels[attr] = lab
    for attr, name in UTT_FILES.items():
        p = data_dir / name
        if attr == "spk" or not p.is_file():
            continue
        values = _scan(p, problems, nfields=2)
        _diff_ids(utt2spk, values, utt_name, str(p), problems)
        if attr != "dur":
            _near_duplicates(p, "labels" if attr in LABELLED_ATTRS else "values", values.values(), problems)
        if attr in labels:
            for utt, v in sorted(values.items()):
                if v not in labels[attr]:
                    problems.append(f"{p}: utt {utt}: label {v!r} not in {data_dir / ('labels.' + attr)} "
                                    f"{labels[attr]}")
        elif attr == "gender":
            for utt, v in sorted(values.items()):
                if v not in GENDERS:
                    problems.append(f"{p}: utt {utt}: gender {v!r} is not one of {list(GENDERS)}")
        elif attr == "dur":
            for utt, v in sorted(values.items()):
                try:
                    ok = float(v) > 0 and math.isfinite(float(v))
                except ValueError:
                    ok = False
                if not ok:
                    problems.append(f"{p}: utt {utt}: duration {v!r} is not a positive number")
    for p in sorted(data_dir.glob("utt2*")):
        if p.is_file() and p.name not in UTT_FILES.values():
            _diff_ids(utt2spk, _scan(p, problems, nfields=None), utt_name, str(p), problems)
    if check_audio:
        _check_audio(data_dir, wav, segments, problems)
    if problems:
        raise DataDirError(data_dir, problems)


def _check_audio(data_dir, wav, segments, problems):
    import soundfile as sf

    from genser.audio import wav_shortfall

    scp = data_dir / "wav.scp"
    dur = {}
    for key, path in sorted(wav.items()):
        if path.rstrip().endswith("|"):
            continue  # a command; checked when read
        if not Path(path).is_file():
            problems.append(f"{scp}: id {key}: audio file not found: {path}")
            continue
        try:
            short = wav_shortfall(path)
            if short:
                problems.append(f"{scp}: id {key}: truncated WAV file {path}: its header declares "
                                f"{short[0]} bytes of audio, the file holds {short[1]}")
                continue
            info = sf.info(path)
            dur[key] = info.frames / info.samplerate
            if info.frames == 0:
                problems.append(f"{scp}: id {key}: empty audio (0 samples): {path}")
        except Exception as exc:  # noqa: BLE001 -- any unreadable file is a problem to report
            problems.append(f"{scp}: id {key}: unreadable audio {path}: {exc}")
    for utt, (rec, start, end) in sorted(segments.items()):
        if rec in dur and max(start, end) > dur[rec] + 0.01:
            problems.append(f"{data_dir / 'segments'}: utt {utt}: segment [{start}, {end}] beyond "
                            f"the end of recording {rec} ({dur[rec]:.3f} s)")

"""Bring your own corpus: a CSV or TSV list of audio files with labels.

Header columns: ``path,label,speaker`` plus optional ``gender`` (m/f/male/female) and ``fold``.
Tab-separated when the file ends in .tsv/.tab, comma-separated otherwise.  Relative paths are
resolved against the folder of the list.  Utterance id: ``<speaker>-<file stem>``.

Labels: ``--labels a,b,c`` (or "a b c") fixes the label list and its order (other labels are errors);
otherwise the sorted unique labels.  Folds: the ``fold`` column when present; otherwise
``--num_folds`` speaker-disjoint folds (gender-balanced when gender is known), seeded by ``--seed``.
"""
import codecs
import csv as csvlib
import io
import logging
import re
from pathlib import Path

from genser.corpora.base import (GENDER_LABELS, CorpusError, abspath, assign_speaker_folds,
                                 finalize, kaldi_id, missing_files)

logger = logging.getLogger(__name__)

NAME = "custom"
REQUIRED = ("path", "label", "speaker")
GENDERS = {"m": "m", "male": "m", "f": "f", "female": "f"}


def add_arguments(parser):
    parser.add_argument("--csv", default=None,
                        help="the list (default: --corpus_dir when it is a file)")
    parser.add_argument("--labels", default=None,
                        help='label list in class order, e.g. "neutral,happy,sad" or "neutral happy sad"')
    parser.add_argument("--num_folds", type=int, default=5,
                        help="speaker-disjoint folds made when the list has no fold column")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    return parser


def read_rows(path):
    """Rows of the list as dicts with a "where" (file:line) entry; bad headers raise."""
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with io.StringIO(read_utf8(path), newline="") as f:
        reader = csvlib.DictReader(f, delimiter=delimiter)
        fields = [c.strip().lower() for c in reader.fieldnames or []]
        absent = [c for c in REQUIRED if c not in fields]
        if absent:
            raise CorpusError(f"{NAME}: {path}: missing column(s) {', '.join(absent)} in header "
                              f"{reader.fieldnames} (delimiter {delimiter!r})")
        reader.fieldnames = fields
        rows = []
        for row in reader:
            if None in row or any(row.get(c) is None for c in fields):
                raise CorpusError(f"{NAME}: {path}:{reader.line_num}: expected {len(fields)} "
                                  f"columns separated by {delimiter!r}")
            row = {k: v.strip() for k, v in row.items()}
            row["where"] = f"{path}:{reader.line_num}"
            rows.append(row)
    return rows, fields


def read_utf8(path):
    """The text of the list; a file that is not UTF-8 (spreadsheets often save UTF-16) raises a
    CorpusError naming it, instead of a bare UnicodeDecodeError or a garbled header."""
    data = path.read_bytes()
    hint = "save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet, or iconv -f <encoding> -t UTF-8)"
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if data.startswith(bom):
            raise CorpusError(f"{NAME}: {path} is {name} text (byte-order mark); the list must be UTF-8: {hint}")
    if b"\x00" in data:  # UTF-16 without a BOM decodes as UTF-8 with a NUL after every ASCII byte
        raise CorpusError(f"{NAME}: {path} contains NUL bytes (UTF-16 text?); the list must be UTF-8: {hint}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CorpusError(f"{NAME}: {path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start}); the list must be UTF-8: {hint}") from None


def check_row(row, fields, label_set):
    """Validates one row; returns (label, speaker id, gender or None, fold or None)."""
    where = row["where"]
    for col in REQUIRED:
        if not row[col]:
            raise CorpusError(f"{NAME}: {where}: empty {col}")
    label = row["label"]
    if any(c.isspace() for c in label):
        raise CorpusError(f"{NAME}: {where}: label {label!r} contains whitespace")
    if label_set is not None and label not in label_set:
        raise CorpusError(f"{NAME}: {where}: unknown label {label!r} (--labels: "
                          f"{' '.join(label_set)})")
    gender = None
    if "gender" in fields:
        gender = GENDERS.get(row["gender"].lower())
        if gender is None:
            raise CorpusError(f"{NAME}: {where}: unknown gender {row['gender']!r} (m, f, male, female)")
    fold = None
    if "fold" in fields:
        if not row["fold"] or any(c.isspace() for c in row["fold"]):
            raise CorpusError(f"{NAME}: {where}: bad fold {row['fold']!r}")
        fold = row["fold"]
    return label, kaldi_id(row["speaker"]), gender, fold


def prepare(corpus_dir=None, data_dir=None, csv=None, labels=None, num_folds=5, seed=0,
            allow_incomplete=False, expected=None):
    """Writes a data dir from a CSV/TSV list; returns the records."""
    path = Path(csv or corpus_dir or "")
    if not path.is_file():
        raise CorpusError(f"{NAME}: list {csv or corpus_dir or '(none given)'} not found; pass --csv FILE "
                          f"(.csv or .tsv) with the header path,label,speaker[,gender][,fold]")
    if data_dir is None:
        raise ValueError(f"{NAME}: data_dir is required")
    # Commas or spaces: commas survive the word splitting of ser.sh --local_data_opts.
    label_list = re.split(r"[,\s]+", labels.strip()) if isinstance(labels, str) else labels
    if label_list is not None and len(set(label_list)) != len(label_list):
        raise ValueError(f"{NAME}: --labels has duplicates: {' '.join(label_list)}")
    rows, fields = read_rows(path)
    records, missing, first, spelling = [], [], {}, {}
    for row in rows:
        label, spk, gender, fold = check_row(row, fields, label_list)
        # kaldi_id maps "spk 16" and "spk_16" to one id: two spellings of a speaker are reported,
        # not silently merged (or, for "Spk16"/"spk16", silently kept apart: see validate_data_dir).
        raw, where = spelling.setdefault(spk, (row["speaker"], row["where"]))
        if raw != row["speaker"]:
            raise CorpusError(f"{NAME}: speaker {raw!r} ({where}) and {row['speaker']!r} ({row['where']}) both "
                              f"become speaker id {spk}; spell the speaker one way")
        audio = Path(row["path"])
        audio = audio if audio.is_absolute() else path.parent / audio
        utt = kaldi_id(f"{spk}-{audio.stem}")
        if utt in first:
            raise CorpusError(f"{NAME}: duplicate utterance id {utt} from {first[utt]} and "
                              f"{row['where']} (same speaker and file name)")
        first[utt] = row["where"]
        if not audio.is_file():
            missing.append((audio, row["where"]))
            continue
        records.append({"utt": utt, "path": abspath(audio), "spk": spk, "emo": label,
                        "gender": gender, "fold": fold})
    missing_files(NAME, missing, allow_incomplete)
    spk2gender = speaker_genders(records, path)
    if "fold" not in fields:
        assign_folds(records, spk2gender, path, int(num_folds), int(seed))
    if label_list is None:
        label_list = sorted({r["emo"] for r in records})
    out_labels = {"emo": list(label_list)}
    if "gender" in fields:
        out_labels["gender"] = GENDER_LABELS
    else:
        for rec in records:
            del rec["gender"]
    return finalize(NAME, path, data_dir, records, out_labels, expected or {}, allow_incomplete)


def speaker_genders(records, path):
    """speaker -> gender (None when unknown); a speaker listed with two genders is an error."""
    spk2gender, spk2fold = {}, {}
    for rec in records:
        if spk2gender.setdefault(rec["spk"], rec["gender"]) != rec["gender"]:
            raise CorpusError(f"{NAME}: {path}: speaker {rec['spk']} has more than one gender")
        spk2fold.setdefault(rec["spk"], set()).add(rec["fold"])
    mixed = sorted(s for s, f in spk2fold.items() if len(f) > 1)
    if mixed and None not in spk2fold[mixed[0]]:
        logger.warning("%s: %s: speakers in more than one fold (folds are not speaker-disjoint): "
                       "%s", NAME, path, " ".join(mixed[:10]))
    return spk2gender


def assign_folds(records, spk2gender, path, num_folds, seed):
    """Fills rec["fold"] with seeded speaker-disjoint (gender-balanced) folds."""
    try:
        folds = assign_speaker_folds(spk2gender, num_folds, seed)
    except ValueError as exc:
        raise CorpusError(f"{NAME}: {path}: {exc}; lower --num_folds") from None
    for rec in records:
        rec["fold"] = folds[rec["spk"]]

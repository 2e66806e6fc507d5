"""CREMA-D (Cao et al., IEEE Trans. Affective Computing 2014).

Layout: ``<corpus_dir>/AudioWAV/AAAA_SSS_EEE_LL.wav`` (actor, sentence, emotion, level, e.g.
``1001_DFA_ANG_XX.wav``) and ``<corpus_dir>/VideoDemographics.csv`` (ActorID,Age,Sex,Race,
Ethnicity).  6 classes; gender from the demographics file; 91 actors.

Protocol: 5 speaker-disjoint, gender-balanced folds.  The published assignment is the committed
``egs/cremad/local/folds.txt`` (actor fold), made by ``egs/cremad/local/make_folds.py`` with
``assign_speaker_folds(seed=0)``; without ``--fold_file`` the same assignment is computed here.
"""
import csv
import logging
import re
from pathlib import Path

from genser.corpora.base import (GENDER_LABELS, CorpusError, abspath, assign_speaker_folds,
                                 finalize, read_fold_file)

logger = logging.getLogger(__name__)

NAME = "CREMA-D"
EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral",
            "SAD": "sad"}
LABELS = list(EMOTIONS.values())
SEX = {"male": "m", "female": "f"}
NUM_FOLDS = 5
SEED = 0
EXPECTED = {
    "total": 7442,
    "speakers": 91,
    "emo": {"anger": 1271, "disgust": 1271, "fear": 1271, "happy": 1271, "neutral": 1087,
            "sad": 1271},
}
# One clip is named with level "X" instead of "XX" in some copies (CheyneyComputerScience/
# CREMA-D#6), so the level field takes one or two letters.
FILE_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})\.wav$")


def add_arguments(parser):
    parser.add_argument("--fold_file", default=None,
                        help="'actor fold' lines (egs/cremad/local/folds.txt); default: computed")
    return parser


def read_demographics(path):
    """ActorID -> "m"/"f" from VideoDemographics.csv; bad rows raise naming the line."""
    out = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not {"ActorID", "Sex"} <= set(reader.fieldnames or []):
            raise CorpusError(f"{NAME}: {path}: expected columns ActorID and Sex, "
                              f"got {reader.fieldnames}")
        for row in reader:
            actor, sex = row["ActorID"].strip(), row["Sex"].strip().lower()
            if sex not in SEX:
                raise CorpusError(f"{NAME}: {path}:{reader.line_num}: unknown Sex {row['Sex']!r}")
            if actor in out:
                raise CorpusError(f"{NAME}: {path}:{reader.line_num}: actor {actor} listed twice")
            out[actor] = SEX[sex]
    return out


def make_folds(spk2gender, num_folds=NUM_FOLDS, seed=SEED):
    """The fold assignment of the recipe (written to egs/cremad/local/folds.txt)."""
    return assign_speaker_folds(spk2gender, num_folds, seed)


def prepare(corpus_dir, data_dir, fold_file=None, allow_incomplete=False, expected=None):
    """Writes the CREMA-D data dir; returns the records."""
    corpus_dir = Path(corpus_dir)
    wav_dir, demo = corpus_dir / "AudioWAV", corpus_dir / "VideoDemographics.csv"
    for need in (wav_dir, demo):
        if not need.exists():
            raise CorpusError(f"{NAME}: {need} not found; pass --corpus_dir pointing at the "
                              f"CREMA-D folder holding AudioWAV/ and VideoDemographics.csv (clone "
                              f"https://github.com/CheyneyComputerScience/CREMA-D with git-lfs; "
                              f"git lfs pull fetches the audio)")
    gender = read_demographics(demo)
    if fold_file:
        folds = read_fold_file(fold_file)
        source = fold_file
    else:
        folds, source = make_folds(gender), "assign_speaker_folds(seed=0)"
    records = []
    for path in sorted(wav_dir.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() != ".wav":
            continue
        m = FILE_RE.match(path.name)
        if not m:
            raise CorpusError(f"{NAME}: {path}: file name does not follow "
                              f"ActorID_Sentence_Emotion_Level.wav (e.g. 1001_DFA_ANG_XX.wav)")
        actor, _, code, _ = m.groups()
        if code not in EMOTIONS:
            raise CorpusError(f"{NAME}: {path}: unknown emotion code {code!r} "
                              f"(known: {' '.join(EMOTIONS)})")
        if actor not in gender:
            raise CorpusError(f"{NAME}: {path}: actor {actor} is not in {demo}")
        if actor not in folds:
            raise CorpusError(f"{NAME}: {path}: actor {actor} has no fold in {source}")
        records.append({"utt": path.stem, "path": abspath(path), "spk": actor,
                        "emo": EMOTIONS[code], "gender": gender[actor], "fold": folds[actor]})
    return finalize(NAME, corpus_dir, data_dir, records, {"emo": LABELS, "gender": GENDER_LABELS},
                    EXPECTED if expected is None else expected, allow_incomplete)

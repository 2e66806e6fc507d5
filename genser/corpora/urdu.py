"""URDU (Latif et al., "Cross Lingual Speech Emotion Recognition: Urdu vs. Western Languages",
FIT 2018): 400 utterances of spontaneous speech cut from Urdu television talk shows.

Layout: ``<corpus_dir>/<Emotion>/SGX_FYY_EZZ.wav`` with the folders ``Angry Happy Neutral Sad``
(100 files each), e.g. ``Angry/SM1_F10_A010.wav``: speaker ``SGX`` (G the gender, M or F, X the
speaker number), the speaker's file number YY, emotion initial E (A H N S, the folder's initial)
and its number ZZ within that emotion.

Labels: the folders mean what EmoDB's anger, happiness, neutral and sadness mean, so they get
EmoDB's names (``genser.corpora.emodb.LABELS`` order).  A model trained on one corpus then
decodes the other without a label map, and the cross-corpus recipe (egs/cross) maps both onto
the shared 4-class names with the same kind of map file.

Protocol: the 29 speakers in the file names are very uneven (2 to 80 utterances), so round-robin
dealing of speakers would give folds of very different sizes.  Speakers are assigned greedily,
largest first, each to the fold with the fewest utterances so far (``balanced_speaker_folds``):
deterministic, speaker-disjoint, and the 5 folds hold 79-81 utterances.  Gender comes from G.
"""
import logging
import re
from pathlib import Path

from genser.corpora.base import GENDER_LABELS, CorpusError, abspath, balanced_speaker_folds, finalize

logger = logging.getLogger(__name__)

NAME = "URDU"
# Folder -> label (EmoDB's names, in EmoDB's order) and the emotion initial its files carry.
FOLDERS = {"Angry": ("anger", "A"), "Happy": ("happiness", "H"), "Sad": ("sadness", "S"),
           "Neutral": ("neutral", "N")}
LABELS = [label for label, _ in FOLDERS.values()]
GENDERS = {"M": "m", "F": "f"}
NUM_FOLDS = 5
FILE_RE = re.compile(r"^(S([MF])\d+)_F\d+_([A-Z])\d+\.wav$")
EXPECTED = {
    "total": 400,
    "speakers": 29,
    "emo": {label: 100 for label in LABELS},
    # What balanced_speaker_folds gives for the published copy with 5 folds.
    "fold": {"1": 80, "2": 80, "3": 80, "4": 80, "5": 80},
}


def add_arguments(parser):
    parser.add_argument("--num_folds", type=int, default=NUM_FOLDS,
                        help="speaker-disjoint folds balanced by utterance count")
    return parser


def parse_name(path, folder):
    """File path -> (speaker, gender); a name not of the form, or whose emotion initial differs
    from its folder's, raises CorpusError naming the file."""
    m = FILE_RE.match(path.name)
    if not m:
        raise CorpusError(f"{NAME}: {path}: file name does not follow SGX_FYY_EZZ.wav "
                          f"(e.g. SM1_F10_A010.wav)")
    spk, gender, initial = m.groups()
    label, want = FOLDERS[folder]
    if initial != want:
        raise CorpusError(f"{NAME}: {path}: emotion initial {initial!r} does not match its folder "
                          f"{folder}/ (expected {want!r} for {label})")
    return spk, GENDERS[gender]


def prepare(corpus_dir, data_dir, allow_incomplete=False, expected=None, num_folds=NUM_FOLDS):
    """Writes the URDU data dir; returns the records."""
    corpus_dir = Path(corpus_dir)
    missing = [f for f in FOLDERS if not (corpus_dir / f).is_dir()]
    if missing:
        raise CorpusError(f"{NAME}: folder(s) {' '.join(missing)} not found under {corpus_dir}; "
                          f"pass --corpus_dir pointing at the folder that holds "
                          f"{'/ '.join(FOLDERS)}/")
    records = []
    for folder, (label, _) in FOLDERS.items():
        for path in sorted((corpus_dir / folder).iterdir()):
            if path.name.startswith(".") or path.suffix.lower() != ".wav":
                continue
            spk, gender = parse_name(path, folder)
            records.append({"utt": path.stem, "path": abspath(path), "spk": spk, "emo": label,
                            "gender": gender})
    counts = {}
    for rec in records:
        counts[rec["spk"]] = counts.get(rec["spk"], 0) + 1
    spk2fold = balanced_speaker_folds(counts, int(num_folds))
    for rec in records:
        rec["fold"] = spk2fold[rec["spk"]]
    if expected is None:
        expected = dict(EXPECTED)
        if int(num_folds) != NUM_FOLDS:  # fold sizes are only published for the default
            expected.pop("fold")
    labels = {"emo": LABELS, "gender": GENDER_LABELS}
    return finalize(NAME, corpus_dir, data_dir, records, labels, expected, allow_incomplete)

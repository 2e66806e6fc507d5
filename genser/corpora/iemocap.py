"""IEMOCAP (Busso et al., Language Resources and Evaluation 2008), ``IEMOCAP_full_release`` layout.

Labels: ``Session{1..5}/dialog/EmoEvaluation/<dialog>.txt``, one line per utterance such as
``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``.
Audio: ``Session{n}/sentences/wav/<dialog>/<utt>.wav``.

Protocols (folds "1".."5" = the session, leave-one-session-out):
- 4 classes (default, as SUPERB/EmoBox): neu, hap (= hap + exc merged), ang, sad;
  5531 utterances, per-session sizes 1085/1023/1151/1031/1241.
- 6 classes: neu, hap, ang, sad, exc, fru (hap and exc kept apart); 7380 utterances.
Other codes (sur, fea, dis, oth, xxx, and fru/exc where not used) are dropped.

The speaker of an utterance is the letter of its last id field, not of the dialog name:
``Ses01F_impro01_M013`` is spoken by the male actor of session 1 (speaker ``Ses01M``).
"""
import logging
import re
from pathlib import Path

from genser.corpora.base import GENDER_LABELS, CorpusError, abspath, finalize, missing_files

logger = logging.getLogger(__name__)

NAME = "IEMOCAP"
ALL_CODES = {"neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx"}
# Per class setup: the label order of labels.emo and the code -> label map (codes not mapped
# are dropped).
CLASS_SETUPS = {
    4: (["neu", "hap", "ang", "sad"], {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang",
                                        "sad": "sad"}),
    6: (["neu", "hap", "ang", "sad", "exc", "fru"],
        {c: c for c in ("neu", "hap", "ang", "sad", "exc", "fru")}),
}
EXPECTED = {
    4: {"total": 5531, "speakers": 10,
        "emo": {"neu": 1708, "hap": 1636, "ang": 1103, "sad": 1084},
        "fold": {"1": 1085, "2": 1023, "3": 1151, "4": 1031, "5": 1241}},
    6: {"total": 7380, "speakers": 10,
        "emo": {"neu": 1708, "hap": 595, "ang": 1103, "sad": 1084, "exc": 1041, "fru": 1849}},
}
LINE_RE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[")
UTT_RE = re.compile(r"^Ses(\d\d)[FM]_\S+_([FM])\d+$")


def add_arguments(parser):
    parser.add_argument("--classes", type=int, default=4, choices=sorted(CLASS_SETUPS),
                        help="4: neu/hap(+exc)/ang/sad; 6: neu/hap/ang/sad/exc/fru")
    return parser


def find_root(corpus_dir):
    """Accepts IEMOCAP_full_release itself or the folder that holds it."""
    corpus_dir = Path(corpus_dir)
    for root in (corpus_dir, corpus_dir / "IEMOCAP_full_release"):
        if (root / "Session1").is_dir():
            return root
    raise CorpusError(f"{NAME}: no Session1/ in {corpus_dir} or {corpus_dir}/IEMOCAP_full_release; "
                      f"pass --corpus_dir pointing at IEMOCAP_full_release (USC SAIL distributes IEMOCAP on "
                      f"request: https://sail.usc.edu/iemocap/)")


def read_evaluation(path):
    """Yields (utt, code) from one EmoEvaluation file; malformed label lines raise."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.startswith("["):
                continue  # header, blank and per-annotator lines
            m = LINE_RE.match(line)
            if not m:
                raise CorpusError(f"{NAME}: {path}:{lineno}: malformed label line {line.strip()!r}")
            _, _, utt, code = m.groups()
            if code not in ALL_CODES:
                raise CorpusError(f"{NAME}: {path}:{lineno}: unknown emotion code {code!r} for "
                                  f"{utt} (known: {' '.join(sorted(ALL_CODES))})")
            if not utt.startswith(path.stem + "_") or not UTT_RE.match(utt):
                raise CorpusError(f"{NAME}: {path}:{lineno}: utterance id {utt!r} does not belong "
                                  f"to dialog {path.stem}")
            yield utt, code


def prepare(corpus_dir, data_dir, classes=4, allow_incomplete=False, expected=None):
    """Writes the IEMOCAP data dir for the 4- or 6-class setup; returns the records."""
    classes = int(classes)
    if classes not in CLASS_SETUPS:
        raise ValueError(f"{NAME}: classes must be one of {sorted(CLASS_SETUPS)}, got {classes}")
    labels, code_map = CLASS_SETUPS[classes]
    root = find_root(corpus_dir)
    records, missing = [], []
    for session in range(1, 6):
        eval_dir = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        if not eval_dir.is_dir():
            logger.warning("%s: %s not found", NAME, eval_dir)
            continue
        # Skip macOS "._" resource-fork files that some copies carry.
        for eval_file in sorted(p for p in eval_dir.glob("*.txt") if not p.name.startswith(".")):
            for utt, code in read_evaluation(eval_file):
                if code not in code_map:
                    continue
                if int(utt[3:5]) != session:
                    raise CorpusError(f"{NAME}: {eval_file}: utterance {utt} is not from "
                                      f"session {session}")
                wav = root / f"Session{session}" / "sentences" / "wav" / eval_file.stem / f"{utt}.wav"
                if not wav.is_file():
                    missing.append((wav, eval_file))
                    continue
                gender = UTT_RE.match(utt).group(2).lower()
                records.append({"utt": utt, "path": abspath(wav), "spk": f"Ses{session:02d}{gender.upper()}",
                                "emo": code_map[code], "gender": gender, "fold": str(session)})
    missing_files(NAME, missing, allow_incomplete)
    return finalize(NAME, root, data_dir, records, {"emo": labels, "gender": GENDER_LABELS},
                    EXPECTED[classes] if expected is None else expected, allow_incomplete)

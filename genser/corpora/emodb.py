"""EmoDB (Berlin Database of Emotional Speech, Burkhardt et al., Interspeech 2005).

Layout: ``<corpus_dir>/wav/SSTNNEV.wav`` (e.g. ``03a01Fa.wav``): speaker SS, text TNN, emotion
letter E (German initial), version V.  Protocol: 7 classes, leave-one-speaker-out, so the fold
of an utterance is its speaker id ("03", "08", ...); gender comes from the speaker id.
"""
import logging
import re
from pathlib import Path

from genser.options import str2bool
from genser.corpora.base import GENDER_LABELS, CorpusError, abspath, download_and_unzip, finalize

logger = logging.getLogger(__name__)

NAME = "EmoDB"
# German initials -> label, in the fixed order of labels.emo.
EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
            "T": "sadness", "N": "neutral"}
LABELS = list(EMOTIONS.values())
SPEAKER_GENDER = {"03": "m", "10": "m", "11": "m", "12": "m", "15": "m",
                  "08": "f", "09": "f", "13": "f", "14": "f", "16": "f"}
EXPECTED = {
    "total": 535,
    "speakers": 10,
    "emo": {"anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71,
            "sadness": 62, "neutral": 79},
    "fold": {"03": 49, "08": 58, "09": 43, "10": 38, "11": 55, "12": 35, "13": 61, "14": 69,
             "15": 56, "16": 71},
}
FILE_RE = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z])\.wav$")
DOWNLOAD_URL = "http://emodb.bilderbar.info/download/download.zip"


def add_arguments(parser):
    parser.add_argument("--download", type=str2bool, default=True,
                        help="fetch the public archive when --corpus_dir has no wav/ (true|false)")
    parser.add_argument("--download_url", default=DOWNLOAD_URL, help="the EmoDB archive")
    return parser


def parse_name(path):
    """File name -> (speaker, emotion label); bad names raise CorpusError naming the file."""
    m = FILE_RE.match(path.name)
    if not m:
        raise CorpusError(f"{NAME}: {path}: file name does not follow SSTNNEV.wav (e.g. 03a01Fa.wav)")
    spk, _, code, _ = m.groups()
    if code not in EMOTIONS:
        raise CorpusError(f"{NAME}: {path}: unknown emotion code {code!r} "
                          f"(known: {' '.join(EMOTIONS)})")
    if spk not in SPEAKER_GENDER:
        raise CorpusError(f"{NAME}: {path}: unknown speaker id {spk!r} "
                          f"(known: {' '.join(sorted(SPEAKER_GENDER))})")
    return spk, EMOTIONS[code]


def prepare(corpus_dir, data_dir, allow_incomplete=False, expected=None, download=False,
            download_url=DOWNLOAD_URL):
    """Writes the EmoDB data dir (first fetching the archive with ``download``); returns the records."""
    corpus_dir = Path(corpus_dir)
    wav_dir = corpus_dir / "wav"
    if not wav_dir.is_dir() and download:
        archive = download_and_unzip(NAME, download_url, corpus_dir)
        if not wav_dir.is_dir():
            raise CorpusError(f"{NAME}: {archive} has no wav/ folder; is {download_url} the EmoDB archive?")
    if not wav_dir.is_dir():
        raise CorpusError(f"{NAME}: {wav_dir} not found. Pass --corpus_dir pointing at the folder "
                          f"that holds wav/ (the unpacked {DOWNLOAD_URL}), or --download true")
    records = []
    for path in sorted(wav_dir.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() != ".wav":
            continue
        spk, emo = parse_name(path)
        records.append({"utt": path.stem, "path": abspath(path), "spk": spk, "emo": emo,
                        "gender": SPEAKER_GENDER[spk], "fold": spk})
    labels = {"emo": LABELS, "gender": GENDER_LABELS}
    return finalize(NAME, corpus_dir, data_dir, records, labels,
                    EXPECTED if expected is None else expected, allow_incomplete)

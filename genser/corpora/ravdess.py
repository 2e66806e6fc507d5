"""RAVDESS (Livingstone & Russo, PLoS ONE 2018), audio-only part.

Layout: ``<corpus_dir>/Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` (the Zenodo zips
``Audio_Speech_Actors_01-24.zip`` / ``Audio_Song_Actors_01-24.zip`` unpacked into
``<corpus_dir>`` or into sub-folders of it): modality MM (03 audio-only), vocal channel VV
(01 speech, 02 song), emotion EE (01..08), intensity II, statement SS, repetition RR, actor AA.
48 kHz, a few files stereo (down-mixed later by the audio reader).

Protocol: 8 classes; speech only by default (1440 files; ``--include_song true`` adds the 1012
song files); gender from the actor number (odd male, even female); 6 speaker-disjoint folds of 4
consecutive actors: fold k holds actors 4k-3..4k (1-4, 5-8, ..., 21-24), 2 male + 2 female each.
"""
import logging
import re
from pathlib import Path

from genser.options import str2bool
from genser.corpora.base import GENDER_LABELS, CorpusError, abspath, download_and_unzip, finalize

logger = logging.getLogger(__name__)

NAME = "RAVDESS"
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
            "06": "fearful", "07": "disgust", "08": "surprised"}
LABELS = list(EMOTIONS.values())
CHANNELS = {"01": "speech", "02": "song"}
ACTORS_PER_FOLD = 4
FILE_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.wav$")
DIR_RE = re.compile(r"^Actor_(\d\d)$")
DOWNLOAD_URL = "https://zenodo.org/record/1188976/files"
ZIPS = {"speech": "Audio_Speech_Actors_01-24.zip", "song": "Audio_Song_Actors_01-24.zip"}


def add_arguments(parser):
    parser.add_argument("--include_song", type=str2bool, default=False,
                        help="also use the song recordings (vocal channel 02)")
    parser.add_argument("--download", type=str2bool, default=True,
                        help="fetch the Zenodo zips when --corpus_dir has no Actor_* (true|false)")
    parser.add_argument("--download_url", default=DOWNLOAD_URL, help="the Zenodo record of RAVDESS")
    return parser


def fold_of(actor):
    """Actor number (1..24) -> fold name "1".."6"."""
    return str((actor - 1) // ACTORS_PER_FOLD + 1)


def expected_counts(include_song):
    """Speech: 60 files per actor (neutral 4, others 8).  Song: 44 per actor, actor 18 has none."""
    emo = {lab: 96 if lab == "neutral" else 192 for lab in LABELS}
    fold = {fold_of(a): 0 for a in range(1, 25)}
    gender = {"m": 0, "f": 0}
    for actor in range(1, 25):
        n = 60 + (44 if include_song and actor != 18 else 0)
        fold[fold_of(actor)] += n
        gender["m" if actor % 2 else "f"] += n
    if include_song:
        for lab in ("neutral", "calm", "happy", "sad", "angry", "fearful"):
            emo[lab] += 92 if lab == "neutral" else 184
    return {"total": sum(fold.values()), "speakers": 24, "emo": emo, "fold": fold,
            "gender": gender}


def actor_dirs(corpus_dir):
    """Actor_XX folders in ``corpus_dir`` and in its direct sub-folders (one per Zenodo zip)."""
    dirs = sorted(p for p in corpus_dir.glob("Actor_*") if p.is_dir())
    dirs += sorted(p for p in corpus_dir.glob("*/Actor_*") if p.is_dir())
    if not dirs:
        raise CorpusError(f"{NAME}: no Actor_XX folders in {corpus_dir} or its sub-folders. Pass "
                          f"--corpus_dir pointing at the unpacked Audio_Speech_Actors_01-24.zip, or "
                          f"--download true")
    return dirs


def parse_name(path, dir_actor):
    """File name -> (channel, emotion label, actor); bad names raise naming the file."""
    m = FILE_RE.match(path.name)
    if not m:
        raise CorpusError(f"{NAME}: {path}: file name does not follow MM-VV-EE-II-SS-RR-AA.wav")
    modality, channel, code, _, _, _, actor = m.groups()
    if modality != "03":
        raise CorpusError(f"{NAME}: {path}: modality {modality} is not audio-only (03)")
    if channel not in CHANNELS:
        raise CorpusError(f"{NAME}: {path}: unknown vocal channel {channel!r} (01 speech, 02 song)")
    if code not in EMOTIONS:
        raise CorpusError(f"{NAME}: {path}: unknown emotion code {code!r} "
                          f"(known: {' '.join(EMOTIONS)})")
    if int(actor) != dir_actor:
        raise CorpusError(f"{NAME}: {path}: actor {actor} in the name but folder is Actor_{dir_actor:02d}")
    return CHANNELS[channel], EMOTIONS[code], int(actor)


def prepare(corpus_dir, data_dir, include_song=False, allow_incomplete=False, expected=None,
            download=False, download_url=DOWNLOAD_URL):
    """Writes the RAVDESS data dir (first fetching the zips with ``download``); returns the records."""
    corpus_dir = Path(corpus_dir)
    have = any(p.is_dir() for p in [*corpus_dir.glob("Actor_*"), *corpus_dir.glob("*/Actor_*")])
    if not have and download:
        for kind in ("speech", "song") if include_song else ("speech",):
            zip_name = ZIPS[kind]
            download_and_unzip(NAME, f"{download_url}/{zip_name}", corpus_dir,
                               extract_to=corpus_dir / zip_name[:-len(".zip")])
    records = []
    for adir in actor_dirs(corpus_dir):
        m = DIR_RE.match(adir.name)
        if not m or not 1 <= int(m.group(1)) <= 24:
            raise CorpusError(f"{NAME}: {adir}: expected a folder Actor_01 .. Actor_24")
        dir_actor = int(m.group(1))
        for path in sorted(adir.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() != ".wav":
                continue
            channel, emo, actor = parse_name(path, dir_actor)
            if channel == "song" and not include_song:
                continue
            records.append({"utt": path.stem, "path": abspath(path), "spk": adir.name, "emo": emo,
                            "gender": "m" if actor % 2 else "f", "fold": fold_of(actor)})
    return finalize(NAME, corpus_dir, data_dir, records, {"emo": LABELS, "gender": GENDER_LABELS},
                    expected_counts(include_song) if expected is None else expected,
                    allow_incomplete)

"""MELD (Poria et al., ACL 2019), ``MELD.Raw`` layout: csv files plus mp4 (or wav) clips.

- labels: ``{train,dev,test}_sent_emo.csv`` (columns Speaker, Emotion, Dialogue_ID,
  Utterance_ID, ...), found in the corpus root or in ``<split>/``;
- clips: ``train_splits/``, ``dev_splits_complete/``, ``output_repeated_splits_test/`` (each in the
  root or in ``<split>/``), named ``dia{D}_utt{U}.mp4``.

A ``dia{D}_utt{U}.wav`` next to a clip is used as is; otherwise the audio is extracted with
ffmpeg to 16 kHz mono wav under ``--audio_dir/<split>/`` (kept and reused on re-runs).
Protocol: official train/dev/test (utt2fold values train, dev, test), 7 classes; no gender.
Known-bad clips (KNOWN_BAD) are dropped by default and the expected counts lowered to match.
"""
import concurrent.futures
import csv
import logging
import os
import shutil
import subprocess
from pathlib import Path

from genser.options import str2bool
from genser.corpora.base import CorpusError, abspath, finalize, kaldi_id, missing_files

logger = logging.getLogger(__name__)

NAME = "MELD"
LABELS = ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
SPLITS = {"train": "train_splits", "dev": "dev_splits_complete",
          "test": "output_repeated_splits_test"}
# Official counts (Poria et al. 2019, Table 3 / the csv files).
OFFICIAL = {
    "train": {"neutral": 4710, "joy": 1743, "surprise": 1205, "anger": 1109, "sadness": 683,
              "disgust": 271, "fear": 268},
    "dev": {"neutral": 470, "joy": 163, "surprise": 150, "anger": 153, "sadness": 111,
            "disgust": 22, "fear": 40},
    "test": {"neutral": 1256, "joy": 402, "surprise": 281, "anger": 345, "sadness": 208,
             "disgust": 68, "fear": 50},
}
# (split, dialogue, utterance) -> why; reported upstream in declare-lab/MELD issues.
KNOWN_BAD = {
    ("dev", 110, 7): "clip missing from dev_splits_complete (declare-lab/MELD#22, #27)",
    ("train", 125, 3): "corrupt mp4 that ffmpeg cannot decode (declare-lab/MELD#39, #52)",
}
REQUIRED_COLUMNS = ("Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def add_arguments(parser):
    parser.add_argument("--audio_dir", default=None,
                        help="where audio extracted from the mp4 clips goes "
                             "(default: <data_dir>/../meld_audio)")
    parser.add_argument("--drop_known_bad", type=str2bool, default=True,
                        help="drop the known missing/corrupt clips (dev dia110_utt7, "
                             "train dia125_utt3)")
    parser.add_argument("--nj", type=int, default=4, help="parallel ffmpeg processes")
    return parser


def expected_counts(rows, drop):
    """Official counts less the known-bad rows that ``drop`` removes."""
    emo = {lab: sum(OFFICIAL[s][lab] for s in OFFICIAL) for lab in LABELS}
    fold = {s: sum(c.values()) for s, c in OFFICIAL.items()}
    for row in rows:
        if row["key"] in drop:
            emo[row["emo"]] -= 1
            fold[row["split"]] -= 1
    return {"total": sum(fold.values()), "emo": emo, "fold": fold}


def find_in(root, split, name):
    """``root/name`` or ``root/<split>/name``, whichever exists (None if neither)."""
    for cand in (root / name, root / split / name):
        if cand.exists():
            return cand
    return None


def find_root(corpus_dir):
    corpus_dir = Path(corpus_dir)
    for root in (corpus_dir, corpus_dir / "MELD.Raw"):
        if find_in(root, "train", "train_sent_emo.csv"):
            return root
    raise CorpusError(f"{NAME}: no train_sent_emo.csv in {corpus_dir} or {corpus_dir}/MELD.Raw; "
                      f"pass --corpus_dir pointing at MELD.Raw (unpack "
                      f"http://web.eecs.umich.edu/~mihalcea/downloads/MELD.Raw.tar.gz and the "
                      f"train/dev/test archives inside it)")


def read_csv(path, split):
    """Rows of one split's csv as dicts (key, split, emo, spk); bad rows raise naming the line."""
    rows = []
    # The official csvs carry a few stray non-UTF-8 bytes in the transcripts, which we never use.
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        absent = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise CorpusError(f"{NAME}: {path}: missing column(s) {', '.join(absent)}")
        for row in reader:
            line = reader.line_num
            emo = row["Emotion"].strip().lower()
            if emo not in LABELS:
                raise CorpusError(f"{NAME}: {path}:{line}: unknown emotion {row['Emotion']!r} "
                                  f"(known: {' '.join(LABELS)})")
            try:
                dia, utt = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
            except ValueError:
                raise CorpusError(f"{NAME}: {path}:{line}: bad Dialogue_ID/Utterance_ID "
                                  f"{row['Dialogue_ID']!r}/{row['Utterance_ID']!r}") from None
            rows.append({"key": (split, dia, utt), "split": split, "emo": emo, "line": line,
                         "spk": kaldi_id(row["Speaker"] or "unknown"), "csv": path})
    return rows


def extract(clip, wav):
    """ffmpeg: clip -> 16 kHz mono 16-bit wav, written to a temp name then renamed."""
    tmp = wav.with_name(f".{wav.stem}.tmp.wav")
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(clip), "-vn", "-ac", "1",
           "-ar", "16000", "-acodec", "pcm_s16le", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size <= 44:
        tmp.unlink(missing_ok=True)
        return f"ffmpeg failed on {clip}: {proc.stderr.strip()[-500:] or 'no audio'}"
    os.replace(tmp, wav)
    return None


def extract_all(jobs, nj):
    """Runs the (clip, wav, row) extraction jobs; returns {row key: error message}."""
    if jobs and shutil.which("ffmpeg") is None:
        raise CorpusError(
            f"{NAME}: ffmpeg is needed to extract the audio of {len(jobs)} clip(s) (e.g. "
            f"{jobs[0][0]}) but was not found on PATH. Install it (apt-get install ffmpeg, or "
            f"conda install -c conda-forge ffmpeg), or put 16 kHz wavs named like the clips "
            f"(dia0_utt0.wav) next to them or in --audio_dir/<split>/.")
    if jobs:
        logger.info("%s: extracting audio of %d clips with ffmpeg (nj=%d)", NAME, len(jobs), nj)
    errors = {}
    with concurrent.futures.ThreadPoolExecutor(max(1, nj)) as pool:
        for (clip, wav, row), err in zip(jobs, pool.map(lambda j: extract(j[0], j[1]), jobs)):
            if err:
                errors[row["key"]] = err
    return errors


def locate_audio(root, audio_dir, rows, drop, allow_incomplete, nj):
    """Finds or extracts the audio of every row not in ``drop``; returns the rows that have it."""
    jobs, missing = [], []
    rows = [r for r in rows if r["key"] not in drop]
    for row in rows:
        split, dia, utt = row["key"]
        stem = f"dia{dia}_utt{utt}"
        clip_dir = find_in(root, split, SPLITS[split])
        clip = clip_dir / f"{stem}.mp4" if clip_dir else root / SPLITS[split] / f"{stem}.mp4"
        done = audio_dir / split / f"{stem}.wav"
        for cand in (clip.with_suffix(".wav"), done):
            if cand.is_file():
                row["path"] = cand
                break
        else:
            if clip.is_file():
                jobs.append((clip, done, row))
                row["path"] = done
            else:
                missing.append((clip, f"{row['csv']}:{row['line']}"))
    missing_files(NAME, missing, allow_incomplete)  # before the (slow) extraction
    for _, wav, _ in jobs:
        wav.parent.mkdir(parents=True, exist_ok=True)
    errors = extract_all(jobs, nj)
    if errors:
        shown = "; ".join(list(errors.values())[:5])
        msg = f"{NAME}: could not extract {len(errors)} clip(s): {shown}"
        if not allow_incomplete:
            raise CorpusError(msg + ". Pass --allow_incomplete true to skip them.")
        logger.warning("%s; skipping them", msg)
    return [r for r in rows if r.get("path") is not None and r["key"] not in errors]


def prepare(corpus_dir, data_dir, audio_dir=None, drop_known_bad=True, nj=4,
            allow_incomplete=False, expected=None):
    """Writes the MELD data dir (official splits as folds); returns the records."""
    root = find_root(corpus_dir)
    audio_dir = Path(audio_dir) if audio_dir else Path(data_dir).parent / "meld_audio"
    rows = []
    for split in SPLITS:
        path = find_in(root, split, f"{split}_sent_emo.csv")
        if path is None:
            raise CorpusError(f"{NAME}: {split}_sent_emo.csv not found in {root} or {root}/{split}")
        rows += read_csv(path, split)
    seen = {}
    for row in rows:
        if row["key"] in seen:
            raise CorpusError(f"{NAME}: {row['csv']}:{row['line']}: dialogue/utterance "
                              f"{row['key'][1]}/{row['key'][2]} repeats line {seen[row['key']]}")
        seen[row["key"]] = row["line"]
    drop = set(KNOWN_BAD) if drop_known_bad else set()
    for key in sorted(drop & set(seen)):
        logger.info("%s: dropping %s dia%d_utt%d: %s", NAME, *key, KNOWN_BAD[key])
    if expected is None:
        expected = expected_counts(rows, drop)
    kept = locate_audio(root, audio_dir, rows, drop, allow_incomplete, int(nj))
    records = [{"utt": f"{r['split']}_dia{r['key'][1]}_utt{r['key'][2]}", "path": abspath(r["path"]),
                "spk": r["spk"], "emo": r["emo"], "fold": r["split"]} for r in kept]
    return finalize(NAME, root, data_dir, records, {"emo": LABELS}, expected, allow_incomplete)

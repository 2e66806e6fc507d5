"""Tiny fake copies of the corpora, laid out and named as the real ones, for tests/test_corpora.py."""
import csv
from pathlib import Path

import numpy as np
import soundfile as sf


def write_wav(path, sr=16000, dur=0.2, channels=1, seed=0):
    """A short noisy tone, 16-bit PCM."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(sr * dur)
    rng = np.random.default_rng(seed)
    sig = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / sr) + 0.01 * rng.standard_normal(n)
    data = np.stack([sig] * channels, axis=1) if channels > 1 else sig
    sf.write(str(path), data.astype(np.float32), sr, subtype="PCM_16")
    return path


# ---------------------------------------------------------------------------------------- EmoDB
EMODB_FILES = ["03a01Wa", "03a02Nc", "03b01Lb", "08a01Fd", "08a02Tb", "10a04Ad", "10b03Ea",
               "16a05Wa", "16b10Nc", "16b02Ff"]


def make_emodb(root, names=EMODB_FILES):
    """``root/wav/<name>.wav`` at 22050 Hz like the processed shared copy."""
    for i, name in enumerate(names):
        write_wav(Path(root) / "wav" / f"{name}.wav", sr=22050, seed=i)
    return Path(root)


def emodb_expected(names=EMODB_FILES):
    from genser.corpora.emodb import EMOTIONS
    fold, emo = {}, {}
    for n in names:
        fold[n[:2]] = fold.get(n[:2], 0) + 1
        emo[EMOTIONS[n[5]]] = emo.get(EMOTIONS[n[5]], 0) + 1
    return {"total": len(names), "fold": fold, "emo": emo}


# -------------------------------------------------------------------------------------- IEMOCAP
# (session, dialog, utterance, code)
IEMOCAP_UTTS = [
    (1, "Ses01F_impro01", "Ses01F_impro01_F000", "neu"),
    (1, "Ses01F_impro01", "Ses01F_impro01_M013", "exc"),   # male speaker in a female dialog
    (1, "Ses01F_impro01", "Ses01F_impro01_F001", "fru"),
    (1, "Ses01F_script01_1", "Ses01F_script01_1_M000", "ang"),
    (1, "Ses01F_script01_1", "Ses01F_script01_1_F002", "xxx"),
    (2, "Ses02M_impro03", "Ses02M_impro03_M000", "sad"),
    (2, "Ses02M_impro03", "Ses02M_impro03_F004", "hap"),
    (2, "Ses02M_impro03", "Ses02M_impro03_F005", "sur"),
    (3, "Ses03F_impro02", "Ses03F_impro02_M001", "neu"),
    (4, "Ses04M_script02_2", "Ses04M_script02_2_F010", "ang"),
    (5, "Ses05F_impro07", "Ses05F_impro07_M020", "exc"),
    (5, "Ses05F_impro07", "Ses05F_impro07_F021", "sad"),
]


def make_iemocap(root, utts=IEMOCAP_UTTS, skip_wav=()):
    """``root/IEMOCAP_full_release/Session*/{dialog/EmoEvaluation,sentences/wav}``."""
    base = Path(root) / "IEMOCAP_full_release"
    dialogs = {}
    for session, dialog, utt, code in utts:
        dialogs.setdefault((session, dialog), []).append((utt, code))
    for (session, dialog), items in dialogs.items():
        sdir = base / f"Session{session}"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for i, (utt, code) in enumerate(items):
            lines += [f"[{i * 3 + 1.0:.4f} - {i * 3 + 2.5:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 2.0000]",
                      "C-E1:\tNeutral state;\t()", "A-E1:\tval 3; act 2; dom  2;\t()", ""]
            if utt not in skip_wav:
                write_wav(sdir / "sentences" / "wav" / dialog / f"{utt}.wav", seed=i)
        eval_dir = sdir / "dialog" / "EmoEvaluation"
        eval_dir.mkdir(parents=True, exist_ok=True)
        (eval_dir / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        (eval_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
        (eval_dir / "Categorical").mkdir(exist_ok=True)
    return base


# ----------------------------------------------------------------------------------------- MELD
MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
               "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]
# split -> rows of (dialogue, utterance, speaker, emotion)
MELD_ROWS = {
    "train": [(0, 0, "Chandler", "neutral"), (0, 1, "The Interviewer", "joy"),
              (1, 0, "Mr. Geller", "anger"), (125, 3, "Ross", "surprise")],
    "dev": [(0, 0, "Phoebe", "sadness"), (110, 7, "Joey", "fear"), (2, 1, "Monica", "disgust")],
    "test": [(0, 0, "Rachel", "neutral"), (0, 1, "Ross", "joy"), (3, 2, "Joey", "anger")],
}
MELD_CLIP_DIRS = {"train": "train/train_splits", "dev": "dev_splits_complete",
                  "test": "output_repeated_splits_test"}


def make_meld(root, rows=MELD_ROWS, as_mp4=(), missing=(("dev", 110, 7),)):
    """``root/MELD.Raw/{split}_sent_emo.csv`` and clips as wav next to where the mp4s would be.

    Keys in ``as_mp4`` get only a ``.mp4`` (a wav in disguise, for a fake ffmpeg); keys in
    ``missing`` get no file at all (dev dia110_utt7 is absent in the real corpus too).
    """
    base = Path(root) / "MELD.Raw"
    for split, items in rows.items():
        csv_dir = base / "train" if split == "train" else base
        csv_dir.mkdir(parents=True, exist_ok=True)
        with open(csv_dir / f"{split}_sent_emo.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(MELD_HEADER)
            for i, (dia, utt, spk, emo) in enumerate(items, 1):
                writer.writerow([i, f"Oh, \"well\", line {i}\u2019s text", spk, emo, "neutral", dia,
                                 utt, 1, 1, "00:00:01,000", "00:00:02,000"])
                key = (split, dia, utt)
                if key in missing:
                    continue
                clip = base / MELD_CLIP_DIRS[split] / f"dia{dia}_utt{utt}"
                wav = write_wav(clip.with_suffix(".wav"), seed=i)
                if key in as_mp4:
                    wav.rename(clip.with_suffix(".mp4"))
                else:
                    clip.with_suffix(".mp4").write_bytes(b"not a real mp4")
    return base


FAKE_FFMPEG = """#!/usr/bin/env bash
# Test stand-in for ffmpeg: copies the input (a wav in disguise) to the last argument.
in=""
while [ $# -gt 1 ]; do
  if [ "$1" = -i ]; then in=$2; shift; fi
  shift
done
if [ "$(head -c 7 "$in")" = CORRUPT ]; then echo "$in: Invalid data found when processing input" >&2; exit 1; fi
cp "$in" "$1"
"""


def install_fake_ffmpeg(bin_dir):
    path = Path(bin_dir) / "ffmpeg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE_FFMPEG)
    path.chmod(0o755)
    return path


# -------------------------------------------------------------------------------------- CREMA-D
CREMAD_SEX = {"1001": "Male", "1002": "Female", "1003": "Female", "1005": "Male",
              "1006": "Female", "1011": "Male"}
CREMAD_FILES = ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_DFA_NEU_XX", "1002_ITH_SAD_X",
                "1003_TIE_FEA_XX", "1003_DFA_DIS_XX", "1005_IEO_SAD_LO", "1006_WSI_ANG_XX",
                "1011_MTI_NEU_XX", "1011_IWW_HAP_XX"]


def make_cremad(root, files=CREMAD_FILES, sex=CREMAD_SEX):
    base = Path(root) / "CREMA-D"
    for i, name in enumerate(files):
        write_wav(base / "AudioWAV" / f"{name}.wav", seed=i)
    with open(base / "VideoDemographics.csv", "w", newline="") as f:
        f.write('"ActorID","Age","Sex","Race","Ethnicity"\n')
        for actor, s in sex.items():
            f.write(f'{actor},30,"{s}","Caucasian","Not Hispanic"\n')
    return base


# -------------------------------------------------------------------------------------- RAVDESS
# (actor, vocal channel, emotion code); modality 03, intensity 01, statement 01, repetition 01.
RAVDESS_FILES = [(1, "01", "01"), (1, "01", "05"), (2, "01", "03"), (4, "01", "08"),
                 (5, "01", "02"), (6, "01", "07"), (8, "01", "04"), (8, "02", "06"),
                 (21, "01", "06"), (24, "01", "03"), (24, "02", "01")]


def ravdess_name(actor, channel, emo, intensity="01", statement="01", rep="01"):
    return f"03-{channel}-{emo}-{intensity}-{statement}-{rep}-{actor:02d}"


def make_ravdess(root, files=RAVDESS_FILES):
    """Speech files in ``Audio_Speech_Actors_01-24/Actor_XX``, song in ``Audio_Song.../``; 48 kHz,
    one stereo file, as in the real corpus."""
    base = Path(root) / "ravdess"
    for i, (actor, channel, emo) in enumerate(files):
        sub = "Audio_Speech_Actors_01-24" if channel == "01" else "Audio_Song_Actors_01-24"
        write_wav(base / sub / f"Actor_{actor:02d}" / f"{ravdess_name(actor, channel, emo)}.wav",
                  sr=48000, channels=2 if i == 3 else 1, seed=i)
    return base


# --------------------------------------------------------------------------------------- custom
def make_custom(root, rows, header=("path", "label", "speaker", "gender"), delimiter=","):
    """Writes the audio of ``rows`` (relative paths) and the list; returns the list path."""
    root = Path(root)
    for i, row in enumerate(rows):
        audio = Path(row[0])
        write_wav(audio if audio.is_absolute() else root / audio, seed=i)
    ext = ".tsv" if delimiter == "\t" else ".csv"
    path = root / f"list{ext}"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path

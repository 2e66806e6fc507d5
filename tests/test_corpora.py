"""Corpus preparers (genser.corpora) and recipe data scripts (egs/*/local/data.sh) on fixture trees."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from corpus_fixtures import (CREMAD_FILES, EMODB_FILES, MELD_ROWS, emodb_expected,
                             install_fake_ffmpeg, make_cremad, make_custom, make_emodb,
                             make_iemocap, make_meld, make_ravdess, ravdess_name, write_wav)
from genser.corpora import CorpusError, get_corpus, names
from genser.corpora import cremad, custom, emodb, iemocap, meld, ravdess
from genser.corpora.base import assign_speaker_folds, read_fold_file
from genser.datadir import load_data_dir
from genser.validate import validate_data_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENSER_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def load(data_dir):
    validate_data_dir(data_dir, check_audio=True)
    return load_data_dir(data_dir)


def read_counts(data_dir):
    lines = (Path(data_dir) / "counts").read_text().split("\n")
    header = lines[0].split()
    return {row.split()[0]: dict(zip(header[1:], map(int, row.split()[1:])))
            for row in lines[1:] if row}


def test_registry():
    assert names() == ["cremad", "custom", "emodb", "iemocap", "meld", "ravdess", "urdu"]
    assert get_corpus("emodb") is emodb
    with pytest.raises(ValueError, match="unknown corpus 'nope'"):
        get_corpus("nope")


def test_speaker_folds_are_seeded_disjoint_and_gender_balanced():
    spk2gender = {f"s{i:02d}": "m" if i % 2 else "f" for i in range(20)}
    folds = assign_speaker_folds(spk2gender, 5, seed=3)
    assert folds == assign_speaker_folds(spk2gender, 5, seed=3)
    assert folds != assign_speaker_folds(spk2gender, 5, seed=4)
    for fold in "12345":
        members = [s for s, f in folds.items() if f == fold]
        assert sorted(spk2gender[s] for s in members) == ["f", "f", "m", "m"]
    with pytest.raises(ValueError, match="from 3 speakers"):
        assign_speaker_folds({"a": None, "b": None, "c": None}, 5)


# ---------------------------------------------------------------------------------------- EmoDB
def test_emodb_fixture(tmp_path):
    root = make_emodb(tmp_path / "emodb")
    data_dir = tmp_path / "data" / "all"
    # The fixture is a fraction of EmoDB: the official counts refuse it, naming what differs.
    with pytest.raises(CorpusError, match=r"utterances: found 10, expected 535.*fold '03': found 3, "
                                          r"expected 49.*--allow_incomplete true"):
        emodb.prepare(root, data_dir)
    assert not (data_dir / "wav.scp").exists()
    emodb.prepare(root, data_dir, expected=emodb_expected())
    data = load(data_dir)
    assert data.utts == sorted(EMODB_FILES)
    assert data.labels("emotion") == ["anger", "boredom", "disgust", "fear", "happiness",
                                      "sadness", "neutral"]
    assert data.labels("gender") == ["f", "m"]
    assert data.emo["03a01Wa"] == "anger" and data.emo["08a02Tb"] == "sadness"
    assert data.emo["10b03Ea"] == "disgust" and data.emo["10a04Ad"] == "fear"
    assert data.emo["03b01Lb"] == "boredom" and data.emo["16b02Ff"] == "happiness"
    assert data.fold["16a05Wa"] == "16" and data.spk["16a05Wa"] == "16"
    assert data.gender["03a01Wa"] == "m" and data.gender["08a01Fd"] == "f"
    assert data.wav["03a01Wa"] == str(root.resolve() / "wav" / "03a01Wa.wav")
    counts = read_counts(data_dir)
    assert counts["all"]["total"] == 10 and counts["03"]["emo:anger"] == 1
    assert counts["16"]["gender:f"] == 3 and counts["all"]["spk"] == 4
    # --allow_incomplete: a warning instead of a refusal.
    emodb.prepare(root, tmp_path / "d2", allow_incomplete=True)


def test_emodb_refuses_unknown_code_and_speaker(tmp_path):
    root = make_emodb(tmp_path / "emodb")
    write_wav(root / "wav" / "03a01Xa.wav")
    with pytest.raises(CorpusError, match=r"03a01Xa\.wav: unknown emotion code 'X'"):
        emodb.prepare(root, tmp_path / "data", allow_incomplete=True)
    (root / "wav" / "03a01Xa.wav").rename(root / "wav" / "04a01Wa.wav")
    with pytest.raises(CorpusError, match=r"04a01Wa\.wav: unknown speaker id '04'"):
        emodb.prepare(root, tmp_path / "data", allow_incomplete=True)
    with pytest.raises(CorpusError, match="Pass --corpus_dir"):
        emodb.prepare(tmp_path / "nowhere", tmp_path / "data")


def test_emodb_real_corpus(tmp_path):
    if not (SHARED / "corpora" / "emodb" / "wav").is_dir():
        pytest.skip(f"{SHARED}/corpora/emodb not available")
    emodb.prepare(SHARED / "corpora" / "emodb", tmp_path / "all")
    data = load_data_dir(tmp_path / "all")
    assert len(data) == 535 and len(data.spk2utt()) == 10
    counts = read_counts(tmp_path / "all")
    assert [counts["all"][f"emo:{lab}"] for lab in emodb.LABELS] == [127, 81, 46, 69, 71, 62, 79]
    assert {f: c["total"] for f, c in counts.items() if f != "all"} == emodb.EXPECTED["fold"]
    assert counts["all"]["gender:m"] == 233 and counts["all"]["gender:f"] == 302


def test_prepare_corpus_cli(tmp_path, capfd):
    from genser.bin.prepare_corpus import get_parser, main

    root = make_emodb(tmp_path / "emodb")
    assert main(["emodb", "--corpus_dir", str(root), "--data_dir", str(tmp_path / "a")]) == 1
    assert "utterances: found 10, expected 535" in capfd.readouterr().err
    assert main(["emodb", "--corpus_dir", str(root), "--data_dir", str(tmp_path / "a"),
                 "--allow_incomplete", "true"]) == 0
    assert len(load_data_dir(tmp_path / "a")) == 10
    assert "--classes" in get_parser("iemocap").format_help()
    assert "--include_song" in get_parser("ravdess").format_help()


# -------------------------------------------------------------------------------------- IEMOCAP
def test_iemocap_4class(tmp_path):
    make_iemocap(tmp_path)
    data_dir = tmp_path / "all"
    with pytest.raises(CorpusError, match=r"utterances: found 9, expected 5531.*fold '1': found 3, "
                                          r"expected 1085"):
        iemocap.prepare(tmp_path, data_dir)
    iemocap.prepare(tmp_path, data_dir, expected={
        "total": 9, "speakers": 8, "fold": {"1": 3, "2": 2, "3": 1, "4": 1, "5": 2},
        "emo": {"neu": 2, "hap": 3, "ang": 2, "sad": 2}})
    data = load(data_dir)
    assert data.labels("emotion") == ["neu", "hap", "ang", "sad"]
    # exc merged into hap; fru, xxx, sur dropped.
    assert data.emo == {"Ses01F_impro01_F000": "neu", "Ses01F_impro01_M013": "hap",
                        "Ses01F_script01_1_M000": "ang", "Ses02M_impro03_M000": "sad",
                        "Ses02M_impro03_F004": "hap", "Ses03F_impro02_M001": "neu",
                        "Ses04M_script02_2_F010": "ang", "Ses05F_impro07_M020": "hap",
                        "Ses05F_impro07_F021": "sad"}
    # The speaker is the letter of the last id field, not of the dialog.
    assert data.spk["Ses01F_impro01_M013"] == "Ses01M" and data.gender["Ses01F_impro01_M013"] == "m"
    assert data.spk["Ses02M_impro03_F004"] == "Ses02F" and data.gender["Ses02M_impro03_F004"] == "f"
    assert data.fold["Ses04M_script02_2_F010"] == "4"
    assert data.wav["Ses01F_impro01_F000"].endswith(
        "IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")


def test_iemocap_6class(tmp_path):
    make_iemocap(tmp_path)
    iemocap.prepare(tmp_path / "IEMOCAP_full_release", tmp_path / "all", classes=6,
                    expected={"emo": {"neu": 2, "hap": 1, "ang": 2, "sad": 2, "exc": 2, "fru": 1}})
    data = load(tmp_path / "all")
    assert data.labels("emotion") == ["neu", "hap", "ang", "sad", "exc", "fru"]
    assert data.emo["Ses01F_impro01_M013"] == "exc" and data.emo["Ses01F_impro01_F001"] == "fru"
    assert "Ses02M_impro03_F005" not in data.emo  # sur is not in the 6-class setup


def test_iemocap_refuses_damaged_tree(tmp_path):
    base = make_iemocap(tmp_path / "a", skip_wav={"Ses02M_impro03_M000"})
    with pytest.raises(CorpusError, match=r"Session2/sentences/wav/Ses02M_impro03/"
                                          r"Ses02M_impro03_M000\.wav \(listed in .*Ses02M_impro03\.txt\)"):
        iemocap.prepare(base, tmp_path / "all", expected={})
    iemocap.prepare(base, tmp_path / "all", allow_incomplete=True)  # skipped with a warning
    assert "Ses02M_impro03_M000" not in load(tmp_path / "all").emo
    base = make_iemocap(tmp_path / "b")
    bad = base / "Session3" / "dialog" / "EmoEvaluation" / "Ses03F_impro02.txt"
    bad.write_text(bad.read_text().replace("\tneu\t", "\tzzz\t"))
    with pytest.raises(CorpusError, match=r"Ses03F_impro02\.txt:3: unknown emotion code 'zzz' "
                                          r"for Ses03F_impro02_M001"):
        iemocap.prepare(base, tmp_path / "all", allow_incomplete=True)


# ----------------------------------------------------------------------------------------- MELD
def test_meld_wavs_next_to_clips(tmp_path):
    root = make_meld(tmp_path)
    with pytest.raises(CorpusError, match=r"utterances: found 8, expected 13706.*fold 'dev': "
                                          r"found 2, expected 1108"):
        meld.prepare(root, tmp_path / "all")
    meld.prepare(root, tmp_path / "all", expected={"fold": {"train": 3, "dev": 2, "test": 3}})
    data = load(tmp_path / "all")
    assert data.labels("emotion") == ["neutral", "joy", "surprise", "anger", "sadness", "disgust",
                                      "fear"]
    # Known-bad clips (train dia125_utt3, dev dia110_utt7) are dropped.
    assert data.utts == ["dev_dia0_utt0", "dev_dia2_utt1", "test_dia0_utt0", "test_dia0_utt1",
                         "test_dia3_utt2", "train_dia0_utt0", "train_dia0_utt1", "train_dia1_utt0"]
    assert data.fold["dev_dia2_utt1"] == "dev" and data.emo["dev_dia2_utt1"] == "disgust"
    assert data.spk["train_dia1_utt0"] == "Mr._Geller" and data.spk["train_dia0_utt1"] == "The_Interviewer"
    assert data.wav["train_dia0_utt0"].endswith("MELD.Raw/train/train_splits/dia0_utt0.wav")
    assert not data.gender and "labels.gender" not in os.listdir(tmp_path / "all")
    assert read_counts(tmp_path / "all")["test"]["emo:joy"] == 1


def test_meld_expected_counts_follow_dropped_clips():
    rows = [{"key": ("dev", 110, 7), "split": "dev", "emo": "fear"},
            {"key": ("train", 125, 3), "split": "train", "emo": "surprise"}]
    exp = meld.expected_counts(rows, set(meld.KNOWN_BAD))
    assert exp["fold"] == {"train": 9988, "dev": 1108, "test": 2610}
    assert exp["emo"]["fear"] == 268 + 40 + 50 - 1 and exp["total"] == 13706
    assert meld.expected_counts(rows, set())["total"] == 9989 + 1109 + 2610


def test_meld_refusals(tmp_path, monkeypatch):
    root = make_meld(tmp_path / "a")
    with pytest.raises(CorpusError, match=r"dev_splits_complete/dia110_utt7\.mp4 \(listed in "
                                          r".*dev_sent_emo\.csv:3\)"):
        meld.prepare(root, tmp_path / "all", drop_known_bad=False, expected={})
    rows = {**MELD_ROWS, "test": MELD_ROWS["test"] + [(9, 9, "Ross", "happiness")]}
    root = make_meld(tmp_path / "b", rows=rows)
    with pytest.raises(CorpusError, match=r"test_sent_emo\.csv:5: unknown emotion 'happiness'"):
        meld.prepare(root, tmp_path / "all", expected={})
    # A clip only as mp4 and no ffmpeg: the error names ffmpeg and how to install it.
    root = make_meld(tmp_path / "c", as_mp4={("test", 3, 2)})
    monkeypatch.setattr(meld.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match=r"ffmpeg is needed .*dia3_utt2\.mp4.*apt-get install ffmpeg"):
        meld.prepare(root, tmp_path / "all", audio_dir=tmp_path / "audio", expected={})


def test_meld_extracts_with_ffmpeg(tmp_path, monkeypatch):
    install_fake_ffmpeg(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    root = make_meld(tmp_path, as_mp4={("test", 3, 2), ("train", 0, 1)})
    meld.prepare(root, tmp_path / "all", audio_dir=tmp_path / "audio", nj=2, expected={"total": 8})
    data = load(tmp_path / "all")
    assert data.wav["test_dia3_utt2"] == str(tmp_path / "audio" / "test" / "dia3_utt2.wav")
    assert data.wav["train_dia0_utt1"] == str(tmp_path / "audio" / "train" / "dia0_utt1.wav")
    # A clip that ffmpeg cannot decode is refused, naming it.
    (root / "output_repeated_splits_test" / "dia3_utt2.mp4").write_bytes(b"CORRUPT mp4")
    (tmp_path / "audio" / "test" / "dia3_utt2.wav").unlink()
    with pytest.raises(CorpusError, match=r"could not extract 1 clip.*dia3_utt2\.mp4: Invalid data"):
        meld.prepare(root, tmp_path / "all2", audio_dir=tmp_path / "audio", expected={})


# -------------------------------------------------------------------------------------- CREMA-D
def test_cremad_fixture(tmp_path):
    root = make_cremad(tmp_path)
    fold_file = tmp_path / "folds.txt"
    fold_file.write_text("# actor fold\n1001 1\n1002 1\n1003 2\n1005 2\n1006 3\n1011 3\n")
    with pytest.raises(CorpusError, match=r"utterances: found 10, expected 7442.*speakers: found 6"):
        cremad.prepare(root, tmp_path / "all", fold_file=fold_file)
    cremad.prepare(root, tmp_path / "all", fold_file=fold_file,
                   expected={"total": 10, "emo": {"anger": 2, "sad": 2, "neutral": 2}})
    data = load(tmp_path / "all")
    assert data.utts == sorted(CREMAD_FILES)
    assert data.labels("emotion") == ["anger", "disgust", "fear", "happy", "neutral", "sad"]
    assert data.emo["1002_ITH_SAD_X"] == "sad" and data.emo["1003_DFA_DIS_XX"] == "disgust"
    assert data.gender["1001_DFA_ANG_XX"] == "m" and data.gender["1006_WSI_ANG_XX"] == "f"
    assert data.fold["1011_MTI_NEU_XX"] == "3" and data.spk["1011_MTI_NEU_XX"] == "1011"
    # Without a fold file the seeded gender-balanced assignment is computed.
    cremad.prepare(root, tmp_path / "b", expected={})
    folds = load(tmp_path / "b").fold
    assert folds["1001_DFA_ANG_XX"] == cremad.make_folds(cremad.read_demographics(
        root / "VideoDemographics.csv"))["1001"]


def test_cremad_refusals(tmp_path):
    root = make_cremad(tmp_path / "a", files=CREMAD_FILES + ["1005_IEO_XYZ_HI"])
    with pytest.raises(CorpusError, match=r"1005_IEO_XYZ_HI\.wav: unknown emotion code 'XYZ'"):
        cremad.prepare(root, tmp_path / "all", expected={})
    root = make_cremad(tmp_path / "b", files=CREMAD_FILES + ["1042_IEO_HAP_HI"])
    with pytest.raises(CorpusError, match=r"1042_IEO_HAP_HI\.wav: actor 1042 is not in "
                                          r".*VideoDemographics\.csv"):
        cremad.prepare(root, tmp_path / "all", expected={})
    root = make_cremad(tmp_path / "c")
    (root / "AudioWAV" / "1001_DFA_ANG_XX.wav").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    with pytest.raises(CorpusError, match=r"1001_DFA_ANG_XX: .*1001_DFA_ANG_XX\.wav: git-lfs pointer"):
        cremad.prepare(root, tmp_path / "all", expected={})


def test_cremad_committed_folds():
    folds = read_fold_file(REPO / "egs" / "cremad" / "local" / "folds.txt")
    assert sorted(folds) == [str(a) for a in range(1001, 1092)]
    sizes = [list(folds.values()).count(str(f)) for f in range(1, 6)]
    assert sizes == [19, 18, 18, 18, 18]


# -------------------------------------------------------------------------------------- RAVDESS
def test_ravdess_fixture(tmp_path):
    root = make_ravdess(tmp_path)
    with pytest.raises(CorpusError, match=r"utterances: found 9, expected 1440.*fold '1': found 4, "
                                          r"expected 240"):
        ravdess.prepare(root, tmp_path / "all")
    ravdess.prepare(root, tmp_path / "all", expected={"total": 9, "gender": {"m": 4, "f": 5}})
    data = load(tmp_path / "all")
    assert data.labels("emotion") == ["neutral", "calm", "happy", "sad", "angry", "fearful",
                                      "disgust", "surprised"]
    u = ravdess_name
    assert data.emo[u(1, "01", "05")] == "angry" and data.emo[u(4, "01", "08")] == "surprised"
    assert data.gender[u(1, "01", "01")] == "m" and data.gender[u(2, "01", "03")] == "f"
    assert [data.fold[u(a, "01", e)] for a, e in [(1, "01"), (4, "08"), (5, "02"), (8, "04"),
                                                  (21, "06"), (24, "03")]] == list("112266")
    assert data.spk[u(24, "01", "03")] == "Actor_24"
    assert u(8, "02", "06") not in data.emo  # song is excluded by default
    ravdess.prepare(root, tmp_path / "song", include_song=True, expected={"total": 11})
    data = load(tmp_path / "song")
    assert data.emo[u(8, "02", "06")] == "fearful" and data.spk[u(8, "02", "06")] == "Actor_08"


def test_ravdess_expected_counts():
    assert ravdess.expected_counts(False)["fold"] == {str(f): 240 for f in range(1, 7)}
    song = ravdess.expected_counts(True)
    assert song["total"] == 2452 and song["fold"]["5"] == 372 and song["gender"] == {"m": 1248, "f": 1204}


def test_ravdess_refusals(tmp_path):
    root = make_ravdess(tmp_path / "a")
    write_wav(root / "Audio_Speech_Actors_01-24" / "Actor_03" / "03-01-09-01-01-01-03.wav")
    with pytest.raises(CorpusError, match=r"Actor_03/03-01-09-01-01-01-03\.wav: unknown emotion code '09'"):
        ravdess.prepare(root, tmp_path / "all", expected={})
    root = make_ravdess(tmp_path / "b")
    write_wav(root / "Audio_Speech_Actors_01-24" / "Actor_03" / "03-01-01-01-01-01-04.wav")
    with pytest.raises(CorpusError, match=r"actor 04 in the name but folder is Actor_03"):
        ravdess.prepare(root, tmp_path / "all", expected={})


# --------------------------------------------------------------------------------------- custom
CUSTOM_ROWS = [(f"audio/{spk}/{i}.wav", lab, spk, g) for spk, g in
               [("alice", "female"), ("bob", "m"), ("carol", "F"), ("dave", "male"), ("eve", "f"),
                ("frank", "m")] for i, lab in enumerate(["happy", "sad", "neutral"])]


def test_custom_csv_folds_and_labels(tmp_path):
    path = make_custom(tmp_path, CUSTOM_ROWS)
    custom.prepare(data_dir=tmp_path / "all", csv=path, num_folds=3, seed=1)
    data = load(tmp_path / "all")
    assert data.labels("emotion") == ["happy", "neutral", "sad"]
    assert data.utts[:3] == ["alice-0", "alice-1", "alice-2"]
    assert data.wav["bob-1"] == str(tmp_path / "audio" / "bob" / "1.wav")
    assert data.gender["carol-0"] == "f" and data.gender["dave-0"] == "m"
    spk_folds = {}
    for utt, fold in data.fold.items():
        spk_folds.setdefault(data.spk[utt], set()).add(fold)
    assert all(len(f) == 1 for f in spk_folds.values())  # speaker-disjoint
    for fold in "123":  # gender-balanced: one f and one m speaker per fold
        assert sorted(data.gender[f"{s}-0"] for s, f in spk_folds.items() if f == {fold}) == ["f", "m"]
    # Deterministic: same seed, same folds; --labels fixes the order.
    custom.prepare(tmp_path / "ignored.csv", tmp_path / "b", csv=path, num_folds=3, seed=1,
                   labels="sad,happy neutral")
    again = load(tmp_path / "b")
    assert again.fold == data.fold and again.labels("emotion") == ["sad", "happy", "neutral"]


def test_custom_tsv_with_folds(tmp_path, caplog):
    rows = [(str(tmp_path / "abs" / "x.wav"), "calm", "spk 1", "1"), ("rel/y.wav", "angry", "s2", "2")]
    path = make_custom(tmp_path, rows, header=("Path", "Label", "Speaker", "Fold"), delimiter="\t")
    with caplog.at_level("INFO"):
        custom.prepare(path, tmp_path / "all")
    # A user's list has no published counts: none is claimed to match.
    assert "no expected counts" in caplog.text and "match" not in caplog.text
    data = load(tmp_path / "all")
    assert data.fold == {"s2-y": "2", "spk_1-x": "1"} and not data.gender
    assert data.wav["spk_1-x"] == str(tmp_path / "abs" / "x.wav")


def test_custom_refusals(tmp_path):
    path = make_custom(tmp_path / "a", CUSTOM_ROWS)
    with pytest.raises(CorpusError, match=r"list\.csv:2: unknown label 'happy'"):
        custom.prepare(path, tmp_path / "all", labels="neutral sad")
    rows = CUSTOM_ROWS + [("other/0.wav", "sad", "alice", "f")]
    path = make_custom(tmp_path / "b", rows)
    with pytest.raises(CorpusError, match=r"duplicate utterance id alice-0 from .*list\.csv:2 and "
                                          r".*list\.csv:20"):
        custom.prepare(path, tmp_path / "all")
    path = make_custom(tmp_path / "c", CUSTOM_ROWS)
    (tmp_path / "c" / "audio" / "eve" / "2.wav").unlink()
    with pytest.raises(CorpusError, match=r"audio/eve/2\.wav \(listed in .*list\.csv:16\)"):
        custom.prepare(path, tmp_path / "all")
    path = make_custom(tmp_path / "d", CUSTOM_ROWS[:3], header=("file", "label", "speaker", "gender"))
    with pytest.raises(CorpusError, match=r"missing column\(s\) path"):
        custom.prepare(path, tmp_path / "all")
    path = make_custom(tmp_path / "e", CUSTOM_ROWS[:6])
    with pytest.raises(CorpusError, match=r"cannot make 5 speaker-disjoint folds from 2 speakers"):
        custom.prepare(path, tmp_path / "all")


# ------------------------------------------------------------------------ egs/*/local/data.sh
def run_data_sh(tmp_path, corpus, *args):
    """Runs egs/<corpus>/local/data.sh in a scratch copy of the recipe dir; returns data/all."""
    if not (REPO / "utils" / "parse_options.sh").is_file() or \
            not (REPO / "utils" / "validate_data_dir.sh").is_file():
        pytest.skip("utils/parse_options.sh or utils/validate_data_dir.sh not there yet")
    work = tmp_path / f"egs_{corpus}"
    work.mkdir()
    for name in ("local", "utils", "path.sh", "db.sh"):
        os.symlink(REPO / "egs" / corpus / name, work / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "local/data.sh", "--corpus", corpus, *map(str, args)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, work / "data" / "all"


def test_data_sh_emodb_with_download(tmp_path):
    make_emodb(tmp_path / "src")
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for wav in sorted((tmp_path / "src" / "wav").iterdir()):
            z.write(wav, f"wav/{wav.name}")
    # The download stage fetches and unpacks the archive; the count check refuses this fraction.
    proc, _ = run_data_sh(tmp_path, "emodb", "--corpus_dir", tmp_path / "dl",
                          "--download_url", archive.as_uri())
    assert (tmp_path / "dl" / "wav" / "03a01Wa.wav").is_file(), proc.stderr
    assert proc.returncode != 0 and "expected 535" in proc.stderr, proc.stderr
    shutil.rmtree(tmp_path / "egs_emodb")
    proc, data_dir = run_data_sh(tmp_path, "emodb", "--corpus_dir", tmp_path / "dl",
                                 "--allow_incomplete", "true")
    assert proc.returncode == 0, proc.stderr
    assert len(load(data_dir)) == len(EMODB_FILES)
    shutil.rmtree(tmp_path / "egs_emodb")
    proc, _ = run_data_sh(tmp_path, "emodb", "--corpus_dir", tmp_path / "none", "--download", "false")
    assert proc.returncode != 0 and "Pass --corpus_dir" in proc.stderr


@pytest.mark.parametrize("corpus", ["iemocap", "meld", "cremad", "ravdess", "custom"])
def test_data_sh(tmp_path, corpus):
    if corpus == "iemocap":
        make_iemocap(tmp_path)
        args = ["--corpus_dir", tmp_path / "IEMOCAP_full_release", "--classes", "6"]
        n = 10
    elif corpus == "meld":
        args = ["--corpus_dir", make_meld(tmp_path), "--audio_dir", tmp_path / "audio"]
        n = 8
    elif corpus == "cremad":
        args = ["--corpus_dir", make_cremad(tmp_path), "--fold_file", tmp_path / "folds.txt"]
        (tmp_path / "folds.txt").write_text("1001 1\n1002 1\n1003 2\n1005 2\n1006 3\n1011 3\n")
        n = 10
    elif corpus == "ravdess":
        args = ["--corpus_dir", make_ravdess(tmp_path), "--download", "false", "--include_song", "true"]
        n = 11
    else:
        args = ["--csv", make_custom(tmp_path, CUSTOM_ROWS), "--labels", "sad,neutral,happy",
                "--num_folds", "2"]
        n = len(CUSTOM_ROWS)
    # The fixtures are tiny, so the published counts refuse them...
    proc, data_dir = run_data_sh(tmp_path, corpus, *args)
    if corpus != "custom":
        assert proc.returncode != 0 and "does not have the expected counts" in proc.stderr, proc.stderr
        shutil.rmtree(tmp_path / f"egs_{corpus}")
        proc, data_dir = run_data_sh(tmp_path, corpus, *args, "--allow_incomplete", "true")
    assert proc.returncode == 0, proc.stderr
    data = load(data_dir)
    assert len(data) == n and (data_dir / "counts").is_file()
    if corpus == "custom":
        assert data.labels("emotion") == ["sad", "neutral", "happy"]

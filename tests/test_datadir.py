"""genser.datadir (writing, loading, splitting), genser.validate and genser.folds (fold selection)."""
import numpy as np
import pytest
import soundfile as sf

from genser.datadir import ATTR_OF_TASK, DataDirError, load_data_dir, read_audio, split_data_dir, write_data_dir
from genser.folds import fold_split, label_balanced_groups, test_folds
from genser.validate import validate_data_dir

EMO = ["neutral", "happy", "angry", "sad"]


def make_records(tmp_path, nspk=6, per_spk=4, folds=None, audio=True):
    """Speakers s1..s<nspk> (odd: f, even: m), fold = speaker index mod 3 + 1 by default."""
    records = []
    for s in range(1, nspk + 1):
        for i in range(per_spk):
            utt = f"s{s}_{i:02d}"
            path = tmp_path / "wav" / f"{utt}.wav"
            if audio:
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, np.zeros(160, dtype=np.float32), 16000)
            fold = folds[s] if folds else str((s - 1) % 3 + 1)
            records.append(dict(utt=utt, path=str(path), spk=f"s{s}", emo=EMO[i % 4],
                                gender="f" if s % 2 else "m", fold=fold, dur=0.01))
    return records


@pytest.fixture
def data_dir(tmp_path):
    return write_data_dir(tmp_path / "data", make_records(tmp_path), labels={"emo": EMO, "gender": ["f", "m"]})


def test_write_load_roundtrip(data_dir):
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "labels.emo", "labels.gender", "spk2utt", "utt2dur", "utt2emo", "utt2fold", "utt2gender",
        "utt2spk", "wav.scp"]
    assert (data_dir / "spk2utt").read_text().splitlines()[0] == "s1 s1_00 s1_01 s1_02 s1_03"
    data = load_data_dir(data_dir)
    assert len(data) == 24 and data.utts[:2] == ["s1_00", "s1_01"]
    assert data.emo["s1_02"] == "angry" and data.gender["s2_00"] == "m" and data.fold["s4_00"] == "1"
    assert data.dur["s1_00"] == 0.01
    assert data.labels("emotion") == EMO and data.labels("gender") == ["f", "m"]
    assert ATTR_OF_TASK == {"emotion": "emo", "gender": "gender"}
    assert data.targets("emotion", ["s1_03", "s1_00"]) == [3, 0]
    assert data.spk2utt()["s2"] == ["s2_00", "s2_01", "s2_02", "s2_03"]
    assert data.audio("s1_00") == (str(data_dir.parent / "wav" / "s1_00.wav"), None, None)
    validate_data_dir(data_dir, check_audio=True)


def test_segments_roundtrip(tmp_path):
    recs = [dict(utt="a_1", path="/x/a.wav", spk="a", rec="a", start=0.0, end=1.5),
            dict(utt="a_2", path="/x/a.wav", spk="a", rec="a", start=1.5, end=3.0)]
    d = write_data_dir(tmp_path / "d", recs)
    assert (d / "wav.scp").read_text() == "a /x/a.wav\n"
    assert (d / "segments").read_text() == "a_1 a 0.000 1.500\na_2 a 1.500 3.000\n"
    data = load_data_dir(d)
    assert data.audio("a_2") == ("/x/a.wav", 1.5, 3.0)
    validate_data_dir(d)
    assert data.subset(["a_1"]).segments == {"a_1": ("a", 0.0, 1.5)}
    # The audio table of extraction, from wav.scp and segments alone: the one parser of both.
    (d / "utt2spk").unlink()
    assert read_audio(d) == {"a_1": ("/x/a.wav", 0.0, 1.5), "a_2": ("/x/a.wav", 1.5, 3.0)}
    (d / "segments").write_text("a_1 a 0.0 1.5\na_2 b 1.5 3.0\n")
    with pytest.raises(DataDirError, match="recording b of segments not in"):
        read_audio(d)
    for line, message in (("a_1 a 2.0 1.0", "bad times"), ("a_1 a x 1.0", "not a number"),
                          ("a_1 a 0.0", "expected 'utt rec start end'")):
        (d / "segments").write_text(line + "\n")
        with pytest.raises(DataDirError, match=message):
            read_audio(d)
    (d / "segments").unlink()
    assert read_audio(d) == {"a": ("/x/a.wav", None, None)}


def test_write_rejects_bad_records(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        write_data_dir(tmp_path / "d", [dict(utt="u", path="p", spk="s", emotion="x")])
    with pytest.raises(ValueError, match="duplicate utterance id u"):
        write_data_dir(tmp_path / "d", [dict(utt="u", path="p", spk="s")] * 2)
    with pytest.raises(ValueError, match="gender must be one of"):
        write_data_dir(tmp_path / "d", [dict(utt="u", path="p", spk="s", gender="x")])
    with pytest.raises(ValueError, match="utt u has emo 'joy', not in the label list"):
        write_data_dir(tmp_path / "d", [dict(utt="u", path="p", spk="s", emo="joy")],
                       labels={"emo": ["sad"]})
    assert not (tmp_path / "d").exists()  # checked before anything is written
    d = write_data_dir(tmp_path / "g", [dict(utt="u", path="p", spk="s", emo="sad")],
                       labels={"emo": ["sad", "joy"], "gender": ["f", "m"]})
    assert (d / "labels.emo").read_text() == "sad\njoy\n" and not (d / "labels.gender").exists()
    with pytest.raises(ValueError, match="emo given for some records"):
        write_data_dir(tmp_path / "d", [dict(utt="u", path="p", spk="s", emo="a"),
                                        dict(utt="v", path="p", spk="s")])


def problems_of(d, check_audio=False):
    with pytest.raises(DataDirError) as err:
        validate_data_dir(d, check_audio=check_audio)
    return err.value.problems, str(err.value)


def test_validator_unsorted_and_duplicate(data_dir):
    lines = (data_dir / "utt2emo").read_text().splitlines()
    (data_dir / "utt2emo").write_text("\n".join([lines[1], lines[0]] + lines[2:] + [lines[3]]) + "\n")
    problems, msg = problems_of(data_dir)
    assert any("utt2emo:2: not sorted: id s1_00 comes after s1_01" in p for p in problems)
    assert any("utt2emo:25: duplicate id s1_03" in p for p in problems)
    assert str(data_dir / "utt2emo") in msg


def test_validator_mismatched_utt_sets(data_dir):
    lines = (data_dir / "utt2gender").read_text().splitlines()
    (data_dir / "utt2gender").write_text("\n".join(lines[1:]) + "\nzz_extra f\n")
    problems, _ = problems_of(data_dir)
    assert any(p.endswith("utt2gender: utt s1_00 of " + str(data_dir / "utt2spk") + " is missing")
               for p in problems)
    assert any("utt2gender: utt zz_extra is not in" in p for p in problems)


def test_validator_labels_outside_list(data_dir):
    text = (data_dir / "utt2emo").read_text().replace("s2_01 happy", "s2_01 joyful")
    (data_dir / "utt2emo").write_text(text)
    (data_dir / "utt2gender").write_text((data_dir / "utt2gender").read_text().replace("s3_00 f", "s3_00 x"))
    problems, _ = problems_of(data_dir)
    assert any("utt2emo: utt s2_01: label 'joyful' not in" in p for p in problems)
    assert any("utt2gender: utt s3_00: label 'x' not in" in p for p in problems)
    assert len(problems) == 2


def test_validator_spk2utt_inconsistent(data_dir):
    lines = (data_dir / "spk2utt").read_text().splitlines()
    lines[0] = "s1 s1_00 s1_01 s1_02"  # s1_03 dropped
    lines[1] = lines[1] + " s1_03"  # ... and put under s2
    (data_dir / "spk2utt").write_text("\n".join(lines) + "\n")
    problems, _ = problems_of(data_dir)
    assert any("spk2utt: speaker s1: utterances" in p for p in problems)
    assert any("spk2utt: speaker s2: utterances" in p for p in problems)
    (data_dir / "spk2utt").unlink()
    problems, _ = problems_of(data_dir)
    assert "spk2utt: missing (required file)" in problems[0]


def test_validator_missing_and_unreadable_audio(data_dir, tmp_path):
    (tmp_path / "wav" / "s2_03.wav").unlink()
    (tmp_path / "wav" / "s3_01.wav").write_bytes(b"not a wav")
    validate_data_dir(data_dir, check_audio=False)  # paths are not looked at
    problems, _ = problems_of(data_dir, check_audio=True)
    assert any("wav.scp: id s2_03: audio file not found" in p for p in problems)
    assert any("wav.scp: id s3_01: unreadable audio" in p for p in problems)
    assert len(problems) == 2


def test_validator_reports_every_problem_at_once(data_dir):
    (data_dir / "utt2fold").write_text((data_dir / "utt2fold").read_text().replace("s1_00 1\n", ""))
    (data_dir / "utt2dur").write_text((data_dir / "utt2dur").read_text().replace("s1_01 0.010", "s1_01 -1"))
    problems, _ = problems_of(data_dir)
    assert len(problems) == 2


def test_split_data_dir(data_dir):
    dirs = split_data_dir(data_dir, 5)
    assert [d.name for d in dirs] == ["1", "2", "3", "4", "5"]
    parts = [load_data_dir(d) for d in dirs]
    assert [len(p) for p in parts] == [5, 5, 5, 5, 4]
    assert sum((p.utts for p in parts), []) == load_data_dir(data_dir).utts  # contiguous, in order
    for d, p in zip(dirs, parts):
        validate_data_dir(d)
        assert (d / "labels.emo").read_text() == (data_dir / "labels.emo").read_text()
        assert set(p.wav) == set(p.utts) == set(p.fold)
    assert parts[1].spk2utt() == {"s2": ["s2_01", "s2_02", "s2_03"], "s3": ["s3_00", "s3_01"]}
    with pytest.raises(ValueError, match="cannot split 24 utterances into 30"):
        split_data_dir(data_dir, 30)


def test_test_folds_and_fold_split(data_dir):
    data = load_data_dir(data_dir)
    assert test_folds(data) == ["1", "2", "3"]
    train, dev, test = fold_split(data, "2", dev_ratio=0.25, seed=0)
    assert test == [u for u in data.utts if data.spk[u] in ("s2", "s5")]
    dev_spk = {data.spk[u] for u in dev}
    train_spk = {data.spk[u] for u in train}
    assert len(dev_spk) == 1 and not dev_spk & train_spk and not dev_spk & {"s2", "s5"}
    assert len(train) + len(dev) + len(test) == 24 and train == sorted(train)
    assert fold_split(data, "2", dev_ratio=0.25, seed=0) == (train, dev, test)  # seeded
    assert fold_split(data, 2, dev_ratio=0.0)[1] == []
    with pytest.raises(ValueError, match="fold '7' is not a test fold"):
        fold_split(data, "7")


def test_dev_and_train_folds_are_never_test(tmp_path):
    folds = {1: "1", 2: "2", 3: "dev", 4: "train", 5: "train", 6: "1"}
    d = write_data_dir(tmp_path / "d", make_records(tmp_path, folds=folds, audio=False))
    data = load_data_dir(d)
    assert test_folds(data) == ["1", "2"]
    train, dev, test = fold_split(data, "1")
    assert {data.spk[u] for u in dev} == {"s3"}
    assert {data.spk[u] for u in test} == {"s1", "s6"}
    assert {data.spk[u] for u in train} == {"s2", "s4", "s5"}
    with pytest.raises(ValueError, match="not a test fold"):
        fold_split(data, "dev")


def test_validate_cli(data_dir, capsys):
    from genser.bin import validate_data_dir as cli

    assert cli.main([str(data_dir)]) == 0
    (data_dir / "utt2spk").write_text("b s\na s\n")
    assert cli.main([str(data_dir), "--check_audio", "false"]) == 1


def test_label_balanced_groups_deal_each_class_evenly():
    # two single-class speakers per class and two mixed ones: each of 2 groups gets one of each
    counts = {"a1": [10, 0], "a2": [10, 0], "b1": [0, 10], "b2": [0, 10], "m1": [5, 5], "m2": [5, 5]}
    for seed in range(5):
        groups = label_balanced_groups(counts, 2, seed)
        assert sorted(s for g in groups for s in g) == sorted(counts)  # a partition
        for g in groups:
            assert [sum(counts[s][c] for s in g) for c in (0, 1)] == [15, 15], groups
        assert groups == label_balanced_groups(counts, 2, seed)  # deterministic
    # three groups of a skewed corpus: every class in every group where the speakers allow it
    counts = {f"s{i}": [8 if i % 3 == c else 1 for c in range(3)] for i in range(9)}
    groups = label_balanced_groups(counts, 3, 0)
    assert all(sorted(int(s[1:]) % 3 for s in g) == [0, 1, 2] for g in groups), groups

"""Issue #22: a full disk during training, the identity refusal naming what changed, degenerate
folds, a replaced or truncated audio file, and the recipe's up-front checks."""
import builtins
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import fold_dir_of, make_experiment, train_args

from genser.bin import train


class FullDisk:
    """A file whose writes fail as on a full disk (what a 2 MB tmpfs does)."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.badinput
def test_a_full_disk_at_the_snapshot_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """Case 3 (simulated): the per-epoch snapshot's write fails with ENOSPC."""
    root = make_experiment(tmp_path)

    def full_snapshots(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        return FullDisk(f) if "snapshots" in str(file) and "w" in mode else f

    monkeypatch.setattr("genser.fileio.open", full_snapshots, raising=False)
    with pytest.raises(SystemExit) as exc:
        train.main(train_args(root, "--epochs", "2"))
    assert exc.value.code == 1
    text = (fold_dir_of(root) / "train.log").read_text()
    error = [line for line in text.splitlines() if "ERROR" in line]
    assert len(error) == 1, text[-2000:]
    assert "cannot write" in error[0] and "snapshots/epoch0001.pt" in error[0]
    assert "No space left on device" in error[0]
    assert "enforce fail" not in text and "Traceback" not in text
    assert not list((fold_dir_of(root) / "snapshots").glob(".*.tmp"))  # no half-written temp left


def _mount_tmpfs(folder, size):
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")


@pytest.mark.badinput
def test_a_real_full_disk_during_training_is_one_line_naming_the_file(tmp_path):
    """Case 3 on a real 2 MB tmpfs (root only), filled up to 24 KB before training."""
    root = make_experiment(tmp_path)
    exp = root / "exp"
    _mount_tmpfs(exp, "2m")
    try:
        st = os.statvfs(exp)
        with open(exp / "filler", "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 24 * 1024))
        res = subprocess.run([sys.executable, "-m", "genser.bin.train", *train_args(root, "--epochs", "2")],
                             capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
        assert res.returncode == 1
        assert "enforce fail" not in res.stderr and "Traceback" not in res.stderr, res.stderr[-3000:]
        last = res.stderr.strip().splitlines()[-1]
        assert "No space left on device" in last and f"cannot write {exp}/fold_1/" in last, last
    finally:
        subprocess.run(["umount", str(exp)], check=False)


# ---- the identity refusal names what changed -------------------------------------------------
def _train_error(root, *extra):
    with pytest.raises(SystemExit):
        train.main(train_args(root, *extra))
    return [line for line in (fold_dir_of(root) / "train.log").read_text().splitlines() if "ERROR" in line][-1]


def test_the_identity_refusal_names_the_settings_that_changed(tmp_path):
    root = make_experiment(tmp_path)
    train.main(train_args(root, "--epochs", "1"))
    done = (fold_dir_of(root) / "train.done").read_text()
    assert done.startswith("identity ") and "\nidentity_parts {" in done
    error = _train_error(root, "--epochs", "2", "--lr", "0.5")
    assert "holds a model of another experiment" in error
    assert "epochs: 1 -> 2" in error and "lr: " in error and "features" not in error


def test_the_identity_refusal_names_re_extracted_features_and_changed_data(tmp_path):
    """Case 8 downstream: a re-extracted dump (other arks) changes training's identity."""
    import numpy as np
    from feature_fixtures import write_feats_dir

    root = make_experiment(tmp_path)
    train.main(train_args(root, "--epochs", "1"))
    feats = {u: np.ones((6, 2, 8), np.float32) for u in (root / "data" / "utt2spk").read_text().split()[::2]}  # utt ids
    write_feats_dir(root / "dump", feats, meta={"frontend": {"type": "test"}, "pooling": "none"})
    error = _train_error(root, "--epochs", "1")
    assert "what changed: features: " in error and "epochs" not in error
    utt2emo = root / "data" / "utt2emo"
    lines = utt2emo.read_text().splitlines()
    utt2emo.write_text("\n".join(lines[:-1] + [lines[-1].split()[0] + " " + lines[0].split()[1]]) + "\n")
    assert "data: " in _train_error(root, "--epochs", "1")


def test_an_old_train_done_with_the_hash_alone_is_still_read(tmp_path):
    root = make_experiment(tmp_path)
    train.main(train_args(root, "--epochs", "1"))
    done = fold_dir_of(root) / "train.done"
    old = "".join(line + "\n" for line in done.read_text().splitlines() if not line.startswith("identity_parts"))
    done.write_text(old)
    train.main(train_args(root, "--epochs", "1"))  # same run: nothing to do
    assert "is trained (identity" in (fold_dir_of(root) / "train.log").read_text()
    error = _train_error(root, "--epochs", "3")
    assert "data, features or settings changed" in error and "records no more than the hash" in error


# ---- case 4: a truncated WAV file ------------------------------------------------------------
def _truncated_wav(path):
    """1 s of 16-bit 44.1 kHz audio whose file was cut after 44078 of its 88200 data bytes."""
    import numpy as np
    import soundfile as sf

    sf.write(path, 0.1 * np.sin(np.arange(44100) / 10.0), 44100, subtype="PCM_16", format="WAV")
    data = path.read_bytes()
    assert data[36:40] == b"data" and int.from_bytes(data[40:44], "little") == 88200
    path.write_bytes(data[:44 + 44078])
    return path


@pytest.mark.badinput
def test_a_truncated_wav_is_refused_naming_the_file(tmp_path):
    from genser.audio import AudioError, AudioReader

    wav = _truncated_wav(tmp_path / "cut.wav")
    reader = AudioReader(target_sr=44100)
    with pytest.raises(AudioError, match=f"utt u1: truncated WAV file {wav}: its header declares 88200 bytes "
                                         f"of audio, the file holds 44078"):
        reader("u1", str(wav))
    with pytest.raises(AudioError, match="truncated WAV"):
        reader.info("u1", str(wav))


@pytest.mark.badinput
def test_validation_refuses_a_truncated_wav(tmp_path):
    from genser.datadir import DataDirError, write_data_dir
    from genser.validate import validate_data_dir

    wav = _truncated_wav(tmp_path / "cut.wav")
    d = write_data_dir(tmp_path / "data", [dict(utt="s1_1", path=str(wav), spk="s1", emo="happy")])
    with pytest.raises(DataDirError, match=f"id s1_1: truncated WAV file {wav}"):
        validate_data_dir(d, check_audio=True)


def test_complete_wavs_and_unknown_sizes_are_not_judged(tmp_path):
    import numpy as np
    import soundfile as sf

    from genser.audio import wav_shortfall

    ok = tmp_path / "ok.wav"
    sf.write(ok, np.zeros(100), 16000, subtype="PCM_16")
    assert wav_shortfall(ok) is None
    streamed = bytearray(ok.read_bytes())
    streamed[40:44] = b"\xff\xff\xff\xff"  # a header written to a pipe: length unknown
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed[:100]))
    assert wav_shortfall(tmp_path / "streamed.wav") is None
    flac = tmp_path / "x.flac"
    sf.write(flac, np.zeros(100), 16000, format="FLAC")
    assert wav_shortfall(flac) is None


# ---- case 8: audio replaced in place ---------------------------------------------------------
@pytest.mark.badinput
def test_audio_replaced_in_place_is_re_extracted_naming_the_utterance(tmp_path, capsys):
    import shutil

    import numpy as np
    from test_extract import job_args, make_data, merge_args

    from genser.bin import extract_feats
    from genser.features import FeatureReader

    data, out = make_data(tmp_path, n=4, nj=1), tmp_path / "dump"
    extract_feats.main(job_args(data, out, 1, 1))
    extract_feats.main(merge_args(data, out, 1))
    before = FeatureReader(out)["utt1"].copy()
    shutil.copy(tmp_path / "wav" / "u3.wav", tmp_path / "wav" / "u1.wav")  # another clip over a listed one
    capsys.readouterr()
    extract_feats.main(job_args(data, out, 1, 1))
    err = capsys.readouterr().err
    assert "already done" not in err
    assert "1 audio file(s) changed since they were extracted" in err
    assert f"utt utt1: {tmp_path / 'wav' / 'u1.wav'} (size, mtime, ctime" in err
    extract_feats.main(merge_args(data, out, 1))
    after = FeatureReader(out)
    assert after["utt1"].shape != before.shape or not np.allclose(after["utt1"], before)
    assert np.allclose(after["utt1"], after["utt3"])
    extract_feats.main(job_args(data, out, 1, 1))  # unchanged since: skipped
    assert "already done" in capsys.readouterr().err


def test_a_same_size_copy_that_keeps_the_mtime_is_re_extracted(tmp_path, capsys):
    # cp -p of a clip of the same length: size and mtime as before, only the ctime tells
    from test_extract import job_args, make_data

    from genser.bin import extract_feats

    data, out = make_data(tmp_path, n=4, nj=1), tmp_path / "dump"
    extract_feats.main(job_args(data, out, 1, 1))
    wav = tmp_path / "wav" / "u1.wav"
    st = os.stat(wav)
    raw = bytearray(wav.read_bytes())
    raw[-400:] = bytes(reversed(raw[-400:]))  # other samples, the same length
    time.sleep(0.01)  # a ctime that differs on coarse clocks too
    wav.write_bytes(bytes(raw))
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(wav).st_size, os.stat(wav).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    capsys.readouterr()
    extract_feats.main(job_args(data, out, 1, 1))
    err = capsys.readouterr().err
    assert "already done" not in err and "1 audio file(s) changed since they were extracted" in err


def test_stamps_from_before_the_ctime_still_match(tmp_path):
    from genser.extraction import changed_audio

    utts = {"u": ("a.wav", None, None)}
    assert changed_audio({"u": "10 20"}, {"u": "10 20 30"}, utts) == []
    assert changed_audio({"u": "10 20 30"}, {"u": "10 20 31"}, utts) == [
        "utt u: a.wav (size, mtime, ctime 10 20 30 -> 10 20 31)"]
    assert changed_audio({"u": "10 20"}, {"u": "11 20 30"}, utts)


# ---- stage 1: the clip warnings reach the console --------------------------------------------
def test_the_merge_sums_up_short_silent_and_clipped_clips(tmp_path, capsys):
    import numpy as np
    import soundfile as sf
    from test_extract import job_args, make_data, merge_args

    from genser.bin import extract_feats

    data, out = make_data(tmp_path, n=4, nj=2), tmp_path / "dump"
    sf.write(tmp_path / "wav" / "u0.wav", np.zeros(16000, np.float32), 16000)  # job 1: silent
    sf.write(tmp_path / "wav" / "u2.wav", 0.1 * np.ones(800, np.float32), 16000)  # job 2: short (0.05 s)
    for job in (1, 2):
        extract_feats.main(job_args(data, out, job))
    capsys.readouterr()
    extract_feats.main(merge_args(data, out))
    err = capsys.readouterr().err
    listing = out / "suspect_audio.txt"
    assert f"suspect audio: 1 short, 1 silent (2 clips; list: {listing}; the warnings: {out}/log/extract.*.log)" in err
    assert listing.read_text() == f"utt0 silent {tmp_path}/wav/u0.wav\nutt2 short {tmp_path}/wav/u2.wav\n"
    # A re-run skips the finished jobs, and still sums them up.
    for job in (1, 2):
        extract_feats.main(job_args(data, out, job))
    extract_feats.main(merge_args(data, out))
    assert "suspect audio: 1 short, 1 silent" in capsys.readouterr().err


# ---- cases 5-7: degenerate folds -------------------------------------------------------------
def _fold_data(root, extra=()):
    """4 speakers (one fold each) x 4 classes x 3 utterances, plus ``extra`` (utt, spk, emo)."""
    from genser.datadir import write_data_dir

    labels = ["neutral", "happy", "angry", "sad"]
    recs = [dict(utt=f"s{s}_{emo}_{i}", path=f"/x/s{s}_{emo}_{i}.wav", spk=f"s{s}", emo=emo, fold=str(s + 1))
            for s in range(4) for emo in labels for i in range(3)]
    for utt, spk, emo in extra:
        recs.append(dict(utt=utt, path=f"/x/{utt}.wav", spk=spk, emo=emo, fold=spk.lstrip("s")))
    return write_data_dir(root / "data", recs)


def _make_labels(root, *extra):
    from genser.bin import make_labels

    make_labels.main(["--data_dir", str(root / "data"), "--out_dir", str(root / "exp"), *extra])


@pytest.mark.badinput
@pytest.mark.parametrize("extra, fold, why", [
    # case 5: a speaker (here its own fold) with one utterance
    ([("s9_lone", "s9", "happy")], "9", "1 test utterance(s), fewer than the minimum 5"),
    # case 6: a class with one utterance has no training example in its test fold
    ([("s2_bored_0", "s2", "bored")], "2", "class bored has a single utterance (s2_bored_0), in this fold"),
    # case 7: a class that only the test fold's speaker has
    ([("s3_bored_0", "s3", "bored"), ("s3_bored_1", "s3", "bored")], "3",
     "class bored is absent from the fold's training speakers (only s3 of this fold have it)"),
])
def test_degenerate_folds_are_refused_then_marked_when_allowed(tmp_path, capsys, extra, fold, why):
    _fold_data(tmp_path, extra)
    with pytest.raises(SystemExit) as exc:
        _make_labels(tmp_path)
    message = str(exc.value.code)
    assert message.startswith("error: 1 of ") and f"fold {fold}: {why}" in message
    assert "--allow_degenerate_folds true" in message
    assert not (tmp_path / "exp" / "folds.txt").exists()
    capsys.readouterr()
    _make_labels(tmp_path, "--allow_degenerate_folds", "true")
    err = capsys.readouterr().err
    assert f"DEGENERATE fold {fold}: {why}" in err and "running 1 degenerate fold(s)" in err
    listing = (tmp_path / "exp" / "degenerate_folds.txt").read_text()
    assert listing.startswith(f"{fold}\t{why}")
    # Once the data are fixed (here: the fold left out), the stale list goes.
    folds = " ".join(f for f in ("1", "2", "3", "4") if f != fold)
    _make_labels(tmp_path, "--folds", folds)
    assert not (tmp_path / "exp" / "degenerate_folds.txt").exists()


def test_balanced_folds_pass_and_the_minimum_is_an_option(tmp_path):
    _fold_data(tmp_path)
    _make_labels(tmp_path)  # 12 utterances a fold, every class everywhere
    assert (tmp_path / "exp" / "folds.txt").read_text().split() == ["1", "2", "3", "4"]
    with pytest.raises(SystemExit, match="4 of 4 test folds .* are degenerate"):
        _make_labels(tmp_path, "--min_fold_utts", "13")


def test_results_md_marks_a_degenerate_fold(tmp_path):
    from test_score import make_decodes, section, write_tree

    from genser.bin import score

    exp = tmp_path / "emotion_fbank"
    write_tree(exp / "seed0", make_decodes())
    (exp / "degenerate_folds.txt").write_text("2\t1 test utterance(s), fewer than the minimum 5\n")
    score.main(["--exp_dir", str(exp / "seed0")])
    text = (exp / "seed0" / "RESULTS.md").read_text()
    assert "> **note**: degenerate fold 2 † is in these means (--allow_degenerate_folds): 1 test utterance(s)" in text
    _, rows = section(text, "Per fold")
    assert [r[0] for r in rows] == ["1", "2 †"]


def test_empty_seeds_or_models_are_refused_up_front(tmp_path):
    from test_recipe import make_recipe, run_recipe

    recipe = make_recipe(tmp_path)
    for option, value in (("--seeds", ""), ("--models", " ")):
        res = run_recipe(recipe, "--stage", "5", option, value, timeout=120)
        assert res.returncode == 2, res.stderr[-2000:]
        assert f"Error: {option} is empty" in res.stderr and "Traceback" not in res.stderr

"""The bad-input matrix: untrusted checkpoints, broken audio, missing folds, near-duplicate ids,
non-UTF-8 lists, full disks, copied dumps and clipping. One test (or a few) per case; each
failed on the code before the fix."""
import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from genser.bin import infer
from genser.checkpoint import save_model
from genser.models import build_model

pytestmark = pytest.mark.badinput

LABELS = ["neutral", "happy", "angry", "sad"]


class _Evil:
    """Unpickling this runs code: it writes ``marker`` (as a real attack would run anything)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def evil_checkpoint(path, marker):
    torch.save({"model": _Evil(marker)}, path)
    return path


def tiny_wavlm_checkpoint(path):
    from test_frontend import tiny_wavlm_checkpoint as make

    make(path)
    return path


def save_genser_model(path, spec, num_layers, dim, nan=False):
    """A small classifier model.pt whose 'feats' entry names ``spec`` (as training writes it)."""
    torch.manual_seed(0)
    model = build_model({"model": "classifier"}, LABELS, input_dim=dim, num_layers=num_layers)
    if nan:
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
    meta = {"frontend": spec, "layers": list(range(num_layers)), "num_layers": num_layers, "dim": dim,
            "pooling": "mean", "dtype": "float32"}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model, extra={"feats": meta})
    return Path(path)


def fbank_model(path, nan=False):
    return save_genser_model(path, {"type": "s3prl", "name": "fbank"}, 1, 240, nan=nan)


def write_tone(path, seconds=0.5, sr=16000, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


# ---- 1. untrusted model.pt -----------------------------------------------------------------
def test_case1_stored_frontend_checkpoint_cannot_run_code(tmp_path):
    """distiller_local unpickles with weights_only=False: the checkpoint's code must not run,
    whether the file lies next to model.pt or elsewhere; the error is one line naming both."""
    marker = tmp_path / "PWNED"
    exp = tmp_path / "exp"
    evil_checkpoint(tmp_path / "evil.ckpt", marker)
    evil_checkpoint(exp.parent / "exp_evil.ckpt", marker)
    exp.mkdir()
    evil_checkpoint(exp / "evil.ckpt", marker)
    wav = write_tone(tmp_path / "a.wav")
    for name, path in (("inside.pt", "evil.ckpt"), ("outside.pt", str(tmp_path / "evil.ckpt")),
                       ("dotdot.pt", "../exp_evil.ckpt")):
        model = save_genser_model(exp / name, {"type": "s3prl", "name": "distiller_local", "path": path}, 1, 80)
        result = subprocess.run([sys.executable, "-m", "genser.bin.infer", "--model", str(model), str(wav)],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert not marker.exists(), f"{name}: the checkpoint's pickled code ran"
        assert result.returncode != 0 and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(model) in lines[0] and path in lines[0] and "Traceback" not in result.stderr


def test_case1_urls_are_refused_without_opt_in(tmp_path, capsys):
    model = save_genser_model(tmp_path / "m.pt", {"type": "s3prl", "name": "hubert_url",
                                                  "path": "https://evil.example/x.pt"}, 1, 80)
    with pytest.raises(SystemExit) as err:
        infer.main(["--model", str(model), str(write_tone(tmp_path / "a.wav"))])
    msg = str(err.value.code)
    assert "\n" not in msg and str(model) in msg and "https://evil.example/x.pt" in msg
    assert "download source" in msg


def test_case1_relative_path_resolves_against_model_folder_and_opt_ins_work(tmp_path, monkeypatch, capsys):
    """A safe checkpoint in the model's folder loads (even run from another CWD holding an evil
    file of the same name), and so does one outside it; the opt-ins work too."""
    marker = tmp_path / "PWNED"
    exp, cwd, ext = tmp_path / "exp", tmp_path / "cwd", tmp_path / "ext"
    for d in (exp, cwd, ext):
        d.mkdir()
    tiny_wavlm_checkpoint(exp / "frontend.pt")
    evil_checkpoint(cwd / "frontend.pt", marker)
    shutil.copy(exp / "frontend.pt", ext / "frontend.pt")
    wav = str(write_tone(tmp_path / "a.wav"))
    monkeypatch.chdir(cwd)

    inside = save_genser_model(exp / "in.pt", {"type": "s3prl", "name": "wavlm_local", "path": "frontend.pt"}, 3, 32)
    infer.main(["--model", str(inside), wav])
    assert not marker.exists()
    out = capsys.readouterr().out.splitlines()
    assert out[0].split("\t") == ["id", "label", *LABELS] and out[1].split("\t")[0] == wav

    # trust follows what the file is, not where it lies: a weights-only checkpoint elsewhere loads
    outside = save_genser_model(exp / "out.pt", {"type": "s3prl", "name": "wavlm_local",
                                                 "path": str(ext / "frontend.pt")}, 3, 32)
    infer.main(["--model", str(outside), wav])
    assert len(capsys.readouterr().out.splitlines()) == 2 and not marker.exists()
    infer.main(["--model", str(outside), "--trust_frontend", wav])
    assert len(capsys.readouterr().out.splitlines()) == 2
    infer.main(["--model", str(outside), "--frontend_path", str(ext / "frontend.pt"), wav])
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_case1_transformers_folder_from_a_model_is_safetensors_only(tmp_path):
    """A stored hf spec never loads pickled pytorch_model.bin (nor remote code)."""
    from test_frontend import save_tiny_hf

    from genser.frontend import UntrustedFrontendError, build_frontend
    from genser.trust import stored_frontend_spec

    folder = tmp_path / "exp" / "w2v"
    save_tiny_hf(folder, "wavlm")
    model = save_genser_model(tmp_path / "exp" / "m.pt", {"type": "hf", "path": "w2v"}, 3, 32)
    spec = stored_frontend_spec({"type": "hf", "path": "w2v"}, model)
    assert spec["path"] == str(folder.resolve())
    assert build_frontend(spec, safetensors_only=True).num_layers == 3
    # pickled weights instead (here a malicious pickle): refused, never unpickled
    marker = tmp_path / "PWNED"
    for f in folder.glob("*.safetensors"):
        f.unlink()
    evil_checkpoint(folder / "pytorch_model.bin", marker)
    with pytest.raises(UntrustedFrontendError, match="safetensors"):
        build_frontend(spec, safetensors_only=True)
    assert not marker.exists()


# ---- 2. genser-infer: NaN models, bad inputs ----------------------------------------------
def test_case2_infer_refuses_a_model_with_nan_weights(tmp_path, capsys):
    model = fbank_model(tmp_path / "nan.pt", nan=True)
    with pytest.raises(SystemExit) as err:
        infer.main(["--model", str(model), str(write_tone(tmp_path / "a.wav"))])
    msg = str(err.value.code)
    assert str(model) in msg and "non-finite" in msg and "\n" not in msg
    assert capsys.readouterr().out == ""


def test_case2_infer_reports_each_bad_file_and_goes_on(tmp_path, capsys):
    model = fbank_model(tmp_path / "m.pt")
    good1, good2 = str(write_tone(tmp_path / "good1.wav")), str(write_tone(tmp_path / "good2.wav", amp=0.1))
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    missing = str(tmp_path / "missing.wav")
    with pytest.raises(SystemExit) as err:
        infer.main(["--model", str(model), good1, str(empty), str(corrupt), missing, good2])
    assert "3 of 5" in str(err.value.code)
    captured = capsys.readouterr()
    rows = [line.split("\t") for line in captured.out.splitlines()]
    assert rows[0] == ["id", "label", *LABELS]
    assert [r[0] for r in rows[1:]] == [good1, good2] and all(len(r) == 2 + len(LABELS) for r in rows)
    errors = [line for line in captured.err.splitlines() if "ERROR" in line]
    assert len(errors) == 3 and "Traceback" not in captured.err
    for bad, line in zip((str(empty), str(corrupt), missing), errors):
        assert bad in line


# ---- 3. scoring: a listed fold without hyp.tsv ---------------------------------------------
def test_case3_score_refuses_a_listed_fold_without_hyp(tmp_path):
    from test_score import make_decodes, write_tree

    from genser.bin import score

    decodes = make_decodes()
    del decodes[("genser", "nsteps1_eta0.0", "2")]
    exp_dir = write_tree(tmp_path / "x", decodes)
    (exp_dir / "folds.txt").write_text("1\n2\n")
    with pytest.raises(SystemExit) as err:
        score.main(["--exp_dir", str(exp_dir)])
    msg = str(err.value.code)
    assert "fold 2" in msg and str(exp_dir / "genser" / "fold_2" / "decode_nsteps1_eta0.0" / "hyp.tsv") in msg
    assert not (exp_dir / "RESULTS.md").exists()


# ---- 7. full disk --------------------------------------------------------------------------
class _FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, f, err):
        self._f, self._err = f, err

    def write(self, *_):
        raise OSError(self._err, os.strerror(self._err))

    writelines = write

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EFBIG])
def test_case7_full_disk_names_the_destination_and_leaves_no_temp(tmp_path, monkeypatch, err):
    import genser.fileio as fileio

    real_open = open
    monkeypatch.setattr(fileio, "open", lambda *a, **k: _FullDisk(real_open(*a, **k), err), raising=False)
    dest = tmp_path / "utt2emo"
    with pytest.raises(OSError) as info:
        fileio.write_kv(dest, {"u1": "angry"})
    assert info.value.errno == err and str(dest) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the destination nor the temp file


def test_case7_full_disk_while_writing_an_ark(tmp_path, monkeypatch):
    import kaldiio

    from feature_fixtures import write_feats_dir

    def full(self, *_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(kaldiio.WriteHelper, "__call__", full)
    feats = {"u1": np.ones((3, 1, 2), np.float32)}
    with pytest.raises(OSError) as info:
        write_feats_dir(tmp_path / "dump", feats, {"pooling": "none"})
    assert info.value.errno == errno.ENOSPC
    assert "u1" in str(info.value) and str(tmp_path / "dump" / "feats.ark") in str(info.value)
    assert list((tmp_path / "dump").iterdir()) == []


# ---- 8. copied dumps read their own arks ---------------------------------------------------
def test_case8_copied_dump_reads_its_own_arks(tmp_path):
    from genser.bin import extract_feats
    from genser.features import FeatureReader

    recipe = tmp_path / "recipe"
    (recipe / "data").mkdir(parents=True)
    wavs = {f"u{i}": write_tone(tmp_path / f"u{i}.wav", seconds=0.3, amp=0.1 * (i + 1)) for i in range(3)}
    (recipe / "data" / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in wavs.items()))
    dump = recipe / "dump"
    extract_feats.main(["--data_dir", str(recipe / "data"), "--out_dir", str(dump), "--job", "1",
                        "--frontend", "fbank", "--pooling", "mean"])
    extract_feats.main(["--merge", "--out_dir", str(dump), "--nj", "1"])
    want = {u: FeatureReader(dump)[u] for u in wavs}
    copy = tmp_path / "copy"
    shutil.copytree(recipe, copy, symlinks=True)  # cp -a
    assert str(recipe) not in (copy / "dump" / "feats.scp").read_text()
    (dump / "feats.1.ark").write_bytes(b"")  # the original's arks change (a re-run there) ...
    shutil.rmtree(recipe)  # ... or vanish
    reader = FeatureReader(copy / "dump")
    for u in wavs:
        np.testing.assert_array_equal(reader[u], want[u])


def test_case8_old_absolute_scps_stay_readable(tmp_path):
    from feature_fixtures import write_feats_dir
    from genser.features import FeatureReader

    feats = {"u1": np.ones((2, 1, 3), np.float32)}
    write_feats_dir(tmp_path / "dump", feats, {"pooling": "none"})
    scp = tmp_path / "dump" / "feats.scp"
    utt, loc = scp.read_text().split()
    scp.write_text(f"{utt} {(tmp_path / 'dump' / loc).resolve()}\n")  # as older genser wrote it
    np.testing.assert_array_equal(FeatureReader(tmp_path / "dump")["u1"], feats["u1"])


# ---- 4. short, empty and silent clips ------------------------------------------------------
def test_case4_short_silent_and_empty_clips(tmp_path, caplog):
    from genser.audio import AudioError, AudioReader

    short = tmp_path / "short.wav"
    sf.write(short, 0.1 * np.ones(800, np.float32), 16000)  # 0.05 s
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(2 * 22050, np.float32), 22050, subtype="PCM_16")  # 2 s of digital silence
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    normal = write_tone(tmp_path / "normal.wav")
    reader = AudioReader(min_duration=0.1)
    with caplog.at_level(logging.WARNING, logger="genser.audio"):
        reader("u_normal", normal)
        assert caplog.records == []
        reader("u_short", short)
        reader("u_silent", silent)
    short_msg, silent_msg = (r.getMessage() for r in caplog.records)
    assert "u_short" in short_msg and str(short) in short_msg and "shorter than" in short_msg
    assert "u_silent" in silent_msg and str(silent) in silent_msg and "silence" in silent_msg
    assert (reader.conversions["short"], reader.conversions["silent"]) == (1, 1)
    with pytest.raises(AudioError, match=f"utt u_empty: empty audio \\(0 samples\\) in {empty}"):
        reader("u_empty", empty)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genser.audio"):
        AudioReader(min_duration=0.01)("u_short", short)  # the minimum is an option
    assert caplog.records == []


def test_case4_extraction_option_and_report(tmp_path, capsys):
    from genser.bin import extract_feats

    (tmp_path / "data").mkdir()
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "data" / "wav.scp").write_text(f"u1 {write_tone(tmp_path / 'a.wav', seconds=0.06)}\n"
                                               f"u2 {tmp_path / 'silent.wav'}\n")
    argv = ["--data_dir", str(tmp_path / "data"), "--out_dir", str(tmp_path / "dump"), "--pooling", "mean"]
    capsys.readouterr()
    extract_feats.main(argv + ["--min_duration", "0.05"])  # main logs to stderr (setup_logging)
    text = capsys.readouterr().err
    assert "utt u1" not in text and "utt u2: digital silence" in text and "1 silent" in text
    (tmp_path / "dump" / "feats.1.done").unlink()
    extract_feats.main(argv)  # default minimum 0.1 s
    text = capsys.readouterr().err
    assert f"utt u1: 0.060 s of audio (960 samples) in {tmp_path / 'a.wav'}" in text and "1 short" in text


# ---- 9. clipping ---------------------------------------------------------------------------
def test_case9_clipping_is_reported_only_for_clipped_files(tmp_path, caplog):
    from genser.audio import AudioReader

    speech = np.random.default_rng(0).standard_normal(22050) * np.hanning(22050)  # speech-like peaks
    normalised = tmp_path / "normalised.wav"  # peak normalised to exactly 1.0: not clipped
    sf.write(normalised, (speech / np.abs(speech).max()).astype(np.float32), 22050, subtype="FLOAT")
    clipped = tmp_path / "clipped.wav"  # driven into full scale, then hard-limited
    sf.write(clipped, np.clip(speech / 2, -1, 1).astype(np.float32), 22050, subtype="PCM_16")
    reader = AudioReader(target_sr=16000)  # resampling overshoots 1.0 on both
    with caplog.at_level(logging.INFO, logger="genser.audio"):
        reader("u_norm", normalised)
        assert not [r for r in caplog.records if _about_clipping(r)]
        reader("u_clip", clipped)
        reader("u_clip2", clipped)
    msgs = [r.getMessage() for r in caplog.records if _about_clipping(r)]
    assert len(msgs) == 2 and all(str(clipped) in m for m in msgs)  # every clipped file, by name
    assert "u_clip" in msgs[0] and "u_clip2" in msgs[1] and "full scale" in msgs[0]
    assert reader.conversions["clipped"] == 2


def _about_clipping(record):
    """A log record about clipping (the old "clipping samples ..." note or the new warning)."""
    return any(k in record.getMessage() for k in ("clipping samples", "clipped audio"))


# ---- 5. near-duplicate labels and speakers -------------------------------------------------
def test_case5_validator_reports_near_duplicate_labels_and_speakers(tmp_path):
    from genser.datadir import DataDirError, write_data_dir
    from genser.validate import validate_data_dir

    records = []
    for i, (spk, emo) in enumerate([("spk_16", "anger"), ("Spk_16", "Anger"), ("spk_16", "happy"),
                                    ("s2", "happy"), ("s2", "anger"), ("s2", "Anger")]):
        records.append({"utt": f"u{i}", "path": f"/a/{i}.wav", "spk": spk, "emo": emo, "gender": "f", "fold": "1"})
    d = write_data_dir(tmp_path / "data", records)  # labels.emo: Anger, anger, happy
    with pytest.raises(DataDirError) as err:
        validate_data_dir(d)
    problems = err.value.problems
    assert any(str(d / "utt2emo") in p and "'Anger' and 'anger'" in p for p in problems)
    assert any(str(d / "labels.emo") in p and "'Anger' and 'anger'" in p for p in problems)
    assert any(str(d / "utt2spk") in p and "'Spk_16' and 'spk_16'" in p for p in problems)
    # "spk 16" in a label list (one label per line, spaces allowed) vs "spk_16"
    (d / "labels.emo").write_text("anger\nvery happy\nvery_happy\n")
    problems = [p for p in _problems(d) if str(d / "labels.emo") in p]
    assert any("'very happy' and 'very_happy'" in p for p in problems)


def test_case5_custom_list_with_two_spellings_of_a_speaker(tmp_path):
    from corpus_fixtures import make_custom

    from genser.corpora import custom
    from genser.corpora.base import CorpusError

    rows = [("a/1.wav", "happy", "spk 16", "f"), ("a/2.wav", "sad", "spk_16", "f"), ("b/1.wav", "sad", "s2", "m")]
    path = make_custom(tmp_path, rows)
    with pytest.raises(CorpusError) as err:
        custom.prepare(data_dir=tmp_path / "all", csv=path, num_folds=2)
    msg = str(err.value)
    assert "'spk 16'" in msg and "'spk_16'" in msg and str(path) in msg


def _problems(d):
    from genser.datadir import DataDirError
    from genser.validate import validate_data_dir

    with pytest.raises(DataDirError) as err:
        validate_data_dir(d)
    return err.value.problems


# ---- 6. non-UTF-8 lists --------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "latin-1"])
def test_case6_custom_list_must_be_utf8(tmp_path, encoding):
    from corpus_fixtures import make_custom

    from genser.corpora import custom
    from genser.corpora.base import CorpusError

    rows = [("a/1.wav", "happy", "Jürgen", "m"), ("b/1.wav", "sad", "s2", "f")]
    path = make_custom(tmp_path, rows)
    path.write_bytes(path.read_text(encoding="utf-8").encode(encoding))
    with pytest.raises(CorpusError) as err:
        custom.prepare(data_dir=tmp_path / "all", csv=path, num_folds=2)
    msg = str(err.value)
    assert str(path) in msg and "must be UTF-8" in msg and "\n" not in msg

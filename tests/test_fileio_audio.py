"""genser.fileio (atomic writes, Kaldi key-value files) and genser.audio (AudioReader)."""
import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from genser.audio import AudioError, AudioReader, write_wav
from genser.fileio import FileFormatError, atomic_open, atomic_write, read_kv, read_list, write_kv


# ---- fileio --------------------------------------------------------------------------------
def test_atomic_open_replaces_on_success(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    with atomic_open(path) as f:
        f.write("one\n")
        assert not path.exists()  # not visible until the block ends
    assert path.read_text() == "one\n"
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(os.listdir(path.parent)) == ["f.txt"]


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("new")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_read_write_kv(tmp_path):
    path = tmp_path / "wav.scp"
    write_kv(path, {"b": "x y", "a": "1", "B": ["p", "q"]})
    assert path.read_text() == "B p q\na 1\nb x y\n"  # C-locale order: upper case first
    assert read_kv(path) == {"B": "p q", "a": "1", "b": "x y"}
    path.write_text("u1 a\n\nu2   two words  \nu3\n")
    assert read_kv(path) == {"u1": "a", "u2": "two words", "u3": ""}


def test_read_kv_duplicate_and_empty_ids_name_file_and_line(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_text("u1 s1\nu2 s1\nu1 s2\n")
    with pytest.raises(FileFormatError, match=r"utt2spk:3: duplicate id 'u1' \(first on line 1\)"):
        read_kv(path)
    path.write_text("u1 s1\n s2\n")
    with pytest.raises(FileFormatError, match=r"utt2spk:2: empty id"):
        read_kv(path)
    with pytest.raises(ValueError, match="invalid id"):
        write_kv(path, {"a b": 1})


def test_read_list_rejects_duplicates(tmp_path):
    path = tmp_path / "labels.emo"
    path.write_text("neutral\nhappy\n\n")
    assert read_list(path) == ["neutral", "happy"]
    path.write_text("neutral\nneutral\n")
    with pytest.raises(FileFormatError, match="labels.emo:2: duplicate entry 'neutral'"):
        read_list(path)


# ---- audio ---------------------------------------------------------------------------------
def test_reads_mono_float(tmp_path):
    x = np.array([0.0, 0.5, -0.5, 0.25], dtype=np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    wav = AudioReader()("u1", path)
    assert wav.dtype == torch.float32 and wav.shape == (4,)
    assert torch.equal(wav, torch.from_numpy(x))


def test_stereo_is_downmixed_and_logged_once(tmp_path, caplog):
    x = np.array([[0.5, 0.25], [-0.5, 0.0], [0.0, 0.0]], dtype=np.float32)
    path = tmp_path / "st.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    reader = AudioReader()
    with caplog.at_level(logging.INFO, logger="genser.audio"):
        a = reader("u1", path)
        reader("u2", path)
    assert torch.equal(a, torch.tensor([0.375, -0.25, 0.0]))
    msgs = [r.getMessage() for r in caplog.records if "down-mixing" in r.getMessage()]
    assert len(msgs) == 1 and "u1" in msgs[0]
    assert reader.conversions["downmix 2ch"] == 2


def test_resample_22050_to_16000(tmp_path, caplog):
    sr = 22050
    t = np.arange(sr) / sr
    path = tmp_path / "r.wav"
    sf.write(path, 0.5 * np.sin(2 * np.pi * 1000 * t), sr, subtype="PCM_16")
    reader = AudioReader(16000)
    with caplog.at_level(logging.INFO, logger="genser.audio"):
        wav = reader("u1", path)
        reader("u2", path)
    assert wav.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert np.argmax(spectrum) == 1000  # 1 Hz bins: the tone is still at 1 kHz
    assert abs(float(wav.abs().max()) - 0.5) < 0.02
    msgs = [r.getMessage() for r in caplog.records if "resampling 22050 Hz -> 16000 Hz" in r.getMessage()]
    assert len(msgs) == 1


def test_segment_start_end(tmp_path):
    x = np.arange(100, dtype=np.float32) / 100
    path = tmp_path / "seg.wav"
    sf.write(path, x, 100, subtype="FLOAT")
    wav = AudioReader(100)("u1", path, start=0.2, end=0.5)
    assert torch.allclose(wav, torch.from_numpy(x[20:50]))
    with pytest.raises(AudioError, match="u1.*past the end"):
        AudioReader(100)("u1", path, start=2.0, end=3.0)


def test_missing_file_names_utt_and_path(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=f"utt u7: audio file not found: {path}"):
        AudioReader()("u7", path)


def test_corrupt_file_names_utt_and_path(tmp_path):
    path = tmp_path / "bad.wav"
    path.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError) as err:
        AudioReader()("u8", path)
    assert "u8" in str(err.value) and str(path) in str(err.value) and "cannot read" in str(err.value)


def test_empty_clip_names_utt_and_path(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=f"utt u9: empty audio .* in {path}"):
        AudioReader()("u9", path)


def test_pipe_and_write_wav(tmp_path):
    path = tmp_path / "w.wav"
    write_wav(path, torch.tensor([0.0, 0.5, -0.5]), 16000)
    wav = AudioReader()("u1", f"cat {path} |")
    assert torch.allclose(wav, torch.tensor([0.0, 0.5, -0.5]), atol=1 / 32768)
    with pytest.raises(AudioError, match="u1: pipe command failed"):
        AudioReader()("u1", f"cat {tmp_path / 'missing.wav'} |")

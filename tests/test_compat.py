"""genser.compat: torchaudio without its C++ extension, and the names s3prl 0.4.18 needs."""
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import soundfile as sf
import torch

import genser  # noqa: F401  (installs the hook)
from genser import compat


def test_torchaudio_imports_and_pure_python_parts_work():
    import torchaudio
    from torchaudio.compliance import kaldi

    wav = torch.sin(torch.arange(16000) * 2 * np.pi * 440 / 16000).unsqueeze(0)
    feats = kaldi.fbank(wav * 32768, num_mel_bins=23, sample_frequency=16000, dither=0.0)
    assert feats.shape == (98, 23)
    assert torch.isfinite(feats).all()
    out = torchaudio.functional.resample(wav, 16000, 8000)
    assert out.shape == (1, 8000)
    assert torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_mels=40)(wav).shape[1] == 40


def test_s3prl_names_exist():
    import torchaudio
    import torchaudio.sox_effects as se

    torchaudio.set_audio_backend("sox_io")  # accepted, no effect
    assert callable(se.apply_effects_tensor) and callable(se.apply_effects_file)
    assert callable(torchaudio.load) and callable(torchaudio.info) and callable(torchaudio.save)


def test_load_info_save_roundtrip(tmp_path):
    import torchaudio

    x = (np.arange(2 * 300, dtype=np.float32).reshape(300, 2) / 1000.0) - 0.3
    path = tmp_path / "a.wav"
    sf.write(path, x, 8000, subtype="PCM_16")
    info = torchaudio.info(str(path))
    assert (info.sample_rate, info.num_frames, info.num_channels, info.bits_per_sample) == (8000, 300, 2, 16)
    wav, sr = torchaudio.load(str(path), frame_offset=10, num_frames=5)
    assert sr == 8000 and wav.shape == (2, 5) and wav.dtype == torch.float32
    np.testing.assert_allclose(wav.numpy().T, x[10:15], atol=1 / 32768)
    out = tmp_path / "b.wav"
    torchaudio.save(str(out), wav, sr)
    back, _ = sf.read(out, dtype="float32")
    np.testing.assert_allclose(back, wav.numpy().T, atol=1 / 32768)


def test_sox_effects_are_names_only():
    with pytest.raises(NotImplementedError, match="genser"):
        compat.apply_effects_tensor(torch.zeros(1, 10), 16000, [["vad", "-T", "0.25"]])
    with pytest.raises(NotImplementedError, match="a.wav"):
        compat.apply_effects_file("a.wav", [["rate", "8000"]])


def test_patch_only_adds_what_is_missing():
    present = types.ModuleType("torchaudio_fake")
    sentinels = {name: object() for name in ("load", "save", "info", "set_audio_backend",
                                             "sox_effects", "load_wav", "AudioMetaData",
                                             "get_audio_backend", "list_audio_backends")}
    for name, value in sentinels.items():
        setattr(present, name, value)
    compat.patch_torchaudio(present)
    for name, value in sentinels.items():
        assert getattr(present, name) is value
    missing = types.ModuleType("torchaudio_fake2")
    compat.patch_torchaudio(missing)
    assert missing.info is compat.sf_info and missing.set_audio_backend is compat.set_audio_backend


FAKE_TORCHAUDIO = {
    "torchaudio/__init__.py": "from . import _extension\nfrom . import compliance\n",
    "torchaudio/compliance.py": "OK = True\n",
    "torchaudio/_extension/__init__.py": textwrap.dedent("""\
        from .utils import _load_lib
        _IS_TORCHAUDIO_EXT_AVAILABLE = _load_lib("_torchaudio")
    """),
    "torchaudio/_extension/utils.py": textwrap.dedent("""\
        def _load_lib(lib):
            raise OSError("libc10_cuda.so: cannot open shared object file")
    """),
}


def test_extension_failure_is_tolerated_in_a_fresh_interpreter(tmp_path):
    """A torchaudio whose extension raises OSError imports through genser, and only then."""
    for rel, text in FAKE_TORCHAUDIO.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    env_path = str(tmp_path)
    plain = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True,
                           text=True, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert plain.returncode != 0 and "libc10_cuda" in plain.stderr
    code = textwrap.dedent("""\
        try:
            import torchaudio  # fails: genser not imported yet
        except OSError:
            pass
        import genser, torchaudio  # the retry through genser's hook succeeds
        from genser import compat
        assert torchaudio.compliance.OK
        assert torchaudio._extension._IS_TORCHAUDIO_EXT_AVAILABLE is False
        assert "libc10_cuda" in compat.EXTENSION_ERROR
        import torchaudio.sox_effects
        torchaudio.set_audio_backend("soundfile")
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_s3prl_fbank_upstream_on_emodb(emodb_dir):
    from genser.audio import AudioReader

    s3prl = compat.import_s3prl()
    from s3prl.nn import S3PRLUpstream

    assert s3prl.__version__ == "0.4.18"
    path = sorted((emodb_dir / "wav").glob("*.wav"))[0]
    assert sf.info(path).samplerate == 22050
    wav = AudioReader(16000)(path.stem, path)
    assert wav.shape == (32000,)
    model = S3PRLUpstream("fbank").eval()
    with torch.no_grad():
        hs, hs_len = model(wav.unsqueeze(0), torch.tensor([wav.numel()]))
    assert len(hs) == 1
    assert hs[0].shape[0] == 1 and hs[0].shape[2] == 240
    assert abs(hs[0].shape[1] - 200) <= 2  # 100 frames per second
    assert int(hs_len[0][0]) == hs[0].shape[1]
    assert torch.isfinite(hs[0]).all()

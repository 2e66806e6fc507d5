"""genser.bin.extract_feats: jobs, merge, pooling/dtype, interrupted runs, bad input."""
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import yaml

from genser.audio import AudioError, AudioReader
from genser import extraction
from genser.bin import extract_feats
from genser.features import FeatureReader
from genser.frontend import build_frontend


def make_data(root, n=6, nj=2):
    """n short wavs (16 and 22.05 kHz, 0.3-0.8 s) in a data dir, plus split{nj}/{1..nj} subsets."""
    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True)
    lines = []
    for i in range(n):
        sr = 16000 if i % 2 == 0 else 22050
        t = np.arange(int(sr * (0.3 + 0.1 * i))) / sr
        wav = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.normal(size=t.size)
        path = root / "wav" / f"u{i}.wav"
        sf.write(path, wav.astype(np.float32), sr)
        lines.append(f"utt{i} {path}\n")
    (root / "data").mkdir()
    (root / "data" / "wav.scp").write_text("".join(lines))
    per = -(-n // nj)
    for j in range(nj):
        split = root / "data" / f"split{nj}" / str(j + 1)
        split.mkdir(parents=True)
        (split / "wav.scp").write_text("".join(lines[j * per:(j + 1) * per]))
    return root / "data"


def job_args(data, out, job, nj=2, *extra):
    return ["--data_dir", str(data / f"split{nj}" / str(job)), "--out_dir", str(out), "--job", str(job),
            "--nj", str(nj), "--batch_size", "2", *extra]


def merge_args(data, out, nj=2):
    return ["--merge", "--out_dir", str(out), "--nj", str(nj), "--data_dir", str(data)]


def test_fbank_round_trip(tmp_path):
    data, out = make_data(tmp_path), tmp_path / "dump"
    for job in (1, 2):
        extract_feats.main(job_args(data, out, job, 2, "--frontend", "fbank"))
    extract_feats.main(merge_args(data, out))
    meta = yaml.safe_load((out / "feats.yaml").read_text())
    assert meta["frontend"]["name"] == "fbank" and meta["layers"] == [0] and meta["num_layers"] == 1
    assert (meta["dim"], meta["pooling"], meta["dtype"], meta["frame_rate"], meta["num_utts"]) == \
        (240, "none", "float32", 100.0, 6)
    assert meta["size_mb"] > 0 and meta["whisper_mode"] is None
    lines = (out / "feats.scp").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [f"utt{i}" for i in range(6)]
    reader = FeatureReader(out)
    # the same numbers as running the frontend directly on the resampled audio
    wav = AudioReader(16000)("utt3", tmp_path / "wav" / "u3.wav")
    layers, lengths = build_frontend("fbank")([wav])
    np.testing.assert_array_equal(reader["utt3"], layers[0][0, :lengths[0]].numpy()[:, None, :])
    assert reader["utt0"].shape == (30, 1, 240)  # 0.3 s at 100 frames/s


def test_mean_pooling_float16_and_layer_selection(tmp_path):
    from test_frontend import save_tiny_hf

    data, out = make_data(tmp_path, n=3, nj=1), tmp_path / "dump"
    save_tiny_hf(tmp_path / "wavlm", "wavlm")
    conf = tmp_path / "frontend.yaml"
    conf.write_text(yaml.safe_dump({"frontend": {"type": "hf", "path": str(tmp_path / "wavlm")}}))
    common = ["--frontend_conf", str(conf), "--layers", "0 2"]
    extract_feats.main(job_args(data, out, 1, 1, *common, "--pooling", "mean", "--dtype", "float16"))
    extract_feats.main(merge_args(data, out, 1))
    extract_feats.main(job_args(data, tmp_path / "frames", 1, 1, *common))
    extract_feats.main(merge_args(data, tmp_path / "frames", 1))
    pooled, frames = FeatureReader(out), FeatureReader(tmp_path / "frames")
    assert pooled.meta["layers"] == [0, 2] and pooled.meta["dtype"] == "float16"
    assert pooled.meta["frontend"]["model_type"] == "wavlm"
    for utt in pooled.utts:
        x = frames[utt]
        assert x.shape[1:] == (2, 32) and pooled[utt].shape == (1, 2, 32)
        # the float16 mean of the float32 frames
        np.testing.assert_allclose(pooled[utt][0], x.mean(0), rtol=2e-3, atol=2e-3)


def test_parse_layers():
    assert extraction.parse_layers("all", 4) == [0, 1, 2, 3]
    assert extraction.parse_layers("3 0", 4) == [0, 3]
    assert extraction.parse_layers("1,-1", 4) == [1, 3]
    for bad in ("4", "1 1", "x", ""):
        with pytest.raises(ValueError, match="layers"):
            extraction.parse_layers(bad, 4)


def stamps(out, job):
    return {p.name: p.stat().st_mtime_ns for p in out.glob(f"feats.{job}.*")}


def test_killed_job_is_redone_and_finished_jobs_are_kept(tmp_path, capsys):
    data, out = make_data(tmp_path), tmp_path / "dump"
    extract_feats.main(job_args(data, out, 1))
    before = stamps(out, 1)
    # job 2 dies (SIGKILL, no cleanup) after writing 2 of its 3 utterances
    code = ("import os, signal\n"
            "import genser.features as F\n"
            "from genser.bin import extract_feats\n"
            "orig = F.ArkWriter.__call__\n"
            "def dying(self, utt, mat):\n"
            "    if self.count == 2:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    orig(self, utt, mat)\n"
            "F.ArkWriter.__call__ = dying\n"
            f"extract_feats.main({job_args(data, out, 2, 2, '--batch_size', '1')!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (out / ".feats.2.ark.tmp").stat().st_size > 0  # the half-written ark ...
    for name in ("feats.2.ark", "feats.2.scp", "feats.2.done"):  # ... never looks complete
        assert not (out / name).exists()
    with pytest.raises(RuntimeError, match="job\\(s\\) 2 of 2 did not finish.*re-run stage 1"):
        extract_feats.main(merge_args(data, out))
    capsys.readouterr()
    for job in (1, 2):  # the re-run: ser.sh starts every job again
        extract_feats.main(job_args(data, out, job))
    assert "job 1: already done" in capsys.readouterr().err
    assert stamps(out, 1) == before
    extract_feats.main(merge_args(data, out))
    reader = FeatureReader(out)
    assert reader.utts == [f"utt{i}" for i in range(6)] and all(reader[u].shape[1:] == (1, 240) for u in reader)
    assert not list(out.glob(".*.tmp"))


def test_changed_settings_redo_the_job(tmp_path, capsys):
    data, out = make_data(tmp_path, n=2, nj=1), tmp_path / "dump"
    extract_feats.main(job_args(data, out, 1, 1))
    extract_feats.main(merge_args(data, out, 1))
    extract_feats.main(job_args(data, out, 1, 1, "--pooling", "mean"))
    assert "settings differ" in capsys.readouterr().err
    assert not (out / "feats.scp").exists()  # the old merge no longer describes the ark
    extract_feats.main(merge_args(data, out, 1))
    assert FeatureReader(out)["utt1"].shape == (1, 1, 240)


def test_non_finite_features_name_the_utterance(tmp_path, monkeypatch):
    from genser.frontend import S3PRLFrontend

    data, out = make_data(tmp_path, n=2, nj=1), tmp_path / "dump"
    orig = S3PRLFrontend._forward

    def with_nan(self, wavs):
        layers, lengths = orig(self, wavs)
        if len(wavs) == 2:  # the extraction batch, not the probe
            layers[0][1, 3, 5] = float("nan")
        return layers, lengths

    monkeypatch.setattr(S3PRLFrontend, "_forward", with_nan)
    with pytest.raises(ValueError, match=f"utterance utt1: 1 non-finite .*{tmp_path / 'wav' / 'u1.wav'}"):
        extract_feats.main(job_args(data, out, 1, 1))
    assert sorted(p.name for p in out.iterdir()) == []


def test_bad_audio_and_merge_checks(tmp_path):
    data, out = make_data(tmp_path, n=2, nj=1), tmp_path / "dump"
    (tmp_path / "wav" / "u1.wav").write_bytes(b"not a wav")
    with pytest.raises(AudioError, match="utt1.*u1.wav"):
        extract_feats.main(job_args(data, out, 1, 1))
    assert not (out / "feats.1.scp").exists() and not (out / "feats.1.done").exists()
    with pytest.raises(RuntimeError, match="job\\(s\\) 1 of 1 did not finish"):
        extract_feats.main(merge_args(data, out, 1))
    # a job done on a smaller split than the data dir: merge names the utterances without features
    (tmp_path / "wav" / "u1.wav").unlink()
    (data / "split1" / "1" / "wav.scp").write_text(f"utt0 {tmp_path / 'wav' / 'u0.wav'}\n")
    extract_feats.main(job_args(data, out, 1, 1))
    with pytest.raises(RuntimeError, match="1 utts of .* have no features .*utt1"):
        extract_feats.main(merge_args(data, out, 1))


def test_offline_upstream_fails_before_writing(tmp_path, monkeypatch):
    import requests
    from s3prl import hub

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("no network")

    monkeypatch.setattr(hub, "hubert_large_ll60k", offline)
    data, out = make_data(tmp_path, n=1, nj=1), tmp_path / "dump"
    with pytest.raises(ValueError, match="could not be downloaded.*hubert_local"):
        extract_feats.main(job_args(data, out, 1, 1, "--frontend", "hubert_large_ll60k"))
    assert not list(out.glob("feats.*"))

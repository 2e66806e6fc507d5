"""Speed perturbation: the signal transform, the per-factor dumps of stage 1, and training that adds
perturbed copies of the training utterances only."""
import numpy as np
import pytest
import torch
import yaml

from genser.audio import AudioReader, speed_perturb, speed_ratio
from genser.bin import extract_feats, train
from feature_fixtures import write_feats_dir
from genser.features import FeatureReader
from test_extract import job_args, make_data, merge_args
from test_train import fold_dir_of, make_experiment, train_args


def test_speed_ratio_is_the_factor_in_lowest_terms():
    assert speed_ratio(0.9) == (9, 10) and speed_ratio(1.1) == (11, 10) and speed_ratio(1.0) == (1, 1)
    for bad in (0.0, 0.3, 2.5, -1.0):
        with pytest.raises(ValueError, match="speed factor"):
            speed_ratio(bad)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_scales_duration_and_pitch(factor):
    sr, f0 = 16000, 440.0
    t = torch.arange(sr) / sr  # 1 s
    out = speed_perturb(torch.sin(2 * np.pi * f0 * t), factor)
    p, q = speed_ratio(factor)
    assert out.numel() == -(-sr * q // p)  # ceil(N q / p): sox speed lengthens by 1 / factor
    spectrum = np.abs(np.fft.rfft(out.numpy() * np.hanning(out.numel())))
    peak = np.argmax(spectrum) * sr / out.numel()
    assert abs(peak - f0 * factor) < 2.0  # the tone moves by the factor (bin width ~1 Hz)


def test_factor_one_is_the_identity():
    wav = torch.randn(1000)
    assert speed_perturb(wav, 1.0) is wav


def test_extraction_with_speed_writes_a_dump_that_says_so(tmp_path):
    data, plain, slow = make_data(tmp_path), tmp_path / "dump", tmp_path / "dump_sp0.9"
    for out, extra in ((plain, ()), (slow, ("--speed", "0.9"))):
        for job in (1, 2):
            extract_feats.main(job_args(data, out, job, 2, "--frontend", "fbank", *extra))
        extract_feats.main(merge_args(data, out))
    assert "speed" not in yaml.safe_load((plain / "feats.yaml").read_text())
    assert yaml.safe_load((slow / "feats.yaml").read_text())["speed"] == 0.9
    a, b = FeatureReader(plain), FeatureReader(slow)
    assert a.utts == b.utts  # the copies keep the utterance ids
    for utt in a.utts:  # 1/0.9 longer: about 11 % more frames
        assert b[utt].shape[0] == pytest.approx(a[utt].shape[0] / 0.9, abs=2)
    wav = speed_perturb(AudioReader(16000)("utt2", tmp_path / "wav" / "u2.wav"), 0.9)
    from genser.frontend import build_frontend
    layers, lengths = build_frontend("fbank")([wav])
    np.testing.assert_array_equal(b["utt2"], layers[0][0, :lengths[0]].numpy()[:, None, :])


def test_bad_speed_is_refused_before_any_work(tmp_path):
    data = make_data(tmp_path)
    with pytest.raises(SystemExit):
        extract_feats.main(job_args(data, tmp_path / "dump", 1, 2, "--frontend", "fbank", "--speed", "3"))
    assert not (tmp_path / "dump").exists()


def perturbed_dump(root, speed, shift=0.0, drop=()):
    """A copy of root/dump with other numbers, marked as speed-perturbed."""
    reader = FeatureReader(root / "dump")
    feats = {u: reader[u] + shift for u in reader.utts if u not in drop}
    out = root / f"dump_sp{speed}"
    write_feats_dir(out, feats, meta={**reader.meta, "speed": speed})
    return out


def test_training_adds_copies_of_training_utterances_only(tmp_path, monkeypatch):
    root = make_experiment(tmp_path)
    dirs = [perturbed_dump(root, 0.9, 0.5), perturbed_dump(root, 1.1, -0.5)]
    seen = []
    from genser import trainer

    real = trainer.FeatureDataset

    def spy(reader, utts, targets):
        seen.append(list(utts))
        return real(reader, utts, targets)

    monkeypatch.setattr(trainer, "FeatureDataset", spy)
    train.main(train_args(root, "--epochs", "1", "--speed_perturb_dirs", ",".join(map(str, dirs))))
    fold_dir = fold_dir_of(root)
    listed = {name: (fold_dir / f"{name}.list").read_text().split() for name in ("train", "dev", "test")}
    items = seen[0]  # the training set: every training utterance in dump 0, 1 and 2
    assert items == [(i, u) for i in range(3) for u in listed["train"]]
    assert not {u for _, u in items} & (set(listed["dev"]) | set(listed["test"]))
    assert seen[1] == [(0, u) for u in listed["dev"]]  # dev is not perturbed


def test_perturbed_dumps_enter_the_identity_and_are_checked(tmp_path, capfd):
    root = make_experiment(tmp_path)
    train.main(train_args(root, "--epochs", "1"))
    sp = perturbed_dump(root, 0.9, 0.5)
    # same exp dir, now with perturbed copies: another experiment, refused
    with pytest.raises(SystemExit):
        train.main(train_args(root, "--epochs", "1", "--speed_perturb_dirs", str(sp)))
    assert "holds a model of another experiment" in capfd.readouterr().err
    reader = FeatureReader(root / "dump")
    train_utts = (fold_dir_of(root) / "train.list").read_text().split()
    short = perturbed_dump(root, 1.1, drop=train_utts[:1])
    with pytest.raises(ValueError, match="no speed-perturbed features, e.g. " + train_utts[0]):
        train.main(train_args(root, "--epochs", "1", "--exp_dir", str(tmp_path / "exp2"),
                              "--speed_perturb_dirs", str(short)))
    other = tmp_path / "other"
    write_feats_dir(other, {u: reader[u][:, :1] for u in reader.utts}, meta={**reader.meta, "speed": 0.9})
    with pytest.raises(ValueError, match="differ from"):
        train.main(train_args(root, "--epochs", "1", "--exp_dir", str(tmp_path / "exp3"),
                              "--speed_perturb_dirs", str(other)))
    with pytest.raises(ValueError, match="not a speed-perturbed dump"):
        train.main(train_args(root, "--epochs", "1", "--exp_dir", str(tmp_path / "exp4"),
                              "--speed_perturb_dirs", str(root / "dump")))

"""genser.features: dump layout, FeatureReader, pad_collate, the atomic ark writer."""
import shutil

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from feature_fixtures import write_feats_dir
from genser.features import (ArkWriter, FeatureDataset, FeatureReader, from_matrix, load_all, pad_collate,
                             read_meta, to_matrix, write_meta)


def random_feats(n=3, L=2, D=4, seed=0):
    rng = np.random.default_rng(seed)
    return {f"utt{i}": rng.normal(size=(3 + i, L, D)).astype(np.float32) for i in range(n)}


def test_matrix_layout_round_trip():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # T=2, L=3, D=4
    meta = {"num_layers": 3, "dim": 4, "pooling": "none"}
    mat = to_matrix(x, "none")
    assert mat.shape == (2, 12) and np.array_equal(mat[1, 4:8], x[1, 1])  # layers side by side
    assert np.array_equal(from_matrix(mat, meta), x)
    mean = to_matrix(x, "mean")
    assert mean.shape == (3, 4) and np.array_equal(mean, (x[0] + x[1]) / 2)
    assert from_matrix(mean, {**meta, "pooling": "mean"}).shape == (1, 3, 4)
    with pytest.raises(ValueError, match=r"\[T, 12\]"):
        from_matrix(np.zeros((2, 10), np.float32), meta)


@pytest.mark.parametrize("pooling", ["none", "mean"])
def test_write_and_read_float32_exact(tmp_path, pooling):
    feats = random_feats()
    write_feats_dir(tmp_path, feats, {"frontend": {"type": "s3prl", "name": "x"}, "pooling": pooling})
    reader = FeatureReader(tmp_path)
    assert reader.utts == ["utt0", "utt1", "utt2"] and len(reader) == 3 and "utt1" in reader
    assert reader.meta["num_layers"] == 2 and reader.meta["dim"] == 4 and reader.meta["dtype"] == "float32"
    for utt, x in feats.items():
        got = reader[utt]
        assert got.dtype == np.float32
        expect = x if pooling == "none" else x.mean(0, keepdims=True)
        np.testing.assert_array_equal(got, expect) if pooling == "none" else \
            np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-7)
    assert set(load_all(reader)) == set(feats)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.ark", "feats.scp", "feats.yaml"]


def test_float16_storage(tmp_path, monkeypatch):
    feats = random_feats()
    write_feats_dir(tmp_path, feats, {"pooling": "none"}, dtype="float16")
    monkeypatch.chdir(tmp_path)  # ark paths are relative to the scp's folder; kaldiio reads them from the CWD
    raw = kaldiio.load_scp("feats.scp")["utt1"]
    assert raw.dtype == np.float16  # stored as half precision: half the bytes
    got = FeatureReader(tmp_path)["utt1"]
    assert got.dtype == np.float32 and np.array_equal(got, feats["utt1"].astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="utterance big: .*float16 range"):
        write_feats_dir(tmp_path / "b", {"big": np.full((2, 1, 2), 7e4, np.float32)}, {"pooling": "none"},
                        dtype="float16")


def test_non_finite_and_missing_utterances(tmp_path):
    bad = np.ones((4, 6), np.float32)
    bad[2, 3] = np.nan
    ark = tmp_path / "feats.ark"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{tmp_path / 'feats.scp'}") as w:  # bypasses genser's checks
        w("good", np.ones((4, 6), np.float32))
        w("broken", bad)
    write_meta(tmp_path, {"num_layers": 2, "dim": 3, "pooling": "none"})
    reader = FeatureReader(tmp_path)
    assert reader["good"].shape == (4, 2, 3)
    with pytest.raises(ValueError, match=f"utterance broken: 1 non-finite .* in {ark}"):
        reader["broken"]
    with pytest.raises(KeyError, match=f"utterance nope is not in {tmp_path / 'feats.scp'}"):
        reader["nope"]
    with pytest.raises(ValueError, match="utterance x: 1 non-finite"):
        write_feats_dir(tmp_path / "w", {"x": bad.reshape(4, 2, 3)}, {"pooling": "none"})
    with pytest.raises(KeyError, match="1 utterances have no features.*nope.*re-run stage 1"):
        FeatureDataset(reader, ["good", "nope"], [0, 1])


def test_missing_dump_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="feats.yaml is missing.*stage 1"):
        FeatureReader(tmp_path)
    write_meta(tmp_path, {"num_layers": 1, "dim": 1, "pooling": "none"})
    with pytest.raises(FileNotFoundError, match="feats.scp is missing"):
        FeatureReader(tmp_path)
    (tmp_path / "feats.yaml").write_text(yaml.safe_dump({"num_layers": 1, "dim": 1, "pooling": "max"}))
    with pytest.raises(ValueError, match="pooling must be one of"):
        read_meta(tmp_path)


def test_moved_dump_is_still_readable(tmp_path):
    feats = random_feats()
    write_feats_dir(tmp_path / "a", feats, {"pooling": "none"})
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))  # the scp's ark path is relative to it
    np.testing.assert_array_equal(FeatureReader(tmp_path / "b")["utt2"], feats["utt2"])


def test_ark_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        with ArkWriter(tmp_path / "feats.1.ark", tmp_path / "feats.1.scp") as writer:
            writer("a", np.ones((2, 3), np.float32))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with ArkWriter(tmp_path / "feats.1.ark", tmp_path / "feats.1.scp") as writer:
        writer("a", np.ones((2, 3), np.float32))
        assert not (tmp_path / "feats.1.ark").exists() and not (tmp_path / "feats.1.scp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.1.ark", "feats.1.scp"]
    line = (tmp_path / "feats.1.scp").read_text()
    assert line.startswith("a feats.1.ark:")  # the final name (relative to the scp), not the temp one


def test_pad_collate_exact():
    a = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 3)
    b = torch.ones(4, 2, 3)
    feats, lengths, targets = pad_collate([(a, 1), (b, 0), (np.full((1, 2, 3), 5.0), 2)])
    assert feats.shape == (3, 4, 2, 3) and feats.dtype == torch.float32
    assert lengths.tolist() == [2, 4, 1] and lengths.dtype == torch.long
    assert targets.tolist() == [1, 0, 2] and targets.dtype == torch.long
    assert torch.equal(feats[0, :2], a) and torch.equal(feats[0, 2:], torch.zeros(2, 2, 3))
    assert torch.equal(feats[1], b) and torch.equal(feats[2, 0], torch.full((2, 3), 5.0))
    assert feats[2, 1:].abs().sum() == 0
    with pytest.raises(ValueError, match="item 1 has shape"):
        pad_collate([(a, 0), (torch.ones(2, 3, 3), 0)])
    with pytest.raises(ValueError, match="empty batch"):
        pad_collate([])


def test_feature_dataset(tmp_path):
    feats = random_feats()
    write_feats_dir(tmp_path, feats, {"pooling": "mean"})
    ds = FeatureDataset(FeatureReader(tmp_path), ["utt2", "utt0"], [1, 0])
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.shape == (1, 2, 4) and y == 1 and len(ds) == 2
    memory = FeatureDataset(load_all(FeatureReader(tmp_path)), ["utt1"], [3])  # preloaded dict works too
    assert memory[0][0].shape == (1, 2, 4)
    with pytest.raises(ValueError, match="2 utterances but 1 targets"):
        FeatureDataset(FeatureReader(tmp_path), ["utt0", "utt1"], [0])

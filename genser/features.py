"""Feature dumps: Kaldi ark/scp matrices plus a feats.yaml that says how to read them back.

Every utterance is one Kaldi matrix. Frame sequences (pooling none) are stored as [T, L*D], the
kept layers side by side; utterance means (pooling mean) as [L, D]. Readers always return
[T, L, D] (T=1 for means), which is what the models take.
"""
from pathlib import Path

import kaldiio
import numpy as np
import torch
import yaml

from genser.fileio import atomic_open

META_FILE = "feats.yaml"
POOLINGS = ("none", "mean")


def read_meta(feat_dir):
    path = Path(feat_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; it is written by stage 1 (feature extraction, --merge)")
    meta = yaml.safe_load(path.read_text())
    for key in ("num_layers", "dim", "pooling"):
        if key not in meta:
            raise ValueError(f"{path}: no '{key}' entry")
    return meta


def write_meta(feat_dir, meta):
    with atomic_open(Path(feat_dir) / META_FILE) as f:
        yaml.safe_dump(meta, f, sort_keys=False)


def to_matrix(feats, pooling):
    """[T, L, D] -> the stored 2-D matrix."""
    if pooling == "mean":
        return feats.mean(axis=0)
    return feats.reshape(feats.shape[0], -1)


def from_matrix(mat, meta):
    """The stored 2-D matrix -> [T, L, D] float32."""
    L, D = meta["num_layers"], meta["dim"]
    if meta["pooling"] == "mean":
        return np.array(mat, dtype=np.float32).reshape(1, L, D)
    return np.array(mat, dtype=np.float32).reshape(-1, L, D)


def stack_layers(layers, lengths, keep=None):
    """Frontend output (list of [B, T, D] per layer) -> one [T_i, L, D] float32 array per utterance."""
    keep = range(len(layers)) if keep is None else keep
    stacked = torch.stack([layers[i] for i in keep], dim=2).float().cpu().numpy()  # [B, T, L, D]
    return [stacked[b, :int(n)] for b, n in enumerate(lengths)]


def check_finite(utt, feats, where):
    if not np.isfinite(feats).all():
        raise ValueError(f"utterance {utt}: non-finite feature values (NaN or inf) from {where}")


class FeatureReader:
    """Random access to a feature dump: ``reader[utt]`` is an np.float32 array [T, L, D]."""

    def __init__(self, feat_dir):
        self.feat_dir = Path(feat_dir)
        self.meta = read_meta(feat_dir)
        scp = self.feat_dir / "feats.scp"
        if not scp.is_file():
            raise FileNotFoundError(f"{scp} is missing; it is written by stage 1 (feature extraction, --merge)")
        self.scp_path = scp
        self._scp = kaldiio.load_scp(str(scp))

    @property
    def utts(self):
        return list(self._scp.keys())

    def __len__(self):
        return len(self._scp)

    def __contains__(self, utt):
        return utt in self._scp

    def __getitem__(self, utt):
        if utt not in self._scp:
            raise KeyError(f"utterance {utt} is not in {self.scp_path}")
        feats = from_matrix(self._scp[utt], self.meta)
        check_finite(utt, feats, self._scp._dict[utt] if hasattr(self._scp, "_dict") else self.scp_path)
        return feats


class FeatureDataset(torch.utils.data.Dataset):
    """(features [T, L, D] tensor, target) pairs for a list of utterances."""

    def __init__(self, reader, utts, targets):
        if len(utts) != len(targets):
            raise ValueError(f"{len(utts)} utterances but {len(targets)} targets")
        missing = [u for u in utts if u not in reader]
        if missing:
            raise KeyError(f"{len(missing)} utterances have no features in {reader.scp_path}, "
                           f"e.g. {missing[:3]}; re-run stage 1")
        self.reader, self.utts, self.targets = reader, list(utts), list(targets)

    def __len__(self):
        return len(self.utts)

    def __getitem__(self, i):
        return torch.from_numpy(self.reader[self.utts[i]]), self.targets[i]


def pad_collate(batch):
    """[(feats [T, L, D], target)] -> feats [B, T_max, L, D] (zero padded), lengths [B], targets [B]."""
    lengths = torch.tensor([f.shape[0] for f, _ in batch], dtype=torch.long)
    first = batch[0][0]
    feats = first.new_zeros((len(batch), int(lengths.max()), *first.shape[1:]))
    for i, (f, _) in enumerate(batch):
        feats[i, :f.shape[0]] = f
    targets = torch.tensor([int(t) for _, t in batch], dtype=torch.long)
    return feats, lengths, targets


def write_feats_dir(feat_dir, feats, meta):
    """Writes {utt: [T, L, D]} as one ark/scp pair plus feats.yaml (in-memory dumps, tests)."""
    feat_dir = Path(feat_dir)
    feat_dir.mkdir(parents=True, exist_ok=True)
    pooling = meta.get("pooling", "none")
    first = next(iter(feats.values()))
    ark, scp = feat_dir / "feats.ark", feat_dir / "feats.scp"
    tmp_ark = feat_dir / ".feats.ark.tmp"
    entries = {}
    with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{feat_dir / '.feats.scp.tmp'}") as writer:
        for utt in sorted(feats):
            check_finite(utt, feats[utt], "the features to write")
            writer(utt, to_matrix(np.asarray(feats[utt], dtype=np.float32), pooling))
    tmp_ark.replace(ark)
    for line in (feat_dir / ".feats.scp.tmp").read_text().splitlines():
        utt, loc = line.split(maxsplit=1)
        entries[utt] = f"{ark}:{loc.rsplit(':', 1)[1]}"
    (feat_dir / ".feats.scp.tmp").unlink()
    with atomic_open(scp) as f:
        f.writelines(f"{u} {loc}\n" for u, loc in entries.items())
    write_meta(feat_dir, {**meta, "pooling": pooling, "num_layers": int(first.shape[1]), "dim": int(first.shape[2]),
                          "num_utts": len(feats)})

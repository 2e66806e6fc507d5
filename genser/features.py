"""Feature dumps: Kaldi ark/scp matrices plus a feats.yaml that says how to read them back.

Every utterance is one matrix. Frame sequences (pooling none) are stored as [T, L*D], the kept
layers side by side; utterance means (pooling mean) as [L, D]; means and standard deviations
(pooling meanstd, the statistics of the classic utterance-level baselines) as [2L, D], read back
as 2L "layers" (the L means, then the L stds). float32 dumps are plain Kaldi
binary matrices; float16 dumps use kaldiio's numpy-in-ark records (Kaldi has no half-precision
matrix type), which ``kaldiio.load_scp`` reads back as float16. Readers always return float32
[T, L, D] (T=1 for means), which is what the models take.
"""
import contextlib
import os
from pathlib import Path

import kaldiio
import numpy as np
import torch
import yaml

from genser.cmvn import key_rng
from genser.fileio import atomic_open, read_kv, write_error

META_FILE = "feats.yaml"
POOLINGS = ("none", "mean", "meanstd")
DTYPES = ("float32", "float16")


def read_meta(feat_dir):
    """feats.yaml of a dump (raises naming the file and the stage that writes it)."""
    path = Path(feat_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; it is written by stage 1 (feature extraction, --merge)")
    meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    for key in ("num_layers", "dim", "pooling"):
        if key not in meta:
            raise ValueError(f"{path}: no '{key}' entry")
    if meta["pooling"] not in POOLINGS:
        raise ValueError(f"{path}: pooling must be one of {POOLINGS}, got {meta['pooling']!r}")
    return meta


def write_meta(feat_dir, meta):
    with atomic_open(Path(feat_dir) / META_FILE) as f:
        yaml.safe_dump(meta, f, sort_keys=False)


def to_matrix(feats, pooling):
    """[T, L, D] -> the stored 2-D matrix ([T, L*D], or the mean over frames [L, D])."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "mean":
        return feats.mean(axis=0, dtype=np.float64).astype(np.float32)
    if pooling == "meanstd":
        mean = feats.mean(axis=0, dtype=np.float64)
        std = feats.std(axis=0, dtype=np.float64)  # 0 for a 1-frame clip
        return np.concatenate([mean, std], axis=0).astype(np.float32)
    return feats.reshape(feats.shape[0], -1)


def model_layers(meta):
    """Number of "layers" a model sees in a dump: 2L for meanstd (means, then stds), else L."""
    return 2 * int(meta["num_layers"]) if meta["pooling"] == "meanstd" else int(meta["num_layers"])


def from_matrix(mat, meta):
    """The stored 2-D matrix -> [T, L, D] float32 (ValueError when its shape does not fit meta)."""
    L, D = int(meta["num_layers"]), int(meta["dim"])
    mat = np.array(mat, dtype=np.float32)  # a writable copy (kaldiio returns read-only buffers)
    if meta["pooling"] in ("mean", "meanstd"):
        rows = model_layers(meta)
        if mat.shape != (rows, D):
            raise ValueError(f"expected a [{rows}, {D}] matrix ({meta['pooling']} of {L} layers), got {list(mat.shape)}")
        return mat.reshape(1, rows, D)
    if mat.ndim != 2 or mat.shape[1] != L * D:
        raise ValueError(f"expected a [T, L*D] = [T, {L * D}] matrix, got {list(mat.shape)}")
    return mat.reshape(-1, L, D)


# The feats.yaml entries that make two dumps features of the same kind (their utterances and
# moments may differ): a model decodes only such a dump, and speed-perturbed copies must match.
FEATURE_KIND = ("frontend", "layers", "num_layers", "dim", "pooling")


def cmvn_kind(meta):
    """(group, norm_vars, relevance) of a dump's normalisation (genser/cmvn.py), all None for a dump
    not normalised: the moments themselves differ between dumps of the same kind."""
    c = meta.get("cmvn") or {}
    return tuple(c.get(k) for k in ("group", "norm_vars", "relevance"))


def kind_differences(a, b, keys=FEATURE_KIND):
    """The entries of feats.yaml mappings ``a`` and ``b`` that differ, as "key: a vs b" strings,
    the normalisation compared by its kind."""
    out = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    if cmvn_kind(a) != cmvn_kind(b):
        out.append(f"cmvn (group, norm_vars, relevance): {cmvn_kind(a)} vs {cmvn_kind(b)}")
    return out


def back_to_matrix(feats, meta):
    """The inverse of ``from_matrix``: [T, L, D] as read -> the 2-D matrix a dump stores."""
    feats = np.asarray(feats, dtype=np.float32)
    if meta["pooling"] in ("mean", "meanstd"):
        return feats[0]
    return feats.reshape(feats.shape[0], -1)


def to_storage(mat, dtype, utt):
    """Casts a matrix to the storage dtype; values that overflow float16 raise naming ``utt``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(mat, dtype=np.dtype(dtype))
    if dtype == "float16" and not np.isfinite(out).all():
        big = float(np.abs(mat).max())
        raise ValueError(f"utterance {utt}: feature values up to {big:.4g} exceed the float16 range "
                         f"(65504); extract with --dtype float32")
    return out


def stack_layers(layers, lengths, keep=None):
    """Frontend output (list of [B, T, D] per layer) -> one [T_i, L, D] float32 array per utterance."""
    keep = range(len(layers)) if keep is None else keep
    stacked = torch.stack([layers[i] for i in keep], dim=2).float().cpu().numpy()  # [B, T, L, D]
    return [stacked[b, :int(n)] for b, n in enumerate(lengths)]


def check_finite(utt, feats, where):
    """Raises ValueError naming ``utt`` and ``where`` (a file) if ``feats`` has NaN or inf."""
    if not np.isfinite(feats).all():
        bad = int(np.size(feats) - np.isfinite(feats).sum())
        raise ValueError(f"utterance {utt}: {bad} non-finite feature values (NaN or inf) in {where}")


def read_scp(scp):
    """feats.scp -> {utt: "ark_path:offset"} (the Kaldi key-value reader, plus the location check)."""
    entries = read_kv(scp)
    bad = next((utt for utt, loc in entries.items() if ":" not in loc), None)
    if bad is not None:
        raise ValueError(f"{scp}: utterance {bad}: expected 'utt ark_path:offset', got {entries[bad]!r}")
    return entries


class FeatureReader:
    """Lazy random access to a feature dump: ``reader[utt]`` is an np.float32 array [T, L, D].

    Relative ark paths in feats.scp (ArkWriter writes them) are relative to the scp's folder, not
    the CWD. Absolute ones (older dumps) that no longer exist (a moved dump) are looked up next to
    feats.scp.
    """

    def __init__(self, feat_dir):
        self.feat_dir = Path(feat_dir)
        self.meta = read_meta(feat_dir)
        scp = self.feat_dir / "feats.scp"
        if not scp.is_file():
            raise FileNotFoundError(f"{scp} is missing; it is written by stage 1 (feature extraction, --merge)")
        self.scp_path = scp
        self._entries = read_scp(scp)
        self._arks = {}  # ark path as written -> path to open

    @property
    def utts(self):
        return sorted(self._entries)

    def __len__(self):
        return len(self._entries)

    def __contains__(self, utt):
        return utt in self._entries

    def __iter__(self):
        return iter(self.utts)

    def _locate(self, utt):
        ark, offset = self._entries[utt].rsplit(":", 1)
        if ark not in self._arks:
            if not os.path.isabs(ark):
                self._arks[ark] = str(self.scp_path.resolve().parent / ark)
            else:
                moved = self.feat_dir / Path(ark).name
                self._arks[ark] = ark if os.path.exists(ark) or not moved.exists() else str(moved)
        return self._arks[ark], offset

    def __getitem__(self, utt):
        if utt not in self._entries:
            raise KeyError(f"utterance {utt} is not in {self.scp_path}")
        ark, offset = self._locate(utt)
        try:
            mat = kaldiio.load_mat(f"{ark}:{offset}")
            feats = from_matrix(mat, self.meta)
        except (OSError, ValueError) as exc:
            raise ValueError(f"utterance {utt}: cannot read its features from {ark} (via {self.scp_path}): "
                             f"{exc}") from exc
        check_finite(utt, feats, ark)
        return feats


class StackedReader:
    """Several dumps read as one mapping: ``stacked[(i, utt)]`` is ``utt`` in dump i (e.g. an
    utterance and its speed-perturbed copies, which keep the utterance's own id)."""

    def __init__(self, readers):
        self.readers = list(readers)

    def __contains__(self, key):
        i, utt = key
        return 0 <= i < len(self.readers) and utt in self.readers[i]

    def __getitem__(self, key):
        i, utt = key
        return self.readers[i][utt]


def load_all(reader, utts=None):
    """Preloads {utt: [T, L, D] float32} into memory (pooled or small dumps)."""
    return {utt: reader[utt] for utt in (reader.utts if utts is None else utts)}


class FeatureDataset(torch.utils.data.Dataset):
    """(features [T, L, D] tensor, target) pairs for a list of utterances.

    ``reader`` is a FeatureReader or any mapping utt -> [T, L, D] array (e.g. load_all's dict).
    """

    def __init__(self, reader, utts, targets):
        if len(utts) != len(targets):
            raise ValueError(f"{len(utts)} utterances but {len(targets)} targets")
        missing = [u for u in utts if u not in reader]
        if missing:
            where = getattr(reader, "scp_path", "the features")
            raise KeyError(f"{len(missing)} utterances have no features in {where}, e.g. "
                           f"{', '.join(missing[:3])}; re-run stage 1 (feature extraction)")
        self.reader, self.utts, self.targets = reader, list(utts), [int(t) for t in targets]

    def __len__(self):
        return len(self.utts)

    def __getitem__(self, i):
        return torch.as_tensor(np.asarray(self.reader[self.utts[i]], dtype=np.float32)), self.targets[i]


class NormalizedDataset(torch.utils.data.Dataset):
    """A FeatureDataset whose items are normalised per speaker (genser.cmvn.SpeakerNorm).

    Each item is normalised with the moments of a unit of clips of its speaker; the unit size is
    drawn per item and epoch from ``ks`` (1: the clip alone, None: all the speaker's clips), from
    a generator keyed by (seed, epoch, item), so that a resumed run draws what an uninterrupted
    one does. ``set_epoch`` is called by genser.trainer.fit.
    """

    def __init__(self, base, norm, ks, seed=0):
        self.base, self.norm, self.ks, self.seed, self.epoch = base, norm, list(ks), int(seed), 0
        self.utts, self.targets = base.utts, base.targets

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        key = self.base.utts[i]
        k = self.ks[0]
        if len(self.ks) > 1:
            k = self.ks[int(key_rng(self.seed, ("k", key), self.epoch).integers(len(self.ks)))]
        x = self.norm.apply(key, self.base.reader[key], k, self.seed, self.epoch)
        return torch.as_tensor(x), self.base.targets[i]


def pad_collate(batch):
    """[(feats [T, L, D], target)] -> feats [B, T_max, L, D] float32 (zero padded), lengths [B], targets [B]."""
    if not batch:
        raise ValueError("pad_collate got an empty batch")
    items = [torch.as_tensor(f, dtype=torch.float32) for f, _ in batch]
    shape = items[0].shape[1:]
    for i, f in enumerate(items):
        if f.dim() != 3 or f.shape[1:] != shape or f.shape[0] == 0:
            raise ValueError(f"pad_collate: item {i} has shape {list(f.shape)}; expected [T>0, "
                             f"{', '.join(map(str, shape))}] like item 0")
    lengths = torch.tensor([f.shape[0] for f in items], dtype=torch.long)
    feats = items[0].new_zeros((len(items), int(lengths.max()), *shape))
    for i, f in enumerate(items):
        feats[i, :f.shape[0]] = f
    targets = torch.tensor([int(t) for _, t in batch], dtype=torch.long)
    return feats, lengths, targets


class ArkWriter:
    """Writes ``ark`` and ``scp`` so that neither exists until every utterance is written.

    Matrices go to hidden temp files; ``commit()`` renames the ark into place and then writes the
    scp (pointing at the final ark name, relative to the scp's folder). A crash or kill leaves at most the temp files, so an
    existing scp always describes a complete ark. Use as a context manager (commit on success,
    temp files removed on an exception).
    """

    def __init__(self, ark, scp, dtype="float32"):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.ark, self.scp = Path(ark).resolve(), Path(scp)
        self.tmp_ark = self.ark.with_name(f".{self.ark.name}.tmp")
        self.tmp_scp = self.ark.with_name(f".{self.scp.name}.tmp")
        self.dtype = dtype
        self.count = 0
        # Kaldi binary matrices have no float16 type; kaldiio's "numpy" records keep the dtype.
        self._writer = kaldiio.WriteHelper(f"ark,scp:{self.tmp_ark},{self.tmp_scp}",
                                           write_function="numpy" if dtype == "float16" else None)

    def __call__(self, utt, mat):
        mat = to_storage(mat, self.dtype, utt)
        try:
            self._writer(utt, mat)
        except OSError as exc:  # ENOSPC/EFBIG name no file: say which ark (and utterance)
            raise OSError(exc.errno, f"utterance {utt}: cannot write {self.ark}: {exc.strerror or exc}") from exc
        self.count += 1

    def commit(self):
        try:
            self._writer.close()
        except OSError as exc:  # the last buffered bytes are written at close
            raise write_error(exc, self.ark) from exc
        # Ark paths relative to the scp's folder: a copied dump (cp -a) reads, and a re-run in
        # the copy rewrites, its own arks instead of the original's. FeatureReader resolves them.
        rel = os.path.relpath(self.ark, self.scp.resolve().parent)
        lines = [f"{utt} {rel}:{loc.rsplit(':', 1)[1]}\n" for utt, loc in read_kv(self.tmp_scp).items()]
        os.replace(self.tmp_ark, self.ark)
        with atomic_open(self.scp) as f:
            f.writelines(lines)
        self.tmp_scp.unlink()

    def abort(self):
        # Closing flushes the buffer, which fails again on a full disk; the temp files must go anyway.
        with contextlib.suppress(OSError):
            self._writer.close()
        for tmp in (self.tmp_ark, self.tmp_scp):
            tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

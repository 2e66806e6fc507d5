"""In-memory feature dumps for the tests: what stage 1 writes, from {utt: array} instead of audio."""
from pathlib import Path

import numpy as np

from genser.features import ArkWriter, check_finite, to_matrix, write_meta


def write_feats_dir(feat_dir, feats, meta, dtype="float32"):
    """Writes {utt: [T, L, D]} as one feats.ark/feats.scp pair plus feats.yaml."""
    feat_dir = Path(feat_dir)
    feat_dir.mkdir(parents=True, exist_ok=True)
    pooling = meta.get("pooling", "none")
    first = np.asarray(next(iter(feats.values())))
    with ArkWriter(feat_dir / "feats.ark", feat_dir / "feats.scp", dtype=dtype) as writer:
        for utt in sorted(feats):
            arr = np.asarray(feats[utt], dtype=np.float32)
            check_finite(utt, arr, "the features to write")
            writer(utt, to_matrix(arr, pooling))
    write_meta(feat_dir, {**meta, "pooling": pooling, "dtype": dtype, "num_layers": int(first.shape[1]),
                          "dim": int(first.shape[2]), "num_utts": len(feats)})

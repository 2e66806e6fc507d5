#!/usr/bin/env python3
"""The linear-probe floor of a feature dump: logistic regression on utterance features.

    python bench/probe.py --feat_dir egs/emodb/dump/whisper_base_mean --data_dir egs/emodb/data/all

The floor the trained models must clear (docs/METHOD.md §3.2): multinomial logistic regression
on the standardised utterance features (all layers of the dump concatenated), L2-regularised,
with C chosen per test fold by an inner speaker-grouped cross-validation on the training speakers
only; UA pooled over the test folds (and the mean over folds). Written with torch (L-BFGS on the
convex objective), so it needs nothing beyond genser's dependencies.
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tune  # noqa: E402  (inner_splits: the same speaker-grouped inner folds as the tuning)

from genser.datadir import ATTR_OF_TASK, load_data_dir  # noqa: E402
from genser.features import FeatureReader, load_all  # noqa: E402
from genser.folds import test_folds  # noqa: E402
from genser.metrics import summarize  # noqa: E402

C_GRID = (0.01, 0.1, 1.0, 10.0)


def fit_predict(x_fit, y_fit, x_eval, num_classes, c):
    """Standardise on the fit set, minimise mean CE + ||W||^2 / (2 C n), predict x_eval."""
    mean, std = x_fit.mean(0), x_fit.std(0).clamp_min(1e-6)
    xf, xe = (x_fit - mean) / std, (x_eval - mean) / std
    w = torch.zeros(xf.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")
    lam = 1.0 / (2.0 * c * len(xf))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xf @ w + b, y_fit) + lam * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (xe @ w + b).argmax(1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feat_dir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--inner", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_data_dir(args.data_dir)
    attr = getattr(data, ATTR_OF_TASK[args.task])
    labels = sorted(set(attr.values()))
    feats = load_all(FeatureReader(args.feat_dir), data.utts)
    x = {u: torch.as_tensor(np.asarray(f, dtype=np.float64).reshape(-1)) for u, f in feats.items()}
    y = {u: labels.index(attr[u]) for u in data.utts}

    def xy(utts):
        return torch.stack([x[u] for u in utts]), torch.tensor([y[u] for u in utts])

    refs, hyps, per_fold = [], [], []
    for fold in test_folds(data):
        inner = {c: ([], []) for c in C_GRID}
        for fit_utts, val_utts in tune.inner_splits(data, fold, args.inner, seed=0):
            (xf, yf), (xv, yv) = xy(fit_utts), xy(val_utts)
            for c in C_GRID:
                inner[c][0].extend(yv.tolist())
                inner[c][1].extend(fit_predict(xf, yf, xv, len(labels), c).tolist())
        best = max(C_GRID, key=lambda c: (summarize(*inner[c], len(labels))["ua"], -math.log10(c)))
        train_utts = [u for u in data.utts if data.fold[u] != fold]
        test_utts = [u for u in data.utts if data.fold[u] == fold]
        (xt, yt), (xs, ys) = xy(train_utts), xy(test_utts)
        pred = fit_predict(xt, yt, xs, len(labels), best).tolist()
        refs += ys.tolist()
        hyps += pred
        per_fold.append(summarize(ys.tolist(), pred, len(labels))["ua"])
        print(f"fold {fold}: C={best} UA {100 * per_fold[-1]:.1f}", flush=True)
    pooled = summarize(refs, hyps, len(labels))
    print(f"LR probe on {args.feat_dir} ({args.task}): pooled UA {100 * pooled['ua']:.1f} WA {100 * pooled['wa']:.1f} "
          f"macro-F1 {100 * pooled['macro_f1']:.1f}; mean UA over folds {100 * np.mean(per_fold):.1f}")


if __name__ == "__main__":
    main()

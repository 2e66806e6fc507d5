#!/usr/bin/env python3
"""The LR probe's solver against its first version, side by side on one dump (bench/RESULTS.md).

    python bench/probe_speed.py --feat_dir egs/emodb/dump/whisper_base_mean --data_dir egs/emodb/data/all \
        --folds "03 08 09" --out bench/results/probe_speed.md

Per outer fold, both solvers run the probe's whole job (the inner speaker-grouped CV over the C
grid, then the final fit), alternating which goes first: ``cold64``, the first version (float64,
every C from zeros, up to 200 L-BFGS iterations), and ``warm32``, genser.probe (float32, warm
starts along the C grid). Reported: the median seconds per fold of each, their ratio, and the
pooled UA of each (the solvers stop at different points of a flat optimum for weak
regularisation, so the chosen C and the decisions may differ a little).
"""
import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine_description, write_results  # noqa: E402

from genser.datadir import ATTR_OF_TASK, load_data_dir  # noqa: E402
from genser.features import FeatureReader, load_all  # noqa: E402
from genser.folds import inner_splits  # noqa: E402
from genser.metrics import summarize  # noqa: E402
from genser.probe import C_GRID, fit_path, minimise, predict  # noqa: E402


def cold64(x_fit, y_fit, num_classes, grid=C_GRID):
    """The first version's solver, per C from zeros in float64 (the baseline)."""
    x_fit = x_fit.double()
    mean, std = x_fit.mean(0), x_fit.std(0).clamp_min(1e-6)
    xf = (x_fit - mean) / std
    out = {}
    for c in grid:
        w = torch.zeros(xf.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        minimise(w, b, xf, y_fit, c, max_iter=200, history_size=20)
        out[c] = (w.detach().float(), b.detach().float(), mean.float(), std.float())
    return out


def probe_fold(solver, x, y, data, fold, k):
    """(seconds, refs, hyps) of the probe's job on one outer fold with ``solver``."""
    start = time.perf_counter()
    scores = {c: ([], []) for c in C_GRID}
    for fit, val in inner_splits(data, fold, 3, seed=0):
        path = solver(x[fit], y[fit], k)
        for c, model in path.items():
            scores[c][0].extend(y[val].tolist())
            scores[c][1].extend(predict(model, x[val]).tolist())
    best = max(C_GRID, key=lambda c: (summarize(*scores[c], k)["ua"], -math.log10(c)))
    train = [u for u in data.utts if data.fold[u] != fold]
    test = [u for u in data.utts if data.fold[u] == fold]
    model = solver(x[train], y[train], k)[best]
    return time.perf_counter() - start, y[test].tolist(), predict(model, x[test]).tolist()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feat_dir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--folds", required=True, help="outer test folds to time")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_data_dir(args.data_dir)
    attr = getattr(data, ATTR_OF_TASK[args.task])
    labels = sorted(set(attr.values()))
    feats = load_all(FeatureReader(args.feat_dir), data.utts)
    index = {u: i for i, u in enumerate(data.utts)}
    mat = torch.as_tensor(np.stack([feats[u].reshape(-1) for u in data.utts]), dtype=torch.float32)
    ys = torch.tensor([labels.index(attr[u]) for u in data.utts])

    class View:  # x[list of utts] selects their rows
        def __init__(self, t):
            self.t = t

        def __getitem__(self, utts):
            return self.t[[index[u] for u in utts]]

    x, y = View(mat), View(ys)
    solvers = {"cold64": cold64, "warm32": fit_path}
    times = {name: [] for name in solvers}
    pooled = {name: ([], []) for name in solvers}
    for i, fold in enumerate(args.folds.split()):
        order = list(solvers) if i % 2 == 0 else list(reversed(solvers))
        for name in order:
            sec, refs, hyps = probe_fold(solvers[name], x, y, data, fold, len(labels))
            times[name].append(sec)
            pooled[name][0].extend(refs)
            pooled[name][1].extend(hyps)
            print(f"fold {fold} {name}: {sec:.1f} s", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    rows = ["| solver | median s per fold | pooled UA |", "|---|---:|---:|"]
    for name in solvers:
        rows.append(f"| {name} | {med[name]:.1f} | {100 * summarize(*pooled[name], len(labels))['ua']:.1f} |")
    body = "\n".join([machine_description(), f"`{args.feat_dir}`: {mat.shape[0]} utterances x {mat.shape[1]} "
                      f"dimensions; outer folds {args.folds}; both solvers alternate within each fold.", "", *rows, "",
                      f"warm32 is {med['cold64'] / med['warm32']:.1f}x faster (ratio of the medians)."])
    print(body)
    write_results(Path(args.out), title="LR probe solver: cold float64 against warm-started float32",
                  body=body, argv=sys.argv if argv is None else ["bench/probe_speed.py", *argv])


if __name__ == "__main__":
    main()

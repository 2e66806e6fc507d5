#!/usr/bin/env python3
"""The linear-probe floor of a feature dump under the evaluation protocols: logistic regression
on utterance features.

    python bench/probe.py --feat_dir egs/emodb/dump/whisper_base_mean --data_dir egs/emodb/data/all \
        --feat_norm auto --protocols "clip speaker-3 speaker-10 speaker-all" [--out bench/results/probe_x.md]

The floor the trained models must clear (docs/METHOD.md §3.2): multinomial logistic regression
on the standardised utterance features (all layers of the dump concatenated), L2-regularised,
with C chosen per test fold by an inner speaker-grouped cross-validation on the training speakers
only (the same inner folds as bench/tune.py); UA pooled over the test folds, and the mean over
folds. ``--feat_norm`` normalises as genser-train does (genser/cmvn.py: per training speaker,
the prior from training utterances, auto by the training speaker-label dependence), and each
protocol normalises the test clips as stage 4 does, so the probe's figure sits beside the
models' under the same protocol. Inner validation speakers are scored clip by clip.

Speed: the objective is convex, so L-BFGS in float32 with warm starts along the C grid (from
the strongest regularisation to the weakest, each solution the next one's start) converges in
a fraction of the cold float64 iterations the first version spent (bench/RESULTS.md).
"""
import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tune  # noqa: E402  (inner_splits: the same speaker-grouped inner folds as the tuning)
from benchlib import machine_description, write_results  # noqa: E402

from genser.cmvn import FEAT_NORMS, SpeakerNorm, choose_feat_norm, fit_prior, parse_protocols, protocol_k  # noqa: E402
from genser.cmvn import utterance_moments  # noqa: E402
from genser.datadir import ATTR_OF_TASK, load_data_dir  # noqa: E402
from genser.features import FeatureReader, load_all  # noqa: E402
from genser.folds import test_folds  # noqa: E402
from genser.metrics import summarize  # noqa: E402

C_GRID = (0.01, 0.1, 1.0, 10.0)  # ascending C: descending regularisation, the warm-start order


def fit_path(x_fit, y_fit, num_classes, grid=C_GRID):
    """{C: (W, b, mean, std)} minimising mean CE + ||W||^2 / (2 C n) on standardised x_fit, for
    every C of ``grid`` in ascending order, each started from the previous solution."""
    mean, std = x_fit.mean(0), x_fit.std(0).clamp_min(1e-6)
    xf = (x_fit - mean) / std
    w = torch.zeros(xf.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    out = {}
    for c in sorted(grid):
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=100, history_size=10, tolerance_grad=1e-5,
                                tolerance_change=1e-7, line_search_fn="strong_wolfe")
        lam = 1.0 / (2.0 * c * len(xf))

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xf @ w + b, y_fit) + lam * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        out[c] = (w.detach().clone(), b.detach().clone(), mean, std)
    return out


def predict(model, x):
    w, b, mean, std = model
    return (((x - mean) / std) @ w + b).argmax(1)


class Probe:
    """The features of one fold's utterances as genser-train and stage 4 would normalise them."""

    def __init__(self, feats, spk, attr, feat_norm, relevance):
        self.feats, self.spk, self.attr = feats, spk, attr
        self.feat_norm, self.relevance = feat_norm, relevance
        self.moments = utterance_moments(feats, sorted(feats))

    def prior(self, train):
        kind, _ = choose_feat_norm(self.feat_norm, self.spk, {u: self.attr[u] for u in train})
        return fit_prior([self.moments[u] for u in train], self.relevance) if kind == "speaker" else None

    def matrix(self, utts, prior, k):
        """[N, L*D] float32 of ``utts``, each normalised within a unit of k clips of its speaker
        among ``utts`` (None: all), or raw without a prior."""
        if prior is None:
            rows = [self.feats[u] for u in utts]
        else:
            norm = SpeakerNorm({u: self.moments[u] for u in utts}, self.spk, prior)
            rows = [norm.apply(u, self.feats[u], k) for u in utts]
        return torch.as_tensor(np.stack([np.asarray(r, dtype=np.float32).reshape(-1) for r in rows]))


def run_fold(probe, data, labels, fold, protocols, inner):
    """(chosen C, {protocol: (refs, hyps)}) of one outer test fold."""
    y = {u: labels.index(probe.attr[u]) for u in data.utts}
    scores = {c: ([], []) for c in C_GRID}
    for fit_utts, val_utts in tune.inner_splits(data, fold, inner, seed=0):
        prior = probe.prior(fit_utts)
        path = fit_path(probe.matrix(fit_utts, prior, None), torch.tensor([y[u] for u in fit_utts]), len(labels))
        xv = probe.matrix(val_utts, prior, 1)
        for c, model in path.items():
            scores[c][0].extend(y[u] for u in val_utts)
            scores[c][1].extend(predict(model, xv).tolist())
    best = max(C_GRID, key=lambda c: (summarize(*scores[c], len(labels))["ua"], -math.log10(c)))
    train = [u for u in data.utts if data.fold[u] != fold]
    test = [u for u in data.utts if data.fold[u] == fold]
    prior = probe.prior(train)
    model = fit_path(probe.matrix(train, prior, None), torch.tensor([y[u] for u in train]), len(labels),
                     grid=[c for c in C_GRID if c <= best])[best]
    refs = [y[u] for u in test]
    return best, {p: (refs, predict(model, probe.matrix(test, prior, protocol_k(p))).tolist()) for p in protocols}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feat_dir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--feat_norm", default="none", choices=FEAT_NORMS, help="as genser-train --feat_norm")
    p.add_argument("--cmvn_relevance", type=float, default=10.0)
    p.add_argument("--protocols", default="clip", help="evaluation protocols of the test clips, clip first")
    p.add_argument("--inner", type=int, default=3)
    p.add_argument("--out", help="also write the table to this Markdown file")
    args = p.parse_args(argv)
    protocols = parse_protocols(args.protocols)
    torch.set_num_threads(1)
    start = time.time()
    data = load_data_dir(args.data_dir)
    attr = getattr(data, ATTR_OF_TASK[args.task])
    labels = sorted(set(attr.values()))
    probe = Probe(load_all(FeatureReader(args.feat_dir), data.utts), data.spk, attr, args.feat_norm,
                  args.cmvn_relevance)
    pooled = {q: ([], []) for q in protocols}
    per_fold = {q: [] for q in protocols}
    for fold in test_folds(data):
        best, out = run_fold(probe, data, labels, fold, protocols, args.inner)
        for q, (refs, hyps) in out.items():
            pooled[q][0].extend(refs)
            pooled[q][1].extend(hyps)
            per_fold[q].append(summarize(refs, hyps, len(labels))["ua"])
        print(f"fold {fold}: C={best} " + " ".join(f"{q} {100 * per_fold[q][-1]:.1f}" for q in protocols), flush=True)
    rows = ["| protocol | mean UA over folds | pooled UA | pooled WA | pooled macro-F1 |", "|---|---:|---:|---:|---:|"]
    for q in protocols:
        s = summarize(*pooled[q], len(labels))
        rows.append(f"| {q} | {100 * np.mean(per_fold[q]):.1f} | {100 * s['ua']:.1f} | {100 * s['wa']:.1f} | "
                    f"{100 * s['macro_f1']:.1f} |")
    body = "\n".join([machine_description(), f"LR probe on `{args.feat_dir}` ({args.task}, --feat_norm "
                      f"{args.feat_norm}, relevance {args.cmvn_relevance:g}); {len(per_fold['clip'])} folds; "
                      f"{(time.time() - start) / 60:.1f} min.", "", *rows])
    print(body)
    if args.out:
        write_results(Path(args.out), title=f"LR probe: {args.task}, {args.feat_dir}", body=body,
                      argv=sys.argv if argv is None else ["bench/probe.py", *argv])


if __name__ == "__main__":
    main()

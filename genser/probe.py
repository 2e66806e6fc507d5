"""The linear-probe floor of a feature dump under the evaluation protocols: logistic regression
on utterance features (run by ``genser.bin.probe``, stage 5 of the recipe).

The floor the trained models must clear (docs/METHOD.md §3.2): multinomial logistic regression
on the standardised utterance features (all layers of the dump concatenated), L2-regularised,
with C chosen per test fold by an inner speaker-grouped cross-validation on the training speakers
only (genser.folds.inner_splits, as bench/tune.py); UA pooled over the test folds, and the mean
over folds. ``feat_norm`` normalises as genser-train does (genser/cmvn.py: per training speaker,
the prior from training utterances, auto by the training speaker-label dependence; the first
unit size of ``norm_k`` for the training speakers), and each protocol normalises the test clips
as stage 4 does, so the probe's figure sits beside the models' under the same protocol. Inner
validation speakers are scored clip by clip.

Speed: the objective is convex, so L-BFGS in float32 with warm starts along the C grid (from
the strongest regularisation to the weakest, each solution the next one's start) converges in
a fraction of the cold float64 iterations of the first version (bench/RESULTS.md).
"""
import math

import numpy as np
import torch

from genser.cmvn import SpeakerNorm, choose_feat_norm, fit_prior, parse_norm_k, protocol_k, utterance_moments
from genser.folds import inner_splits
from genser.metrics import summarize

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
        minimise(w, b, xf, y_fit, c, max_iter=100, history_size=10, tolerance_grad=1e-5, tolerance_change=1e-7)
        out[c] = (w.detach().clone(), b.detach().clone(), mean, std)
    return out


def minimise(w, b, xf, y_fit, c, **lbfgs):
    """L-BFGS on mean CE + ||W||^2 / (2 C n) from the current (w, b), in place; ``lbfgs``: the
    optimiser's iteration and tolerance options."""
    opt = torch.optim.LBFGS([w, b], lr=1.0, line_search_fn="strong_wolfe", **lbfgs)
    lam = 1.0 / (2.0 * c * len(xf))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xf @ w + b, y_fit) + lam * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)


def predict(model, x):
    w, b, mean, std = model
    return (((x - mean) / std) @ w + b).argmax(1)


class Probe:
    """The features of one fold's utterances as genser-train and stage 4 would normalise them."""

    def __init__(self, feats, spk, attr, feat_norm="none", relevance=10.0, norm_k="all"):
        self.feats, self.spk, self.attr = feats, spk, attr
        self.feat_norm, self.relevance = feat_norm, relevance
        self.train_k = parse_norm_k(norm_k)[0]
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
    # fewer training speakers than inner groups leave a group empty: only full splits count
    for fit_utts, val_utts in (s for s in inner_splits(data, fold, inner, seed=0) if s[0] and s[1]):
        prior = probe.prior(fit_utts)
        path = fit_path(probe.matrix(fit_utts, prior, probe.train_k), torch.tensor([y[u] for u in fit_utts]),
                        len(labels))
        xv = probe.matrix(val_utts, prior, 1)
        for c, model in path.items():
            scores[c][0].extend(y[u] for u in val_utts)
            scores[c][1].extend(predict(model, xv).tolist())
    best = 1.0  # no inner split (a single training speaker): the grid's middle
    if scores[C_GRID[0]][0]:
        best = max(C_GRID, key=lambda c: (summarize(*scores[c], len(labels))["ua"], -math.log10(c)))
    train = [u for u in data.utts if data.fold[u] != fold]
    test = [u for u in data.utts if data.fold[u] == fold]
    prior = probe.prior(train)
    model = fit_path(probe.matrix(train, prior, probe.train_k), torch.tensor([y[u] for u in train]), len(labels),
                     grid=[c for c in C_GRID if c <= best])[best]
    refs = [y[u] for u in test]
    return best, {p: (refs, predict(model, probe.matrix(test, prior, protocol_k(p))).tolist()) for p in protocols}


def run_probe(probe, data, labels, folds, protocols, inner=3, progress=None):
    """{protocol: {"folds": {fold: summary}, "pooled": summary, "mean_ua": float}, "C": {fold: C}}
    over the test ``folds``; ``progress(fold, C, {protocol: UA})`` after each fold."""
    pooled = {q: ([], []) for q in protocols}
    out = {q: {"folds": {}} for q in protocols}
    chosen = {}
    for fold in folds:
        chosen[fold], per = run_fold(probe, data, labels, fold, protocols, inner)
        for q, (refs, hyps) in per.items():
            pooled[q][0].extend(refs)
            pooled[q][1].extend(hyps)
            out[q]["folds"][fold] = summarize(refs, hyps, len(labels))
        if progress:
            progress(fold, chosen[fold], {q: out[q]["folds"][fold]["ua"] for q in protocols})
    for q in protocols:
        out[q]["pooled"] = summarize(*pooled[q], len(labels))
        out[q]["mean_ua"] = float(np.mean([s["ua"] for s in out[q]["folds"].values()]))
    out["C"] = chosen
    return out

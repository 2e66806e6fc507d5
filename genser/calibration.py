"""Calibration and confidence of posteriors: ECE, Brier score, reliability data, temperature
scaling, and the AUROC of a confidence against correctness (docs/METHOD.md §6).

Pure numpy functions on arrays: ``probs`` [N, K] rows of posteriors, ``targets`` [N] class
indices, ``conf`` [N] a confidence (higher = more sure), ``correct`` [N] booleans.
"""
import math

import numpy as np

__all__ = ["reliability", "ece", "ece_floor", "brier", "nll", "temperature_scale", "fit_temperature", "auroc",
           "summarize_calibration", "draw_agreement", "draw_spread", "TEMPERATURE_BOUND",
           "TEMPERATURE_OBJECTIVES"]

# Floor for log-probabilities: a posterior of exactly 0 (a saturated softmax) must not give inf.
_LOG_FLOOR = 1e-12


def _check_probs(probs, targets=None):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape [N, K] with K >= 2, got {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probs must be finite and non-negative")
    if targets is None:
        return probs
    targets = np.asarray(targets)
    if targets.shape != (probs.shape[0],) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be {probs.shape[0]} integer class indices, got {targets.shape} "
                         f"{targets.dtype}")
    if targets.size and (targets.min() < 0 or targets.max() >= probs.shape[1]):
        raise ValueError(f"targets must lie in [0, {probs.shape[1]})")
    return probs, targets


def _bin_index(conf, n_bins):
    """The (lo, hi] bin of each confidence in ``conf`` (1-D, in [0, 1]) among ``n_bins`` equal-width
    bins: ceil(conf * n) - 1, with conf = 0 in the first bin."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    if conf.size and (conf.min() < 0 or conf.max() > 1 or not np.isfinite(conf).all()):
        raise ValueError("conf must lie in [0, 1]")
    return np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, int(n_bins) - 1)


def reliability(conf, correct, n_bins=15):
    """Reliability-diagram data over ``n_bins`` equal-width confidence bins of [0, 1].

    Returns a list of dicts, one per bin: ``lo``, ``hi``, ``count``, ``conf`` (mean confidence)
    and ``acc`` (accuracy); the last two are None for an empty bin. A confidence of exactly
    ``lo`` falls into the lower bin (bins are (lo, hi], the first [0, hi]), as in Guo et al. 2017.
    """
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if conf.shape != correct.shape or conf.ndim != 1:
        raise ValueError(f"conf and correct must be 1-D of one length, got {conf.shape} and {correct.shape}")
    index = _bin_index(conf, n_bins)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    bins = []
    for b in range(int(n_bins)):
        mask = index == b
        n = int(mask.sum())
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
                     "conf": float(conf[mask].mean()) if n else None,
                     "acc": float(correct[mask].mean()) if n else None})
    return bins


def ece(conf, correct, n_bins=15):
    """Expected calibration error: sum over bins of (count / N) |accuracy - mean confidence|."""
    bins = reliability(conf, correct, n_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        raise ValueError("ece of an empty set")
    return float(sum(b["count"] / total * abs(b["acc"] - b["conf"]) for b in bins if b["count"]))


def ece_floor(conf, n_bins=15):
    """The ECE that ``conf`` would score if it were perfectly calibrated: the expectation of
    ``ece(conf, correct)`` when each clip is right with probability equal to its confidence.

    ECE is a finite-sample estimate, biased upward: even calibrated confidences score above 0,
    the more so the fewer clips a bin holds. This is its floor for the clips at hand, exact, not
    simulated. In a bin of n clips, the number right is a sum of independent Bernoulli(conf_i),
    a Poisson-binomial variable S whose distribution a convolution over the clips gives
    (O(n^2)); the bin adds (n / N) E|S / n - mean conf|. An ECE near its floor cannot be told
    from calibration on this many clips (docs/METHOD.md §6).
    """
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 1:
        raise ValueError(f"conf must be 1-D, got {conf.shape}")
    index = _bin_index(conf, n_bins)
    if not conf.size:
        raise ValueError("ece_floor of an empty set")
    total = 0.0
    for b in np.unique(index):
        c = conf[index == b]
        pmf = np.ones(1)
        for ci in c:  # add one clip: right with probability ci
            pmf = np.concatenate([pmf * (1.0 - ci), [0.0]]) + np.concatenate([[0.0], pmf * ci])
        total += c.size * float(pmf @ np.abs(np.arange(c.size + 1) / c.size - c.mean()))
    return total / conf.size


def brier(probs, targets):
    """Multi-class Brier score: mean over utterances of sum_k (p_k - [k = target])^2, in [0, 2]."""
    probs, targets = _check_probs(probs, targets)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(targets)), targets] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def nll(probs, targets):
    """Mean negative log-likelihood of the targets (natural log), probabilities floored at 1e-12."""
    probs, targets = _check_probs(probs, targets)
    return float(-np.log(np.maximum(probs[np.arange(len(targets)), targets], _LOG_FLOOR)).mean())


def temperature_scale(probs, temperature):
    """Posteriors softened (T > 1) or sharpened (T < 1): softmax(log p / T).

    For posteriors that are a softmax of logits z this is exactly softmax(z / T), since log p
    differs from z by a per-row constant; so it applies to both heads' stored posteriors.
    """
    probs = _check_probs(probs)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logp = np.log(np.maximum(probs, _LOG_FLOOR)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


# The largest temperature fit_temperature searches; a fit that ends there found the posteriors
# no better than uniform (genser.trainer.calibrate_inner names it).
TEMPERATURE_BOUND = 20.0


# The scoring rules a temperature can be fitted by (both proper: the true posteriors minimise them
# in expectation; the model config's posterior.fit names one). NLL is unbounded: a few clips whose
# true class got a posterior near 0 can set T; the Brier score is bounded (at most 2 per clip), so
# T follows the bulk of the clips (docs/METHOD.md §6).
TEMPERATURE_OBJECTIVES = {"nll": nll, "brier": brier}


def fit_temperature(probs, targets, lo=0.05, hi=TEMPERATURE_BOUND, tol=1e-6, objective="nll"):
    """The temperature in [lo, hi] minimising ``objective(temperature_scale(probs, T), targets)``
    (``objective``: a key of TEMPERATURE_OBJECTIVES).

    The NLL is convex in beta = 1 / T (a log-sum-exp of functions linear in beta, minus a linear
    term), hence unimodal in log T; the Brier score need not be. So a grid of 41 points on log T
    brackets the best one, and a golden-section search between its neighbours refines it to
    ``tol`` (relative): no gradient, no randomness.
    """
    probs, targets = _check_probs(probs, targets)
    if len(targets) == 0:
        raise ValueError("fit_temperature needs at least one utterance")
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got {lo}, {hi}")
    if objective not in TEMPERATURE_OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(TEMPERATURE_OBJECTIVES)}, got {objective!r}")
    score = TEMPERATURE_OBJECTIVES[objective]

    def loss(log_t):
        return score(temperature_scale(probs, math.exp(log_t)), targets)

    grid = np.linspace(math.log(lo), math.log(hi), 41)
    best = int(np.argmin([loss(g) for g in grid]))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return float(math.exp((a + b) / 2.0))


def auroc(scores, positive):
    """Area under the ROC curve of ``scores`` separating ``positive`` from the rest.

    The Mann-Whitney statistic: the probability that a random positive scores above a random
    negative, ties counting one half. With scores = a confidence and positive = correct, it says
    how well the confidence ranks errors below correct answers (0.5: not at all). None when one
    of the two groups is empty.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape or scores.ndim != 1:
        raise ValueError(f"scores and positive must be 1-D of one length, got {scores.shape} and "
                         f"{positive.shape}")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    # mid-ranks (1-based) handle ties as one half
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def summarize_calibration(probs, targets, n_bins=15):
    """{"n", "acc", "ece", "ece_floor", "brier", "nll", "auroc"} of posteriors, confidence = the max
    posterior."""
    probs, targets = _check_probs(probs, targets)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    return {"n": int(len(targets)), "acc": float(correct.mean()), "ece": ece(conf, correct, n_bins),
            "ece_floor": ece_floor(conf, n_bins),
            "brier": brier(probs, targets), "nll": nll(probs, targets), "auroc": auroc(conf, correct)}


def draw_agreement(votes, num_classes):
    """(vote [N], agreement [N]) of ``votes`` [K, N] (the class of each of K draws per utterance):
    the most frequent class (lowest index on a tie) and the share of draws that chose it."""
    votes = np.asarray(votes)
    if votes.ndim != 2 or votes.shape[0] < 1:
        raise ValueError(f"votes must have shape [K, N] with K >= 1, got {votes.shape}")
    counts = np.stack([(votes == k).sum(axis=0) for k in range(int(num_classes))], axis=1)  # [N, C]
    vote = counts.argmax(axis=1)
    return vote, counts.max(axis=1) / votes.shape[0]


def draw_spread(samples):
    """Spread of K terminal samples per utterance, ``samples`` [K, N, D]: the root mean squared
    distance of the draws to their mean (0 when all draws land on one point)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"samples must have shape [K, N, D], got {samples.shape}")
    centred = samples - samples.mean(axis=0, keepdims=True)
    return np.sqrt((centred ** 2).sum(axis=2).mean(axis=0))

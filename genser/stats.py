"""Paired significance tests for "system A beats system B" over matched (fold, seed) pairs.

Pure functions of the list of paired differences d_i = score_A,i - score_B,i; zero differences
carry no sign and are dropped, as both tests prescribe. Both p-values are exact and two-sided.
"""
import math
from fractions import Fraction

__all__ = ["sign_test", "wilcoxon_signed_rank", "signed_ranks"]


def _nonzero(diffs, tol):
    return [float(d) for d in diffs if abs(float(d)) > tol]


def sign_test(diffs, tol=1e-12):
    """(wins, losses, p): exact two-sided binomial test of P(d > 0) = 1/2 on the non-zero d."""
    d = _nonzero(diffs, tol)
    wins = sum(x > 0 for x in d)
    n = len(d)
    if n == 0:
        return 0, 0, 1.0
    k = min(wins, n - wins)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return wins, n - wins, min(1.0, float(Fraction(2 * tail, 2**n)))


def signed_ranks(diffs, tol=1e-12):
    """Ranks of |d| (average ranks for ties) paired with the sign of d, zeros dropped."""
    d = sorted(_nonzero(diffs, tol), key=abs)
    ranks, i = [], 0
    while i < len(d):
        j = i
        while j + 1 < len(d) and math.isclose(abs(d[j + 1]), abs(d[i]), rel_tol=0, abs_tol=tol):
            j += 1
        avg = (i + j + 2) / 2  # ranks are 1-based
        ranks += [(avg, 1 if x > 0 else -1) for x in d[i:j + 1]]
        i = j + 1
    return ranks


def wilcoxon_signed_rank(diffs, tol=1e-12):
    """(W+, p): the Wilcoxon signed-rank statistic and its exact two-sided p-value.

    The null distribution of W+ is enumerated over all 2^n sign patterns of the observed ranks
    by dynamic programming on doubled ranks (integers even with average ranks for ties), so the
    p-value is exact with ties too; n up to a few hundred pairs is instant.
    """
    ranks = signed_ranks(diffs, tol)
    n = len(ranks)
    if n == 0:
        return 0.0, 1.0
    doubled = [round(2 * r) for r, _ in ranks]
    w_plus = sum(r for r, s in ranks if s > 0)
    total = sum(doubled)
    counts = [0] * (total + 1)  # counts[s]: sign patterns whose doubled W+ equals s
    counts[0] = 1
    for r in doubled:
        for s in range(total, r - 1, -1):
            counts[s] += counts[s - r]
    observed = round(2 * w_plus)
    mirrored = total - observed  # the distribution is symmetric about total / 2
    lo, hi = min(observed, mirrored), max(observed, mirrored)
    extreme = sum(counts[: lo + 1]) + sum(counts[hi:]) if lo != hi else 2**n
    return w_plus, min(1.0, float(Fraction(extreme, 2**n)))

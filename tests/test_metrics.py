"""genser.metrics: hand-computed examples and brute-force definitions on random data."""
from fractions import Fraction

import numpy as np
import pytest

from genser import metrics


def close(x, fraction):
    """Exact up to float rounding: x equals the rational ``fraction``."""
    return x == pytest.approx(float(Fraction(fraction)), rel=1e-12, abs=0)


# ref = [0,0,0,1,1,2], hyp = [0,0,1,1,2,2]: cm = [[2,1,0],[0,1,1],[0,0,1]]
# recall 2/3, 1/2, 1 -> UA 13/18; WA 4/6; F1 = 2TP/(2TP+FP+FN): 4/5, 2/4, 2/3
# macro (4/5 + 1/2 + 2/3)/3 = 59/90; weighted (3*4/5 + 2*1/2 + 1*2/3)/6 = 61/90
REF = [0, 0, 0, 1, 1, 2]
HYP = [0, 0, 1, 1, 2, 2]


def test_confusion_matrix_rows_are_reference():
    cm = metrics.confusion_matrix(REF, HYP, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert cm.dtype == np.int64


def test_hand_computed_example():
    assert close(metrics.summarize(REF, HYP, 3)["ua"], "13/18")
    assert close(metrics.summarize(REF, HYP, 3)["wa"], "2/3")
    assert close(metrics.summarize(REF, HYP, 3)["macro_f1"], "59/90")
    assert close(metrics.summarize(REF, HYP, 3)["weighted_f1"], "61/90")


def test_summarize_and_summarize_confusion_agree():
    s = metrics.summarize(np.array(REF), np.array(HYP), 3)
    assert set(s) == {"ua", "wa", "macro_f1", "weighted_f1", "n"}
    assert s["n"] == 6
    assert close(s["ua"], "13/18") and close(s["wa"], "2/3")
    assert close(s["macro_f1"], "59/90") and close(s["weighted_f1"], "61/90")
    assert metrics.summarize_confusion(metrics.confusion_matrix(REF, HYP, 3)) == s


def test_class_absent_from_ref_and_hyp_is_ignored():
    # A 4th class nobody uses changes nothing (excluded from UA and macro-F1).
    assert metrics.summarize(REF, HYP, 4) == metrics.summarize(REF, HYP, 3)
    cm = metrics.confusion_matrix(REF, HYP, 4)
    assert np.isnan(metrics.per_class_f1(cm)[3])


def test_class_only_in_hyp_counts_as_f1_zero():
    # ref [0,0,1], hyp [0,3,1]: UA over {0,1} = (1/2 + 1)/2; F1: 2/3, 1, 0 (class 3) -> macro 5/9;
    # weighted (2*2/3 + 1*1)/3 = 7/9 (class 3 has no support).  Class 2 is absent: ignored.
    ref, hyp = [0, 0, 1], [0, 3, 1]
    assert close(metrics.summarize(ref, hyp, 4)["ua"], "3/4")
    assert close(metrics.summarize(ref, hyp, 4)["wa"], "2/3")
    assert close(metrics.summarize(ref, hyp, 4)["macro_f1"], "5/9")
    assert close(metrics.summarize(ref, hyp, 4)["weighted_f1"], "7/9")


def test_class_only_in_ref_never_predicted():
    # ref [0,1,1], hyp [1,1,1]: recall 0, 1 -> UA 1/2; F1 class 0 = 0, class 1 = 4/5.
    ref, hyp = [0, 1, 1], [1, 1, 1]
    assert close(metrics.summarize(ref, hyp, 2)["ua"], "1/2")
    assert close(metrics.summarize(ref, hyp, 2)["macro_f1"], "2/5")
    assert close(metrics.summarize(ref, hyp, 2)["weighted_f1"], "8/15")


def test_perfect_and_single_utterance():
    assert metrics.summarize([2, 0, 1], [2, 0, 1], 3) == {"ua": 1.0, "wa": 1.0, "macro_f1": 1.0,
                                                         "weighted_f1": 1.0, "n": 3}
    assert metrics.summarize([1], [0], 2) == {"ua": 0.0, "wa": 0.0, "macro_f1": 0.0,
                                              "weighted_f1": 0.0, "n": 1}


def brute_force(ref, hyp, k):
    """The textbook definitions with loops and precision/recall (independent of the module)."""
    n = len(ref)
    recalls, f1, support = [], {}, {}
    for c in range(k):
        tp = sum(1 for r, h in zip(ref, hyp) if r == c and h == c)
        fp = sum(1 for r, h in zip(ref, hyp) if r != c and h == c)
        fn = sum(1 for r, h in zip(ref, hyp) if r == c and h != c)
        support[c] = tp + fn
        if support[c]:
            recalls.append(tp / support[c])
        if tp + fp + fn:  # class seen in ref or hyp
            p = tp / (tp + fp) if tp + fp else 0.0
            r = tp / (tp + fn) if tp + fn else 0.0
            f1[c] = 2 * p * r / (p + r) if p + r else 0.0
    return {"ua": sum(recalls) / len(recalls),
            "wa": sum(1 for r, h in zip(ref, hyp) if r == h) / n,
            "macro_f1": sum(f1.values()) / len(f1),
            "weighted_f1": sum(f1.get(c, 0.0) * support[c] for c in range(k)) / n,
            "n": n}


@pytest.mark.parametrize("seed", range(20))
def test_random_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    n = int(rng.integers(1, 60))
    # Skewed class draws so that some classes are often absent from ref and/or hyp.
    probs = rng.dirichlet(np.full(k, 0.5))
    ref = rng.choice(k, size=n, p=probs)
    hyp = np.where(rng.random(n) < 0.5, ref, rng.choice(k, size=n, p=probs))
    got = metrics.summarize(ref, hyp, k)
    want = brute_force(ref.tolist(), hyp.tolist(), k)
    assert got["n"] == want["n"]
    for key in ("ua", "wa", "macro_f1", "weighted_f1"):
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15), key
    cm = metrics.confusion_matrix(ref, hyp, k)
    for i in range(k):
        for j in range(k):
            assert cm[i, j] == sum(1 for r, h in zip(ref, hyp) if r == i and h == j)


@pytest.mark.parametrize("ref, hyp, k, match", [
    ([0, 1], [0], 2, "differ in length"),
    ([0, 2], [0, 1], 2, r"ref\[1\] = 2 is outside \[0, 2\)"),
    ([0, 1], [0, -1], 2, r"hyp\[1\] = -1"),
    ([0.0, 1.0], [0, 1], 2, "integer class indices"),
    ([[0, 1]], [[0, 1]], 2, "1-D"),
    ([0], [0], 0, "positive integer"),
])
def test_bad_input_raises(ref, hyp, k, match):
    with pytest.raises(ValueError, match=match):
        metrics.summarize(ref, hyp, k)


def test_empty_input():
    assert metrics.confusion_matrix([], [], 3).tolist() == [[0] * 3] * 3
    with pytest.raises(ValueError, match="no utterances"):
        metrics.summarize([], [], 3)
    with pytest.raises(ValueError, match="square"):
        metrics.summarize_confusion(np.zeros((2, 3)))

"""genser.calibration: exact values on hand-computed cases."""
import math

import numpy as np
import pytest

from genser.calibration import (auroc, brier, ece, fit_temperature, nll, reliability, summarize_calibration,
                                temperature_scale)


def test_reliability_bins_and_edges():
    conf = np.array([0.0, 0.2, 0.25, 0.5, 0.9, 1.0])
    correct = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    bins = reliability(conf, correct, n_bins=4)
    assert [b["count"] for b in bins] == [3, 1, 0, 2]  # 0.25 lies in (0, 0.25]; 0.0 in the first bin
    assert bins[0]["conf"] == pytest.approx(0.15) and bins[0]["acc"] == pytest.approx(1 / 3)
    assert bins[2]["conf"] is None and bins[2]["acc"] is None
    assert bins[3] == {"lo": 0.75, "hi": 1.0, "count": 2, "conf": pytest.approx(0.95), "acc": 0.5}


def test_ece_by_hand():
    conf = np.array([0.9, 0.9, 0.6, 0.6])
    correct = np.array([1, 0, 1, 1], dtype=bool)
    # bins of 0.1: {0.9: acc 0.5, conf 0.9}, {0.6: acc 1, conf 0.6}: 0.5 * 0.4 + 0.5 * 0.4
    assert ece(conf, correct, n_bins=10) == pytest.approx(0.4)
    assert ece(np.array([0.75, 0.75, 0.75, 0.75]), np.array([1, 1, 1, 0], dtype=bool)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="lie in"):
        ece(np.array([1.5]), np.array([True]))


def test_brier_and_nll_by_hand():
    probs = np.array([[0.5, 0.5], [1.0, 0.0]])
    targets = np.array([0, 1])
    # row 1: 0.25 + 0.25; row 2: 1 + 1
    assert brier(probs, targets) == pytest.approx(1.25)
    assert nll(probs, targets) == pytest.approx((math.log(2) - math.log(1e-12)) / 2)
    assert brier(np.eye(3), np.arange(3)) == 0.0
    with pytest.raises(ValueError, match="targets"):
        brier(probs, np.array([0, 2]))


def test_temperature_scale_is_softmax_of_scaled_logits():
    logits = np.array([[2.0, 0.0, -1.0], [0.3, 0.1, 0.2]])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for t in (0.5, 1.0, 3.0):
        expected = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)
        np.testing.assert_allclose(temperature_scale(probs, t), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        temperature_scale(probs, 0.0)


def test_fit_temperature_recovers_the_generating_temperature():
    """Labels drawn from softmax(z / 2): the NLL-optimal temperature of softmax(z) is near 2,
    and the fitted T is the minimum of the NLL (checked against a fine grid)."""
    rng = np.random.default_rng(0)
    logits = 3.0 * rng.standard_normal((4000, 4))
    true = np.exp(logits / 2.0)
    true /= true.sum(1, keepdims=True)
    targets = np.array([rng.choice(4, p=p) for p in true])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = fit_temperature(probs, targets)
    assert abs(t - 2.0) < 0.15
    grid = np.exp(np.linspace(math.log(0.5), math.log(8.0), 2001))
    best = grid[np.argmin([nll(temperature_scale(probs, g), targets) for g in grid])]
    assert t == pytest.approx(best, rel=2e-3)
    # an overconfident model is softened: ECE falls after scaling
    conf, correct = probs.max(1), probs.argmax(1) == targets
    scaled = temperature_scale(probs, t)
    assert ece(scaled.max(1), correct) < ece(conf, correct)


def test_auroc_by_hand_with_ties():
    assert auroc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.3, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    # positives {0.5, 0.7}, negatives {0.5, 0.2}: pairs (0.5,0.5)=1/2, (0.5,0.2)=1, (0.7,.)=1+1 -> 3.5/4
    assert auroc([0.5, 0.7, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auroc([0.5, 0.5], [1, 1]) is None


def test_summarize_calibration():
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    targets = np.array([0, 1, 1, 0])
    out = summarize_calibration(probs, targets, n_bins=10)
    assert out["n"] == 4 and out["acc"] == 0.75
    assert out["auroc"] == pytest.approx(1.0)  # the one error (0.6) has the lowest confidence
    assert out["brier"] == pytest.approx((0.08 + 0.72 + 0.18 + 0.02) / 4)

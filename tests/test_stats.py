"""Exact values of the paired tests (hand-computed: binomial tails and enumerated sign patterns)."""
import pytest

from genser.stats import sign_test, signed_ranks, wilcoxon_signed_rank


def test_sign_test_exact_two_sided_binomial():
    assert sign_test([1.0] * 10) == (10, 0, pytest.approx(2 / 1024))
    assert sign_test([1, -1, 1, 0, 0])[:2] == (2, 1)  # zeros are dropped
    wins, losses, p = sign_test([1, 1, 1, -1, -1])
    assert (wins, losses) == (3, 2) and p == pytest.approx(1.0)
    wins, losses, p = sign_test([1] * 8 + [-1] * 2)
    assert p == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test([]) == (0, 0, 1.0)


def test_signed_ranks_average_ties_and_drop_zeros():
    assert signed_ranks([0.0, -2.0, 1.0, 2.0]) == [(1.0, 1), (2.5, -1), (2.5, 1)]


def test_wilcoxon_exact_without_and_with_ties():
    w, p = wilcoxon_signed_rank([1, 2, 3, 4, 5])
    assert w == 15 and p == pytest.approx(2 / 32)
    # ranks 1..4, W+ = 1 + 2 + 4 = 7 of 10: P(W+ >= 7) = P(W+ <= 3) = 3/16 (patterns {}, {1}, {2}, {1,2}, {3}: 5/16)
    w, p = wilcoxon_signed_rank([0.1, 0.2, -0.3, 0.4])
    assert w == pytest.approx(7.0)
    assert p == pytest.approx(2 * 5 / 16)
    # ties: ranks 1.5, 1.5, 3; W+ = 4.5 (of 6), patterns with W+ >= 4.5: {1.5,3} x2 and {all}: 3 of 8
    w, p = wilcoxon_signed_rank([1.0, 1.0, -2.0, 0.0])
    assert w == pytest.approx(1.5 + 1.5)
    assert p == pytest.approx(1.0)
    w, p = wilcoxon_signed_rank([1.0, -1.0, 2.0])
    assert w == pytest.approx(1.5 + 3) and p == pytest.approx(2 * 3 / 8)
    assert wilcoxon_signed_rank([0, 0]) == (0.0, 1.0)

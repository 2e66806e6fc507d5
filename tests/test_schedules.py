"""Exact checks of the mean/variance schedules (docs/METHOD.md §2.2, §2.3)."""
import math

import pytest
import torch

from genser.schedules import (
    BridgeStd,
    LinearMean,
    LogisticMean,
    NoStd,
    append_dims,
    build_schedule,
)

torch.set_num_threads(1)

GRID = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)


@pytest.mark.parametrize("k,m", [(10.0, 0.5), (4.0, 0.3), (25.0, 0.8), (1e-3, 0.5), (10.0, 0.0), (10.0, 1.0)])
def test_logistic_boundaries_and_monotone(k, m):
    a = LogisticMean(k, m)
    assert a.mean(0.0) == 0.0
    assert a.mean(1.0) == 1.0
    for dtype in (torch.float32, torch.float64):
        ends = a.mean(torch.tensor([0.0, 1.0], dtype=dtype))
        assert ends.dtype == dtype
        assert ends.tolist() == [0.0, 1.0]
    vals = a.mean(GRID)
    assert torch.all(vals[1:] - vals[:-1] > 0), "logistic mean must be strictly increasing"
    assert float(vals.min()) == 0.0 and float(vals.max()) == 1.0


def test_logistic_matches_formula_and_midpoint():
    k, m = 10.0, 0.5
    sig = lambda u: 1.0 / (1.0 + math.exp(-u))  # noqa: E731
    a = LogisticMean(k, m)
    for t in (0.1, 0.25, 0.5, 0.9):
        expect = (sig(k * (t - m)) - sig(-k * m)) / (sig(k * (1 - m)) - sig(-k * m))
        assert a.mean(t) == pytest.approx(expect, abs=1e-14)
    assert a.mean(0.5) == pytest.approx(0.5, abs=1e-14)  # symmetric around m=0.5


@pytest.mark.parametrize("sched", [LogisticMean(10.0, 0.5), LogisticMean(3.0, 0.7), LinearMean()])
def test_mean_derivative_matches_finite_difference(sched):
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    h = 1e-6
    fd = (sched.mean(t + h) - sched.mean(t - h)) / (2 * h)
    assert torch.allclose(sched.mean_deriv(t), fd, rtol=1e-6, atol=1e-8)


def test_linear_mean():
    a = LinearMean()
    assert a.mean(0.0) == 0.0 and a.mean(1.0) == 1.0 and a.mean(0.3) == 0.3
    assert torch.equal(a.mean(GRID), GRID)
    assert torch.equal(a.mean_deriv(GRID), torch.ones_like(GRID))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 0.1])
def test_bridge_std_boundaries_and_shape(sigma):
    s = BridgeStd(sigma)
    assert s.std(0.0) == 0.0
    assert s.std(1.0) == 0.0
    assert s.std(0.5) == pytest.approx(sigma / 2, abs=1e-15)
    vals = s.std(GRID)
    assert torch.allclose(vals**2, sigma**2 * GRID * (1 - GRID), atol=1e-15)
    half = GRID <= 0.5
    assert torch.all(torch.diff(vals[half]) > 0) and torch.all(torch.diff(vals[~half]) < 0)
    d = s.std_deriv(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert d.tolist() == [math.inf, -math.inf]
    t = torch.linspace(0.05, 0.95, 91, dtype=torch.float64)
    fd = (s.std(t + 1e-7) - s.std(t - 1e-7)) / 2e-7
    assert torch.allclose(s.std_deriv(t), fd, rtol=1e-5, atol=1e-7)


def test_no_std_and_sigma_zero():
    assert torch.equal(NoStd().std(GRID), torch.zeros_like(GRID))
    assert torch.equal(BridgeStd(0.0).std_deriv(GRID), torch.zeros_like(GRID))
    sched = build_schedule({"sigma": 0.0})
    assert isinstance(sched.std_schedule, NoStd)


def test_append_dims():
    t = torch.arange(3.0)
    assert append_dims(t, 4).shape == (3, 1, 1, 1)
    assert append_dims(t, 1) is not None and append_dims(t, 1).shape == (3,)
    with pytest.raises(ValueError):
        append_dims(torch.zeros(2, 2), 1)


def test_build_schedule_and_errors():
    sched = build_schedule(None)
    assert (sched.mean_schedule.k, sched.mean_schedule.m, sched.std_schedule.sigma) == (10.0, 0.5, 0.5)
    assert isinstance(build_schedule({"mean": "linear"}).mean_schedule, LinearMean)
    with pytest.raises(ValueError, match="unknown schedule key"):
        build_schedule({"sigam": 0.5})
    with pytest.raises(ValueError, match="logistic or 'linear'|'logistic' or 'linear'"):
        build_schedule({"mean": "cosine"})
    with pytest.raises(ValueError, match="sigma"):
        build_schedule({"sigma": -0.1})
    with pytest.raises(ValueError, match="steepness"):
        LogisticMean(0.0, 0.5)
    with pytest.raises(ValueError, match="midpoint"):
        LogisticMean(10.0, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LogisticMean().mean(1.5)
    with pytest.raises(TypeError):
        LinearMean().mean("0.5")


def test_numbers_are_memoised_with_the_tensor_value():
    """The samplers' scalar times are memoised; the float must be the float64 tensor formula's."""
    sched = build_schedule()
    times = [0.0, 1e-3, 1.0 / 3.0, 0.5, 0.9, 1.0]
    for _ in range(2):  # the second round is served by the memo
        for t in times:
            tt = torch.tensor(t, dtype=torch.float64)
            assert sched.mean(t) == float(sched.mean_schedule._mean(tt))
            assert sched.std(t) == float(sched.std_schedule._std(tt))
            assert sched.mean_deriv(t) == float(sched.mean_schedule._mean_deriv(tt))
            assert isinstance(sched.mean(t), float)
    assert sched.std_deriv(0.0) == math.inf and sched.std_deriv(1.0) == -math.inf
    for _ in range(2):  # an out-of-range time is never stored: it raises every time
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            sched.mean(1.5)

"""Mean and variance schedules of the Gen-SER Gaussian path (docs/METHOD.md §2.1-2.3).

The perturbation is ``x_t = (1 - a(t)) x0 + a(t) x1 + s(t) z`` with ``z ~ N(0, I)``; time runs
from t=1 (initial, speech-derived sample x1) to t=0 (terminal sample x0, the label code).
A mean schedule gives ``a(t)`` and ``a'(t)``, a variance schedule gives ``s(t)`` and ``s'(t)``.

Every method takes a Python number (and returns a Python float) or a tensor (and returns a tensor
of the same dtype and device). ``append_dims`` broadcasts a per-example time vector over the
remaining dimensions, as in k-diffusion.

Example::

    >>> sched = build_schedule({"mean": "logistic", "k": 10.0, "m": 0.5, "sigma": 0.5})
    >>> sched.mean(0.0), sched.mean(1.0), sched.std(1.0)
    (0.0, 1.0, 0.0)
"""
import math

import torch

__all__ = [
    "append_dims",
    "path_mean",
    "MeanSchedule",
    "LogisticMean",
    "LinearMean",
    "StdSchedule",
    "BridgeStd",
    "NoStd",
    "Schedule",
    "build_schedule",
    "SCHEDULE_DEFAULTS",
]

SCHEDULE_DEFAULTS = {"mean": "logistic", "k": 10.0, "m": 0.5, "sigma": 0.5}


def append_dims(x, target_dims):
    """Append trailing singleton dimensions to ``x`` until it has ``target_dims`` dimensions."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * missing]


def path_mean(x0, x1, a):
    """Eq. (docs/METHOD.md §2.1): the mean of x_t, (1 - a) x0 + a x1, for a = a(t) broadcast over x0.

    The one path mean of genser: the perturbation (x0 the code) and the samplers (x0 the current
    estimate) both use it.
    """
    return (1.0 - a) * x0 + a * x1


def _check_range(t):
    if t.numel() and (torch.any(t < 0) or torch.any(t > 1)):
        raise ValueError(f"time must lie in [0, 1], got values in [{float(t.min())}, {float(t.max())}]")


def _evaluate(obj, fn, t):
    """fn (one of obj's tensor formulas) at time t, after the range check; a number in, a float out.

    Numbers are memoised per object: the samplers evaluate the schedule at the same few grid
    times for every batch, and one tensor evaluation is some fifteen small torch operators, which
    on utterance vectors cost as much as the denoiser call itself (bench/results/cost_heads.md).
    The value is the same float64 computation either way; an out-of-range time is never stored,
    so it raises on every call.
    """
    if isinstance(t, torch.Tensor):
        _check_range(t)
        return fn(t)
    if not isinstance(t, (int, float)):
        raise TypeError(f"time must be a number or a tensor, got {type(t).__name__}")
    memo = obj.__dict__.setdefault("_memo", {})
    key = (fn.__name__, float(t))
    if key not in memo:
        tt = torch.tensor(float(t), dtype=torch.float64)  # float64, so the maths stays exact
        _check_range(tt)
        if len(memo) >= 4096:  # a bound for callers that sweep many times (plots)
            memo.clear()
        memo[key] = float(fn(tt))
    return memo[key]


class MeanSchedule:
    """Base class of mean schedules a(t) with a(0)=0, a(1)=1, monotone non-decreasing."""

    name = "base"

    def mean(self, t):
        return _evaluate(self, self._mean, t)

    def mean_deriv(self, t):
        return _evaluate(self, self._mean_deriv, t)

    def _mean(self, t):
        raise NotImplementedError

    def _mean_deriv(self, t):
        raise NotImplementedError


class LinearMean(MeanSchedule):
    """a(t) = t, kept for ablation."""

    name = "linear"

    def _mean(self, t):
        return t.clone()

    def _mean_deriv(self, t):
        return torch.ones_like(t)

    def __repr__(self):
        return "LinearMean()"


class LogisticMean(MeanSchedule):
    """Logistic mean with steepness k and midpoint m, normalised so a(0)=0 and a(1)=1."""

    name = "logistic"

    def __init__(self, k=10.0, m=0.5):
        k, m = float(k), float(m)
        if not k > 0 or not math.isfinite(k):
            raise ValueError(f"logistic steepness k must be a positive finite number, got {k}")
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"logistic midpoint m must lie in [0, 1], got {m}")
        self.k, self.m = k, m
        # Eq. (docs/METHOD.md §2.2): a(t) = [S(k(t-m)) - S(-km)] / [S(k(1-m)) - S(-km)].
        self._lo = 1.0 / (1.0 + math.exp(k * m))
        self._hi = 1.0 / (1.0 + math.exp(-k * (1.0 - m)))
        self._z = self._hi - self._lo

    def _mean(self, t):
        a = (torch.sigmoid(self.k * (t - self.m)) - self._lo) / self._z
        # Pin the endpoints: sigmoid rounding in float32 must not leave a(0), a(1) off by an ulp,
        # because the sampler's last step relies on a(0)=0 to land exactly on x0_hat.
        a = torch.where(t <= 0, torch.zeros_like(a), a)
        return torch.where(t >= 1, torch.ones_like(a), a).clamp(0.0, 1.0)

    def _mean_deriv(self, t):
        # d/dt S(k(t-m)) = k S (1 - S)
        s = torch.sigmoid(self.k * (t - self.m))
        return self.k * s * (1.0 - s) / self._z

    def __repr__(self):
        return f"LogisticMean(k={self.k}, m={self.m})"


class StdSchedule:
    """Base class of standard-deviation schedules s(t)."""

    name = "base"

    def std(self, t):
        return _evaluate(self, self._std, t)

    def std_deriv(self, t):
        return _evaluate(self, self._std_deriv, t)


class NoStd(StdSchedule):
    """s(t) = 0: a deterministic path (no noise injected during training)."""

    name = "none"

    def _std(self, t):
        return torch.zeros_like(t)

    def _std_deriv(self, t):
        return torch.zeros_like(t)

    def __repr__(self):
        return "NoStd()"


class BridgeStd(StdSchedule):
    """Bridge variance s(t)^2 = sigma^2 t (1 - t): zero at both ends."""

    name = "bridge"

    def __init__(self, sigma=0.5):
        sigma = float(sigma)
        if not sigma >= 0 or not math.isfinite(sigma):
            raise ValueError(f"bridge sigma must be a finite number >= 0, got {sigma}")
        self.sigma = sigma

    def _std(self, t):
        # Eq. (docs/METHOD.md §2.3): s(t) = sigma sqrt(t (1 - t)).
        return self.sigma * torch.sqrt((t * (1.0 - t)).clamp_min(0.0))

    def _std_deriv(self, t):
        # s'(t) = sigma (1 - 2t) / (2 sqrt(t (1 - t))); it diverges at t=0 (+inf) and t=1 (-inf).
        if self.sigma == 0.0:
            return torch.zeros_like(t)
        root = torch.sqrt((t * (1.0 - t)).clamp_min(0.0))
        num = self.sigma * (1.0 - 2.0 * t)
        return torch.where(root > 0, num / (2.0 * root).clamp_min(1e-300), torch.sign(num) * math.inf)

    def __repr__(self):
        return f"BridgeStd(sigma={self.sigma})"


class Schedule:
    """A mean schedule and a variance schedule together: the Gaussian path of docs/METHOD.md §2.1."""

    def __init__(self, mean=None, std=None):
        self.mean_schedule = mean if mean is not None else LogisticMean()
        self.std_schedule = std if std is not None else BridgeStd()
        if not isinstance(self.mean_schedule, MeanSchedule):
            raise TypeError(f"mean must be a MeanSchedule, got {type(self.mean_schedule).__name__}")
        if not isinstance(self.std_schedule, StdSchedule):
            raise TypeError(f"std must be a StdSchedule, got {type(self.std_schedule).__name__}")

    def mean(self, t):
        """a(t), the weight of x1 in the mean of x_t."""
        return self.mean_schedule.mean(t)

    def mean_deriv(self, t):
        """a'(t)."""
        return self.mean_schedule.mean_deriv(t)

    def std(self, t):
        """s(t), the standard deviation of the injected noise."""
        return self.std_schedule.std(t)

    def std_deriv(self, t):
        """s'(t) (infinite at the ends for the bridge)."""
        return self.std_schedule.std_deriv(t)

    def __repr__(self):
        return f"Schedule({self.mean_schedule!r}, {self.std_schedule!r})"


def build_schedule(conf=None):
    """Build a Schedule from ``{mean: logistic|linear, k, m, sigma}``; sigma=0 gives NoStd."""
    conf = dict(SCHEDULE_DEFAULTS, **(conf or {}))
    unknown = set(conf) - set(SCHEDULE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown schedule key(s) {sorted(unknown)}; known: {sorted(SCHEDULE_DEFAULTS)}")
    if conf["mean"] == "logistic":
        mean = LogisticMean(conf["k"], conf["m"])
    elif conf["mean"] == "linear":
        mean = LinearMean()
    else:
        raise ValueError(f"schedule.mean must be 'logistic' or 'linear', got {conf['mean']!r}")
    sigma = float(conf["sigma"])
    if not sigma >= 0:
        raise ValueError(f"schedule.sigma must be >= 0, got {sigma}")
    std = BridgeStd(sigma) if sigma > 0 else NoStd()
    return Schedule(mean, std)

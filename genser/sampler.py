"""N-step samplers that carry x1 (t=1) to the terminal sample (t=0), k-diffusion style.

One contract: ``denoise(x, t)`` takes states x [B, ...] and times t [B] and returns the estimate
``x0_hat`` of the terminal sample (conditioning is closed over by the caller). As in k-diffusion,
the caller builds the time grid (``time_grid``: descending, from 1 to 0) and every sampler has the
signature ``(denoise, x1, ts, schedule, eta, generator, callback)``; ``callback`` is the one
observation hook. Samplers run under ``torch.no_grad()`` and draw noise only from ``generator``,
so runs are seeded.

``sample_tm`` is the exact Gaussian-path update with x0_hat held fixed (docs/METHOD.md §2.5):
with an oracle ``denoise`` that returns the true x0, it lands on x0 for every N and eta.
"""
import math

import torch

from genser.schedules import path_mean

__all__ = ["time_grid", "sample_tm", "sample_euler", "SAMPLERS", "get_sampler"]


def time_grid(nsteps, device=None):
    """Uniform grid [nsteps + 1] from t=1 down to t=0 (float64)."""
    if int(nsteps) != nsteps or nsteps < 1:
        raise ValueError(f"nsteps must be a positive integer, got {nsteps}")
    return torch.linspace(1.0, 0.0, int(nsteps) + 1, dtype=torch.float64, device=device)


def _randn_like(x, generator):
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def to_eps(x, mean, s):
    """The unit noise implied by state x on the path: (x - mean) / s; 0 where s = 0."""
    return (x - mean) / s if s > 0 else torch.zeros_like(x)


def _check(x1, ts, schedule, eta):
    if not isinstance(x1, torch.Tensor) or x1.ndim < 1:
        raise ValueError("x1 must be a tensor with a leading batch dimension")
    if not isinstance(ts, torch.Tensor) or ts.ndim != 1 or ts.numel() < 2:
        raise ValueError("ts must be a 1-D tensor of at least 2 times (see time_grid)")
    # The grid as Python floats, checked and stepped through without torch operators: on
    # utterance vectors each small operator costs as much as a row of the denoiser.
    grid = ts.tolist()
    if grid[0] != 1.0 or grid[-1] != 0.0 or not all(u < t for t, u in zip(grid, grid[1:])):
        raise ValueError(f"ts must descend from 1 to 0, got {grid}")
    # The state at t=1 is x1 itself, which holds for a bridge (s(1) = 0): every shipped schedule.
    if schedule.std(1.0) != 0:
        raise ValueError(f"the samplers start at x1 and need s(1) = 0; {schedule!r} has s(1) = {schedule.std(1.0)}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    return list(zip(grid, grid[1:]))


def _denoise(denoise, x, t):
    x0_hat = denoise(x, x.new_full((x.shape[0],), t))
    if x0_hat.shape != x.shape:
        raise ValueError(f"denoise returned shape {tuple(x0_hat.shape)}, expected {tuple(x.shape)}")
    return x0_hat


@torch.no_grad()
def sample_tm(denoise, x1, ts, schedule, eta=0.0, generator=None, callback=None):
    """Exact Gaussian-path sampler: one network call per step of the grid ``ts``.

    Step t -> u: x0_hat = denoise(x, t); eps_hat = (x - mean_t(x0_hat)) / s(t) (0 where s(t)=0);
    x_u = mean_u(x0_hat) + s(u) (sqrt(1 - eta^2) eps_hat + eta z). With eta > 0 and s(t) = 0 the
    unknown eps_hat is a fresh draw, so x_u has the marginal variance s(u)^2 of the path.
    The last step lands at t=0 where a=0 and s=0, so the result is the final x0_hat.
    ``callback({"i", "t", "u", "x", "x0_hat"})`` sees each step's new state and estimate.
    """
    steps = _check(x1, ts, schedule, eta)
    x = x1
    keep = math.sqrt(1.0 - eta**2)
    for i, (t, u) in enumerate(steps):
        x0_hat = _denoise(denoise, x, t)
        s_t, s_u = schedule.std(t), schedule.std(u)
        mean_u = path_mean(x0_hat, x1, schedule.mean(u))
        if s_u > 0:  # (at s(u) = 0, the last step, the noise estimate is not needed)
            if eta > 0 and s_t == 0:
                eps = _randn_like(x, generator)
            else:
                eps = to_eps(x, path_mean(x0_hat, x1, schedule.mean(t)), s_t)
            noise = eps if eta == 0 else keep * eps + eta * _randn_like(x, generator)
            mean_u = mean_u + s_u * noise
        x = mean_u
        if callback is not None:
            callback({"i": i, "t": t, "u": u, "x": x, "x0_hat": x0_hat})
    return x


@torch.no_grad()
def sample_euler(denoise, x1, ts, schedule, eta=0.0, generator=None, callback=None):
    """Plain Euler on the path ODE dx/dt = a'(t) (x1 - x0_hat) + s'(t) eps_hat, for comparison.

    Deterministic only (eta must be 0). Unlike ``sample_tm`` it is exact with an oracle only when
    the path is linear in t (linear mean, no noise).
    """
    steps = _check(x1, ts, schedule, eta)
    if eta != 0:
        raise ValueError(f"sample_euler is deterministic; eta must be 0, got {eta}")
    x = x1
    for i, (t, u) in enumerate(steps):
        x0_hat = _denoise(denoise, x, t)
        s_t = schedule.std(t)
        d = schedule.mean_deriv(t) * (x1 - x0_hat)
        if s_t > 0:  # where s(t)=0, eps_hat=0 and the (infinite) s'(t) term is dropped
            d = d + schedule.std_deriv(t) * to_eps(x, path_mean(x0_hat, x1, schedule.mean(t)), s_t)
        x = x + (u - t) * d
        if callback is not None:
            callback({"i": i, "t": t, "u": u, "x": x, "x0_hat": x0_hat})
    return x


SAMPLERS = {"tm": sample_tm, "euler": sample_euler}


def get_sampler(name):
    """Sampler function by name ("tm" or "euler")."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; known: {sorted(SAMPLERS)}") from None

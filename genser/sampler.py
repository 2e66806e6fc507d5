"""N-step samplers that carry x1 (t=1) to the terminal sample (t=0), k-diffusion style.

One contract: ``denoise(x, t)`` takes states x [B, ...] and times t [B] and returns the estimate
``x0_hat`` of the terminal sample (conditioning is closed over by the caller). All samplers share
the signature ``(denoise, x1, schedule, nsteps, eta, generator, return_trajectory, callback)``,
run under ``torch.no_grad()`` and draw noise only from ``generator``, so runs are seeded.

``sample_tm`` is the exact Gaussian-path update with x0_hat held fixed (docs/METHOD.md §2.5):
with an oracle ``denoise`` that returns the true x0, it lands on x0 for every N and eta.
"""
import math

import torch

__all__ = ["time_grid", "sample_tm", "sample_euler", "SAMPLERS", "get_sampler"]


def time_grid(nsteps, device=None):
    """Uniform grid [nsteps + 1] from t=1 down to t=0 (float64)."""
    if int(nsteps) != nsteps or nsteps < 1:
        raise ValueError(f"nsteps must be a positive integer, got {nsteps}")
    return torch.linspace(1.0, 0.0, int(nsteps) + 1, dtype=torch.float64, device=device)


def _randn_like(x, generator):
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def path_mean(x0_hat, x1, a):
    """Eq. (docs/METHOD.md §2.1): mean of x_t for a fixed terminal estimate, (1 - a) x0_hat + a x1."""
    return (1.0 - a) * x0_hat + a * x1


def to_eps(x, mean, s):
    """The unit noise implied by state x on the path: (x - mean) / s; 0 where s = 0."""
    return (x - mean) / s if s > 0 else torch.zeros_like(x)


def _check(x1, nsteps, eta):
    if not isinstance(x1, torch.Tensor) or x1.ndim < 1:
        raise ValueError("x1 must be a tensor with a leading batch dimension")
    time_grid(nsteps)  # validates nsteps
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")


def _start(x1, schedule, generator):
    """The state at t=1: x1 itself for a bridge (s(1) = 0), else x1 + s(1) z."""
    s1 = schedule.std(1.0)
    return x1 + s1 * _randn_like(x1, generator) if s1 > 0 else x1.clone()


def _finish(x, traj, return_trajectory):
    if not return_trajectory:
        return x
    traj["x"] = torch.stack(traj["x"])
    traj["x0_hat"] = torch.stack(traj["x0_hat"])
    return x, traj


@torch.no_grad()
def sample_tm(denoise, x1, schedule, nsteps=1, eta=0.0, generator=None, return_trajectory=False,
              callback=None):
    """Exact Gaussian-path sampler: N network calls on ``time_grid(nsteps)``.

    Step t -> u: x0_hat = denoise(x, t); eps_hat = (x - mean_t(x0_hat)) / s(t) (0 where s(t)=0);
    x_u = mean_u(x0_hat) + s(u) (sqrt(1 - eta^2) eps_hat + eta z). With eta > 0 and s(t) = 0 the
    unknown eps_hat is a fresh draw, so x_u has the marginal variance s(u)^2 of the path.
    The last step lands at t=0 where a=0 and s=0, so the result is the final x0_hat.

    Returns the terminal sample [B, ...], or (sample, trajectory) with trajectory
    ``{"t": [N+1], "x": [N+1, B, ...], "x0_hat": [N, B, ...]}``.
    """
    _check(x1, nsteps, eta)
    ts = time_grid(nsteps)
    x = _start(x1, schedule, generator)
    traj = {"t": ts, "x": [x], "x0_hat": []}
    keep = math.sqrt(1.0 - eta**2)
    for i in range(int(nsteps)):
        t, u = float(ts[i]), float(ts[i + 1])
        x0_hat = denoise(x, x.new_full((x.shape[0],), t))
        if x0_hat.shape != x.shape:
            raise ValueError(f"denoise returned shape {tuple(x0_hat.shape)}, expected {tuple(x.shape)}")
        s_t, s_u = schedule.std(t), schedule.std(u)
        eps = to_eps(x, path_mean(x0_hat, x1, schedule.mean(t)), s_t)
        if eta > 0 and s_t == 0:
            eps = _randn_like(x, generator)
        x = path_mean(x0_hat, x1, schedule.mean(u))
        if s_u > 0:
            noise = eps if eta == 0 else keep * eps + eta * _randn_like(x, generator)
            x = x + s_u * noise
        traj["x"].append(x)
        traj["x0_hat"].append(x0_hat)
        if callback is not None:
            callback({"i": i, "t": t, "u": u, "x": x, "x0_hat": x0_hat})
    return _finish(x, traj, return_trajectory)


@torch.no_grad()
def sample_euler(denoise, x1, schedule, nsteps=1, eta=0.0, generator=None, return_trajectory=False,
                 callback=None):
    """Plain Euler on the path ODE dx/dt = a'(t) (x1 - x0_hat) + s'(t) eps_hat, for comparison.

    Deterministic only (eta must be 0). Unlike ``sample_tm`` it is exact with an oracle only when
    the path is linear in t (linear mean, no noise).
    """
    _check(x1, nsteps, eta)
    if eta != 0:
        raise ValueError(f"sample_euler is deterministic; eta must be 0, got {eta}")
    ts = time_grid(nsteps)
    x = _start(x1, schedule, generator)
    traj = {"t": ts, "x": [x], "x0_hat": []}
    for i in range(int(nsteps)):
        t, u = float(ts[i]), float(ts[i + 1])
        x0_hat = denoise(x, x.new_full((x.shape[0],), t))
        if x0_hat.shape != x.shape:
            raise ValueError(f"denoise returned shape {tuple(x0_hat.shape)}, expected {tuple(x.shape)}")
        s_t = schedule.std(t)
        d = schedule.mean_deriv(t) * (x1 - x0_hat)
        if s_t > 0:  # where s(t)=0, eps_hat=0 and the (infinite) s'(t) term is dropped
            d = d + schedule.std_deriv(t) * to_eps(x, path_mean(x0_hat, x1, schedule.mean(t)), s_t)
        x = x + (u - t) * d
        traj["x"].append(x)
        traj["x0_hat"].append(x0_hat)
        if callback is not None:
            callback({"i": i, "t": t, "u": u, "x": x, "x0_hat": x0_hat})
    return _finish(x, traj, return_trajectory)


SAMPLERS = {"tm": sample_tm, "euler": sample_euler}


def get_sampler(name):
    """Sampler function by name ("tm" or "euler")."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; known: {sorted(SAMPLERS)}") from None

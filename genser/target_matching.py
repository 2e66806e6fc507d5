"""Target matching (TM): perturbation, time sampling and the loss (docs/METHOD.md §2.1, §2.4).

The network ``D(x_t, t, c)`` regresses the terminal sample ``x0`` itself, so the loss has no
stochastic target; only the input ``x_t`` is random.
"""
import torch
import torch.nn.functional as F

from genser.schedules import append_dims, path_mean

__all__ = ["perturb", "sample_time", "tm_loss"]


def perturb(x0, x1, t, noise, schedule):
    """Eq. (docs/METHOD.md §2.1): x_t = (1 - a(t)) x0 + a(t) x1 + s(t) noise.

    Args:
        x0: terminal samples [B, ...]; x1: initial samples, same shape.
        t: times [B] (or a number); noise: same shape as x0, or None for no noise term.
        schedule: a ``genser.schedules.Schedule``.
    """
    if x0.shape != x1.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x1 {tuple(x1.shape)} must have the same shape")
    if noise is not None and noise.shape != x0.shape:
        raise ValueError(f"noise {tuple(noise.shape)} must have the shape of x0 {tuple(x0.shape)}")
    if not isinstance(t, torch.Tensor):
        t = torch.full((x0.shape[0],), float(t), dtype=x0.dtype, device=x0.device)
    if t.ndim != 1 or t.shape[0] != x0.shape[0]:
        raise ValueError(f"t must have shape [{x0.shape[0]}], got {tuple(t.shape)}")
    a = append_dims(schedule.mean(t).to(x0.dtype), x0.ndim)
    xt = path_mean(x0, x1, a)
    if noise is not None:
        s = append_dims(schedule.std(t).to(x0.dtype), x0.ndim)
        xt = xt + s * noise
    return xt


def sample_time(batch, t_eps=1e-3, p_one=0.25, generator=None, device=None, dtype=torch.float32):
    """Times [batch]: exactly round(p_one * batch) at t=1, the rest ~ U(t_eps, 1).

    The t=1 share trains the one-step inference condition (x_t = x1) explicitly; its positions in
    the batch are random so that ordered batches do not tie it to some classes.
    """
    if int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch}")
    if not 0.0 <= t_eps < 1.0:
        raise ValueError(f"t_eps must lie in [0, 1), got {t_eps}")
    if not 0.0 <= p_one <= 1.0:
        raise ValueError(f"p_one must lie in [0, 1], got {p_one}")
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    t = t_eps + (1.0 - t_eps) * u
    n_one = int(round(p_one * batch))
    if n_one:
        idx = torch.randperm(batch, generator=generator, device=device)[:n_one]
        t[idx] = 1.0
    return t.to(dtype)


def tm_loss(x0_hat, x0, logits=None, targets=None, ce_weight=0.0, mask=None):
    """TM loss: mean squared error to the terminal code (+ ce_weight * CE over similarity logits).

    The MSE is averaged over all elements (per-coordinate), so its scale does not grow with the
    code dim. ``mask`` [B, T] (frame-level transport) restricts the MSE to valid frames.
    Returns (loss, stats) where stats holds floats "mse", "ce" (when computed) and "loss".
    """
    if x0_hat.shape != x0.shape:
        raise ValueError(f"x0_hat {tuple(x0_hat.shape)} and x0 {tuple(x0.shape)} differ in shape")
    if ce_weight < 0:
        raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
    sq = (x0_hat - x0) ** 2
    if mask is None:
        mse = sq.mean()
    else:
        m = mask.to(sq.dtype)
        m = append_dims(m, sq.ndim).expand_as(sq)
        mse = (sq * m).sum() / m.sum().clamp_min(1.0)
    loss = mse
    stats = {"mse": float(mse.detach())}
    if ce_weight > 0:
        if logits is None or targets is None:
            raise ValueError("ce_weight > 0 needs logits and targets")
        ce = F.cross_entropy(logits, targets)
        loss = loss + ce_weight * ce
        stats["ce"] = float(ce.detach())
    elif logits is not None and targets is not None:
        stats["ce"] = float(F.cross_entropy(logits.detach(), targets))
    stats["loss"] = float(loss.detach())
    return loss, stats

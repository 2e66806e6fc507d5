"""Exact checks of target matching (perturbation, time sampling, loss) and the N-step samplers."""
import math

import pytest
import torch

from genser.sampler import get_sampler, sample_euler, sample_tm, time_grid
from genser.schedules import BridgeStd, LinearMean, LogisticMean, NoStd, Schedule, build_schedule, path_mean
from genser.target_matching import perturb, sample_time, tm_loss

torch.set_num_threads(1)

SCHEDULES = {
    "logistic+bridge": Schedule(LogisticMean(10.0, 0.5), BridgeStd(0.5)),
    "logistic+bridge1": Schedule(LogisticMean(4.0, 0.3), BridgeStd(1.0)),
    "linear+none": Schedule(LinearMean(), NoStd()),
    "linear+bridge": Schedule(LinearMean(), BridgeStd(0.5)),
}


def _data(batch=8, dim=16, seed=0, shape=None):
    g = torch.Generator().manual_seed(seed)
    shape = shape or (batch, dim)
    return torch.randn(shape, generator=g) * 3, torch.randn(shape, generator=g)


def trajectory(sampler, *args, **kwargs):
    """(result, steps): the sampler's result and what its callback saw at each step."""
    steps = []
    return sampler(*args, callback=steps.append, **kwargs), steps


class Oracle:
    """A network that always returns the true x0; records the times it was called at."""

    def __init__(self, x0):
        self.x0, self.calls = x0, []

    def __call__(self, x, t):
        assert t.shape == (x.shape[0],)
        self.calls.append(t.clone())
        return self.x0.clone()


# ---------------------------------------------------------------- perturbation / target matching
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_perturb_endpoints(name):
    sched = SCHEDULES[name]
    x0, x1 = _data()
    noise = torch.randn_like(x0)
    b = x0.shape[0]
    assert torch.allclose(perturb(x0, x1, torch.zeros(b), noise, sched), x0, atol=1e-6, rtol=0)
    assert torch.allclose(perturb(x0, x1, torch.ones(b), noise, sched), x1, atol=1e-6, rtol=0)
    # scalar t, and per-example t mixing both ends
    assert torch.allclose(perturb(x0, x1, 0.0, noise, sched), x0, atol=1e-6, rtol=0)
    t = torch.tensor([0.0, 1.0] * (b // 2))
    out = perturb(x0, x1, t, noise, sched)
    assert torch.allclose(out[0::2], x0[0::2], atol=1e-6, rtol=0)
    assert torch.allclose(out[1::2], x1[1::2], atol=1e-6, rtol=0)


def test_perturb_interior_formula_and_frames():
    sched = SCHEDULES["logistic+bridge"]
    x0, x1 = _data(shape=(4, 5, 6))
    noise = torch.randn_like(x0)
    t = torch.tensor([0.2, 0.5, 0.7, 0.95])
    out = perturb(x0, x1, t, noise, sched)
    for i, ti in enumerate(t.tolist()):
        a, s = sched.mean(ti), sched.std(ti)
        assert torch.allclose(out[i], (1 - a) * x0[i] + a * x1[i] + s * noise[i], atol=1e-5)
    a = sched.mean(t)[:, None, None]
    assert torch.equal(perturb(x0, x1, t, None, sched), path_mean(x0, x1, a))
    with pytest.raises(ValueError):
        perturb(x0, x1[:, :2], t, noise, sched)
    with pytest.raises(ValueError):
        perturb(x0, x1, t[:2], noise, sched)


@pytest.mark.parametrize("batch,p_one", [(32, 0.25), (10, 0.0), (7, 1.0), (50, 0.3)])
def test_sample_time_share_at_one(batch, p_one):
    t = sample_time(batch, t_eps=1e-3, p_one=p_one, generator=torch.Generator().manual_seed(1))
    assert t.shape == (batch,)
    n_one = int((t == 1.0).sum())
    assert n_one == round(p_one * batch)
    rest = t[t != 1.0]
    assert torch.all(rest >= 1e-3) and torch.all(rest < 1.0)
    again = sample_time(batch, t_eps=1e-3, p_one=p_one, generator=torch.Generator().manual_seed(1))
    assert torch.equal(t, again)


def test_sample_time_errors():
    with pytest.raises(ValueError):
        sample_time(0)
    with pytest.raises(ValueError):
        sample_time(4, p_one=1.5)
    with pytest.raises(ValueError):
        sample_time(4, t_eps=1.0)


def test_tm_loss_values():
    x0 = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    x0_hat = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss, stats = tm_loss(x0_hat, x0)
    assert loss.item() == pytest.approx((0 + 4 + 1 + 1) / 4)
    assert stats == {"mse": pytest.approx(1.5), "loss": pytest.approx(1.5)}
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(logits, targets).item()
    loss, stats = tm_loss(x0_hat, x0, logits, targets, ce_weight=0.5)
    assert loss.item() == pytest.approx(1.5 + 0.5 * ce)
    assert stats["ce"] == pytest.approx(ce)
    # masked (frame-level) MSE: only valid frames count
    mask = torch.tensor([[True, False], [True, True]])
    a = torch.zeros(2, 2, 3)
    b = torch.ones(2, 2, 3)
    b[0, 1] = 100.0
    assert tm_loss(b, a, mask=mask)[0].item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        tm_loss(x0_hat, x0, ce_weight=1.0)


# ---------------------------------------------------------------- samplers
def test_time_grid():
    assert time_grid(1).tolist() == [1.0, 0.0]
    assert time_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            time_grid(bad)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("nsteps", [1, 2, 3, 5, 10])
def test_oracle_tm_sampler_lands_on_x0(name, nsteps):
    x0, x1 = _data()
    oracle = Oracle(x0)
    out = sample_tm(oracle, x1, time_grid(nsteps), SCHEDULES[name], eta=0.0)
    assert (out - x0).abs().max().item() <= 1e-5
    assert len(oracle.calls) == nsteps
    expect_t = time_grid(nsteps)[:-1].float()
    assert torch.equal(torch.stack([c[0] for c in oracle.calls]), expect_t)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_oracle_tm_sampler_follows_the_path(name, eta):
    """Every intermediate state of the oracle run lies on the path: x_u = mean_u(x0) + s(u) n_u.

    With x0_hat = x0, a state x_t = mean_t(x0) + s(t) n_t gives back eps_hat = n_t, so the unit
    noise n carries from step to step: n = 0 at t=1 (s(1) = 0: x1 holds no noise), a fresh draw
    z where s(t) = 0 and eta > 0, then n_u = sqrt(1 - eta^2) n_t + eta z. The draws are replayed
    from the same seed. Only the intermediate states see to_eps; the last one (s(0) = 0) does not.
    """
    sched = SCHEDULES[name]
    x0, x1 = _data(shape=(4, 3, 8))
    nsteps = 6
    _, steps = trajectory(sample_tm, Oracle(x0), x1, time_grid(nsteps), sched, eta=eta,
                          generator=torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    draw = lambda: torch.randn(x0.shape, generator=replay)  # noqa: E731
    noise = torch.zeros_like(x0)
    assert len(steps) == nsteps
    for step in steps:
        t, u = step["t"], step["u"]
        if sched.std(u) > 0 and eta > 0:
            if sched.std(t) == 0:
                noise = draw()
            noise = math.sqrt(1 - eta**2) * noise + eta * draw()
        expect = path_mean(x0, x1, sched.mean(u)) + sched.std(u) * noise
        assert torch.allclose(step["x"], expect, atol=1e-5, rtol=0), (name, eta, u)
        assert torch.equal(step["x0_hat"], x0)


def test_one_step_is_one_call_at_t1():
    x0, x1 = _data()
    oracle = Oracle(x0)
    out = sample_tm(oracle, x1, time_grid(1), SCHEDULES["logistic+bridge"])
    assert len(oracle.calls) == 1
    assert torch.equal(oracle.calls[0], torch.ones(x0.shape[0]))
    assert torch.equal(out, x0)  # N=1 returns the single estimate itself


@pytest.mark.parametrize("nsteps", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_oracle_stochastic_sampler_lands_on_x0(nsteps, eta):
    x0, x1 = _data(shape=(4, 3, 8))  # also frame-shaped states
    out = sample_tm(Oracle(x0), x1, time_grid(nsteps), SCHEDULES["logistic+bridge"], eta=eta,
                    generator=torch.Generator().manual_seed(0))
    assert (out - x0).abs().max().item() <= 1e-5


def test_stochastic_step_keeps_marginal_variance():
    # one stochastic step from t=1 to u=0.5 with the oracle: x_u ~ N(mean_u(x0), s(u)^2)
    sched = SCHEDULES["logistic+bridge1"]
    x0, x1 = torch.zeros(200000, 1), torch.ones(200000, 1)
    _, steps = trajectory(sample_tm, Oracle(x0), x1, time_grid(2), sched, eta=1.0,
                          generator=torch.Generator().manual_seed(0))
    xu = steps[0]["x"]
    a, s = sched.mean(0.5), sched.std(0.5)
    assert xu.mean().item() == pytest.approx(a, abs=0.01)
    assert xu.std().item() == pytest.approx(s, rel=0.01)
    # deterministic variant: no noise to carry from t=1, so x_u is the path mean exactly
    _, steps = trajectory(sample_tm, Oracle(x0), x1, time_grid(2), sched, eta=0.0)
    assert torch.allclose(steps[0]["x"], torch.full_like(x1, a), atol=1e-6)


def _linear_net(dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, dim, generator=g) / math.sqrt(dim)
    return lambda x, t: torch.tanh(x @ w) + t[:, None]


def test_sampler_deterministic_under_seed_and_trajectory():
    x0, x1 = _data()
    net = _linear_net(x0.shape[1])
    sched = SCHEDULES["logistic+bridge"]
    run = lambda seed: trajectory(sample_tm, net, x1, time_grid(5), sched, eta=0.7,  # noqa: E731
                                  generator=torch.Generator().manual_seed(seed))
    (a, steps), (b, _), (c, _) = run(3), run(3), run(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert [s["i"] for s in steps] == list(range(5))
    assert all(s["x"].shape == x1.shape and s["x0_hat"].shape == x1.shape for s in steps)
    assert torch.equal(steps[-1]["x"], a)
    assert [s["t"] for s in steps] + [steps[-1]["u"]] == time_grid(5).tolist()
    # eta=0 needs no generator and is deterministic
    assert torch.equal(sample_tm(net, x1, time_grid(3), sched), sample_tm(net, x1, time_grid(3), sched))


def test_sampler_is_batched():
    x0, x1 = _data(batch=6)
    net = _linear_net(x0.shape[1])
    sched = SCHEDULES["logistic+bridge"]
    full = sample_tm(net, x1, time_grid(4), sched)
    parts = torch.cat([sample_tm(net, x1[i:i + 1], time_grid(4), sched) for i in range(6)])
    assert torch.allclose(full, parts, atol=1e-6)


def test_euler_exact_only_on_linear_path():
    x0, x1 = _data()
    for nsteps in (1, 2, 5):
        out = sample_euler(Oracle(x0), x1, time_grid(nsteps), SCHEDULES["linear+none"])
        assert (out - x0).abs().max().item() <= 1e-5
    oracle = Oracle(x0)
    out = sample_euler(oracle, x1, time_grid(1), SCHEDULES["logistic+bridge"])
    assert len(oracle.calls) == 1
    assert (out - x0).abs().max().item() > 1e-2  # Euler is only an approximation here
    with pytest.raises(ValueError, match="eta"):
        sample_euler(oracle, x1, time_grid(2), SCHEDULES["logistic+bridge"], eta=0.5)


def test_sampler_errors_and_registry():
    x0, x1 = _data()
    sched = build_schedule()
    with pytest.raises(ValueError, match="ts must be a 1-D"):  # (time_grid(0) raises itself)
        sample_tm(Oracle(x0), x1, time_grid(2)[None], sched)
    with pytest.raises(ValueError):
        sample_tm(Oracle(x0), x1, time_grid(2), sched, eta=1.5)
    with pytest.raises(ValueError, match="shape"):
        sample_tm(lambda x, t: x[:, :2], x1, time_grid(2), sched)
    for bad in (torch.tensor([1.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5, 0.6, 0.0]),
                torch.tensor([0.9, 0.0]), torch.tensor([1.0, float("nan"), 0.0])):
        with pytest.raises(ValueError, match="ts must"):
            sample_tm(Oracle(x0), x1, bad, sched)

    class NoisyStart(NoStd):
        def _std(self, t):
            return torch.ones_like(t)

    with pytest.raises(ValueError, match="s\\(1\\) = 0"):
        sample_tm(Oracle(x0), x1, time_grid(2), Schedule(LinearMean(), NoisyStart()))
    assert get_sampler("tm") is sample_tm and get_sampler("euler") is sample_euler
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("heun")

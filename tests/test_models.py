"""Models: featurizer, encoder, pooling, padding invariance, toy learning, checkpoints, config."""
import copy
import os

import pytest
import torch

from genser.checkpoint import ModelError, load_model, save_model
from genser.config import DEFAULT_CONFIG, resolve_config
from genser.models import (
    AttentivePooling,
    ClassifierModel,
    Featurizer,
    FrameEncoder,
    GenSERModel,
    MeanPooling,
    build_model,
)
from genser.nn import Denoiser, lengths_to_mask, masked_mean

torch.set_num_threads(1)

LABELS = ["neutral", "happy", "angry", "sad"]
L, D = 3, 12


def _batch(batch=5, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, T, L, D, generator=g)
    lengths = torch.tensor([T, 3, 1, 5, 2][:batch])
    targets = torch.tensor([0, 1, 2, 3, 1][:batch])
    return feats, lengths, targets


def _repad(feats, lengths, value_seed=1):
    """The same batch with different (huge, random, some non-finite) values in every padded frame."""
    g = torch.Generator().manual_seed(value_seed)
    out = feats.clone()
    mask = lengths_to_mask(lengths, feats.shape[1])
    noise = torch.randn(feats.shape, generator=g) * 1e3
    out[~mask] = noise[~mask]
    out[0 if not mask[0].all() else 1, -1, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    assert not torch.equal(out, feats)
    return out


# ---------------------------------------------------------------- featurizer
def test_featurizer_starts_with_equal_weights():
    f = Featurizer(L, layers="all", normalize="none", combine="weighted")
    assert torch.equal(f.weights.data, torch.zeros(L))
    x = torch.randn(2, 4, L, D)
    assert torch.allclose(f(x), x.mean(2), atol=1e-6)


def test_featurizer_concat_keeps_every_standardised_layer():
    f = Featurizer(L, layers="all", normalize="batch", dim=D, combine="concat")
    assert f.weights is None and f.output_dim(D) == L * D
    x = torch.randn(3, 5, L, D) * 4.0 + 2.0
    y = f.train()(x)
    assert y.shape == (3, 5, L * D)
    flat = y.reshape(-1, L * D)  # every (layer, dim) column is standardised over the batch's frames
    assert torch.allclose(flat.mean(0), torch.zeros(L * D), atol=1e-4)
    assert torch.allclose(flat.var(0, unbiased=False), torch.ones(L * D), atol=1e-2)
    layer1 = x[:, :, 1].reshape(-1, D)  # the second block of the output is layer 1, standardised
    expected = (x[:, :, 1] - layer1.mean(0)) / torch.sqrt(layer1.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(y[..., D:2 * D], expected, atol=1e-5)


def test_spec_augment_masks_bands_of_channels_and_spans_of_valid_frames():
    from genser.nn.layers import spec_augment

    x = torch.ones(4, 50, 20)
    mask = torch.ones(4, 50, dtype=torch.bool)
    mask[0, 30:] = False
    g = torch.Generator().manual_seed(0)
    y = spec_augment(x, mask, time_masks=1, time_width=0.2, chan_masks=1, chan_width=0.25, generator=g)
    for b in range(4):
        zero_chans = (y[b] == 0).all(0).sum().item()
        zero_frames = (y[b] == 0).all(1).sum().item()
        assert zero_chans <= 5  # at most 25 % of 20 channels
        assert zero_frames <= (0.2 * (30 if b == 0 else 50))
    assert torch.equal(spec_augment(x, mask), x)  # no masks: identity
    u = spec_augment(torch.ones(4, 1, 20), torch.ones(4, 1, dtype=torch.bool), time_masks=3, time_width=1.0)
    assert torch.equal(u, torch.ones(4, 1, 20))  # utterance vectors get no time masks


def test_mixup_mixes_gen_ser_targets_as_codes():
    torch.manual_seed(0)
    model = build_model({"model": "genser", "augment": {"mixup": 0.4}}, LABELS, D, L).train()
    perm, lam = model.draw_mixup(6)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    soft = model.soft_targets(targets, (perm, lam))
    assert torch.allclose(soft.sum(1), torch.ones(6))
    codes = model.taxonomy.codes
    mixed = soft @ codes
    assert torch.allclose(mixed, lam * codes[targets] + (1 - lam) * codes[targets[perm]], atol=1e-6)
    assert model.eval().draw_mixup(6) is None  # never at evaluation


def test_featurizer_selection_and_single_layer_passthrough():
    x = torch.randn(2, 4, L, D)
    single = Featurizer(L, layers=[1], normalize="none", combine="weighted")
    assert single.weights is None
    assert torch.equal(single(x), x[:, :, 1])
    two = Featurizer(L, layers=[0, 2], normalize="none", combine="weighted")
    assert torch.allclose(two(x), (x[:, :, 0] + x[:, :, 2]) / 2, atol=1e-6)
    assert torch.equal(Featurizer(1, layers="all", normalize="none", combine="weighted")(x[:, :, :1]), x[:, :, 0])
    for bad in ([3], [0, 0], [], [-1]):
        with pytest.raises(ValueError):
            Featurizer(L, layers=bad, normalize="none", combine="weighted")
    with pytest.raises(ValueError):
        single(torch.randn(2, 4, L + 1, D))


def test_featurizer_normalisation():
    x = torch.randn(4, 6, L, D) * 5 + 3
    ln = Featurizer(L, layers=[0], normalize="layer", combine="weighted")(x)
    assert torch.allclose(ln.mean(-1), torch.zeros(4, 6), atol=1e-5)
    bn = Featurizer(L, layers=[0], normalize="batch", combine="weighted", dim=D)
    bn.train()
    y = bn(x)
    assert torch.allclose(y.reshape(-1, D).mean(0), torch.zeros(D), atol=1e-5)
    assert torch.allclose(bn.running_mean[0], x[:, :, 0].reshape(-1, D).mean(0), atol=1e-5)  # first batch
    bn.eval()
    assert torch.allclose(bn(x), y, atol=1e-4)


# ---------------------------------------------------------------- padding invariance
@pytest.mark.parametrize("kind", ["transformer", "conv", "mlp"])
def test_encoder_and_pooling_ignore_padding(kind):
    torch.manual_seed(0)
    enc = FrameEncoder(D, **{**DEFAULT_CONFIG["encoder"], "hidden": 16, "layers": 2, "type": kind, "heads": 2}).eval()
    pools = [MeanPooling(), AttentivePooling(16)]
    x, lengths = torch.randn(5, 7, D), torch.tensor([7, 3, 1, 5, 2])
    mask = lengths_to_mask(lengths, 7)
    x2 = x.clone()
    x2[~mask] = torch.randn(int((~mask).sum()), D) * 1e3
    h, h2 = enc(x, mask), enc(x2, mask)
    assert torch.equal(h[mask], h2[mask])
    assert torch.equal(h[~mask], torch.zeros_like(h[~mask]))
    for pool in pools:
        assert torch.equal(pool(h, mask), pool(h2, mask))
    # T=1
    assert enc(x[:, :1], mask[:, :1]).shape == (5, 1, 16)


def test_pooling_values():
    h = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert torch.equal(MeanPooling()(h, mask), torch.tensor([[1.0, 2.0], [6.0, 7.0]]))
    att = AttentivePooling(2)
    assert torch.allclose(att(h, mask)[1], h[1, 0])  # a single valid frame gets all the weight
    assert torch.equal(masked_mean(h, mask), MeanPooling()(h, mask))


@pytest.mark.parametrize("conf", [
    {"model": "genser"},
    {"model": "genser", "pooling": "attentive", "encoder": {"type": "conv"}},
    {"model": "genser", "denoiser": {"level": "frame"}},
    {"model": "classifier"},
    {"model": "classifier", "pooling": "attentive", "featurizer": {"normalize": "layer"}},
])
def test_model_predictions_ignore_padding(conf):
    torch.manual_seed(0)
    model = build_model(conf, LABELS, D, L)
    feats, lengths, targets = _batch()
    model.loss(feats, lengths, targets)  # fills the running statistics in train mode
    other = _repad(feats, lengths)
    for nsteps, eta in ((1, 0.0), (3, 0.0), (3, 0.5)):
        a = model.predict(feats, lengths, nsteps=nsteps, eta=eta, generator=torch.Generator().manual_seed(0))
        b = model.predict(other, lengths, nsteps=nsteps, eta=eta, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a["pred"], b["pred"]) and torch.equal(a["scores"], b["scores"])
    # the training loss ignores the padding too (same seed, same random draws)
    torch.manual_seed(1)
    la, _ = model.loss(feats, lengths, targets)
    torch.manual_seed(1)
    lb, _ = model.loss(other, lengths, targets)
    assert torch.equal(la, lb)


# ---------------------------------------------------------------- API
@pytest.mark.parametrize("kind", ["genser", "classifier"])
def test_model_api(kind):
    torch.manual_seed(0)
    model = build_model({"model": kind}, LABELS, D, L)
    assert model.kind == kind and model.labels == LABELS
    assert isinstance(model, GenSERModel if kind == "genser" else ClassifierModel)
    assert set(model.config) == set(DEFAULT_CONFIG) and model.config["model"] == kind
    feats, lengths, targets = _batch()
    loss, stats = model.loss(feats, lengths, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(isinstance(v, float) for v in stats.values()) and {"loss", "acc"} <= set(stats)
    loss.backward()
    assert model.encoder.proj.weight.grad is not None
    model.train()
    out = model.predict(feats, lengths, nsteps=2)
    assert model.training  # predict restores the mode it found
    assert set(out) == {"pred", "scores"}
    assert out["pred"].dtype == torch.long and out["pred"].shape == (5,)
    assert out["scores"].shape == (5, 4)
    assert torch.allclose(out["scores"].sum(-1), torch.ones(5))
    assert torch.equal(out["pred"], out["scores"].argmax(-1))
    # utterance-pooled features arrive as T=1
    one = model.predict(feats[:, :1], torch.ones(5, dtype=torch.long))
    assert one["scores"].shape == (5, 4)
    with pytest.raises(ValueError):
        model.loss(feats, lengths, torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError):
        model.predict(feats[..., :-1], lengths)
    with pytest.raises(ValueError):
        model.predict(feats, torch.tensor([8, 1, 1, 1, 1]))


def test_genser_generation_is_seeded():
    torch.manual_seed(0)
    model = build_model({}, LABELS, D, L)
    feats, lengths, _ = _batch()
    a = model.predict(feats, lengths, nsteps=4, eta=0.8, generator=torch.Generator().manual_seed(5))
    b = model.predict(feats, lengths, nsteps=4, eta=0.8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a["scores"], b["scores"])
    steps = []
    x = model.generate(feats, lengths, nsteps=3, callback=steps.append)
    assert x.shape == (5, model.taxonomy.dim) and [s["i"] for s in steps] == [0, 1, 2]
    assert all(s["x0_hat"].shape == (5, model.taxonomy.dim) for s in steps)
    assert torch.equal(steps[-1]["x"], x)


def test_denoiser_shapes():
    den = Denoiser(code_dim=8, cond_dim=6, hidden=16, layers=2, time_dim=8, mult=2, dropout=0.1)
    t = torch.rand(3)
    assert den(torch.randn(3, 8), t, torch.randn(3, 6)).shape == (3, 8)
    assert den(torch.randn(3, 5, 8), t, torch.randn(3, 5, 6)).shape == (3, 5, 8)
    with pytest.raises(ValueError):
        den(torch.randn(3, 8), torch.rand(2), torch.randn(3, 6))


# ---------------------------------------------------------------- config
def test_config_is_strict_and_resolved():
    before = copy.deepcopy(DEFAULT_CONFIG)
    conf = resolve_config({"encoder": {"hidden": 32}, "tm": {"ce_weight": 0.0}})
    assert conf["encoder"]["hidden"] == 32 and conf["encoder"]["layers"] == DEFAULT_CONFIG["encoder"]["layers"]
    assert DEFAULT_CONFIG == before
    for bad, match in [
        ({"encodr": {}}, "unknown config key 'encodr'"),
        ({"encoder": {"hiden": 3}}, "unknown config key 'encoder.hiden'"),
        ({"tm": {"p_one": 2.0}}, "p_one"),
        ({"tm": {"t_eps": "1e-3"}}, "tm.t_eps must be a number"),
        ({"tm": {"ce_tau": 0.0}}, "ce_tau"),
        ({"encoder": {"dropout": 1.0}}, "encoder.dropout"),
        ({"featurizer": {"normalize": "global"}}, "featurizer.normalize"),
        ({"model": "svm"}, "model"),
        ({"pooling": "max"}, "pooling"),
        ({"encoder": {"type": "lstm"}}, "encoder.type"),
        ({"sampler": {"method": "heun"}}, "sampler"),
        ({"schedule": {"mean": "cosine"}}, "linear"),
        ({"encoder": 3}, "mapping"),
        ({"featurizer": {"layers": "some"}}, "featurizer.layers"),
    ]:
        with pytest.raises(ValueError, match=match):
            resolve_config(bad)
    with pytest.raises(ValueError):
        build_model({"taxonomy": {"dim": 7}}, LABELS, D, L)
    with pytest.raises(ValueError):
        build_model({}, ["a"], D, L)


def test_grouped_taxonomy_model():
    groups = {"neutral": "neu", "happy": "pos", "angry": "neg", "sad": "neg"}
    model = build_model({"taxonomy": {"type": "grouped", "groups": groups}}, LABELS, D, L)
    feats, lengths, targets = _batch()
    loss, _ = model.loss(feats, lengths, targets)
    loss.backward()
    assert model.predict(feats, lengths)["scores"].shape == (5, 4)


# ---------------------------------------------------------------- learning on toy clusters
def _clusters(n, seed, K=4, T=6, sep=1.5):
    """Gaussian clusters: per-class means on every layer, frame noise, random lengths."""
    means = torch.randn(K, L, D, generator=torch.Generator().manual_seed(123)) * sep
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    return means[y][:, None] + torch.randn(n, T, L, D, generator=g), lengths, y


def _train_toy(conf, steps=150, seed=0):
    torch.manual_seed(seed)
    xtr, ltr, ytr = _clusters(512, seed=1)
    xte, lte, yte = _clusters(400, seed=2)
    model = build_model(conf, LABELS, D, L)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 512, (32,), generator=g)
        loss, _ = model.loss(xtr[idx], ltr[idx], ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, (xte, lte, yte)


@pytest.mark.parametrize("conf,nsteps", [
    ({"model": "genser"}, 1),
    ({"model": "genser"}, 3),
    ({"model": "classifier"}, 1),
])
def test_models_learn_toy_clusters(conf, nsteps):
    model, (xte, lte, yte) = _train_toy(conf)
    acc = (model.predict(xte, lte, nsteps=nsteps)["pred"] == yte).float().mean().item()
    print(f"toy accuracy {conf['model']} nsteps={nsteps}: {acc:.4f}")
    assert acc > 0.95


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("conf", [{"model": "genser"}, {"model": "classifier"},
                                  {"model": "genser", "denoiser": {"level": "frame"}, "pooling": "attentive"}])
def test_checkpoint_round_trip(tmp_path, conf):
    torch.manual_seed(0)
    model = build_model(conf, LABELS, D, L)
    feats, lengths, targets = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):  # move the weights and the running statistics away from their init
        loss, _ = model.loss(feats, lengths, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "model.pt"
    save_model(path, model, extra={"epoch": 3, "dev_ua": 0.5})
    assert os.listdir(tmp_path) == ["model.pt"]  # no temp file left behind
    loaded, extra = load_model(path)
    assert extra == {"epoch": 3, "dev_ua": 0.5, "temperature": 1.0}
    assert loaded.kind == model.kind and loaded.labels == LABELS and loaded.config == model.config
    assert not loaded.training
    for nsteps in (1, 3):
        a = model.predict(feats, lengths, nsteps=nsteps)
        b = loaded.predict(feats, lengths, nsteps=nsteps)
        assert torch.equal(a["pred"], b["pred"]) and torch.equal(a["scores"], b["scores"])
    ckpt = torch.load(path, weights_only=True)
    assert {"config", "labels", "input_dim", "num_layers", "state_dict", "extra"} <= set(ckpt)
    # a calibrated model: the temperature travels with it and rescales the posteriors exactly
    # (softmax(z / T)), never the decision
    model.temperature = 2.5
    save_model(path, model)
    loaded, extra = load_model(path)
    assert loaded.temperature == 2.5 and extra["temperature"] == 2.5
    for nsteps in (1, 3):
        hot, cold = model.predict(feats, lengths, nsteps=nsteps), loaded.predict(feats, lengths, nsteps=nsteps)
        assert torch.equal(hot["pred"], cold["pred"])
        expect = torch.softmax(torch.log(b["scores"]) / 2.5, dim=-1) if nsteps == 3 else None
        if expect is not None:
            assert torch.allclose(cold["scores"], expect, atol=1e-5)
    ckpt = torch.load(path, weights_only=True)
    ckpt["extra"]["temperature"] = -1.0
    torch.save(ckpt, path)
    with pytest.raises(ModelError, match="temperature must be a positive number"):
        load_model(path)


def test_checkpoint_of_the_metric_era_loads(tmp_path):
    # Checkpoints written before taxonomy.metric was removed store metric: cosine, the decision
    # genser still makes; they load unchanged. Another stored metric is refused by name.
    torch.manual_seed(0)
    model = build_model({}, LABELS, D, L)
    path = tmp_path / "old.pt"
    save_model(path, model)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["taxonomy"]["metric"] = "cosine"
    torch.save(ckpt, path)
    loaded, _ = load_model(path)
    feats, lengths, _ = _batch()
    assert torch.equal(loaded.predict(feats, lengths)["scores"], model.eval().predict(feats, lengths)["scores"])
    ckpt["config"]["taxonomy"]["metric"] = "l2"
    torch.save(ckpt, path)
    with pytest.raises(ModelError, match="old.pt: taxonomy.metric 'l2'"):
        load_model(path)


def test_checkpoint_from_before_the_posterior_map_keeps_cosine_posteriors(tmp_path):
    # Its stored temperature was fitted for softmax(cos / (tau T)); it keeps that map.
    torch.manual_seed(0)
    model = build_model({"posterior": {"map": "cosine"}}, LABELS, D, L)
    model.temperature = 2.0
    path = tmp_path / "old.pt"
    save_model(path, model)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["posterior"]
    torch.save(ckpt, path)
    loaded, _ = load_model(path)
    assert loaded.config["posterior"]["map"] == "cosine"
    feats, lengths, _ = _batch()
    assert torch.equal(loaded.predict(feats, lengths)["scores"], model.eval().predict(feats, lengths)["scores"])


def test_posterior_maps_share_the_decision_and_apply_the_temperature():
    torch.manual_seed(0)
    model = build_model({}, LABELS, D, L).eval()
    feats, lengths, _ = _batch()
    sample = model.generate(feats, lengths)
    out = model.predict(feats, lengths)
    assert model.config["posterior"] == {"map": "barycentric", "floor": 0.003, "fit": "nll"}
    assert torch.equal(out["pred"], model.taxonomy.decide(sample))  # the nearest code
    assert torch.allclose(out["scores"], model.taxonomy.posteriors(sample, map="barycentric", floor=0.003), atol=1e-6)
    model.temperature = 3.0
    p = model.taxonomy.posteriors(sample, map="barycentric", floor=0.003)
    assert torch.allclose(model.predict(feats, lengths)["scores"], torch.softmax(torch.log(p) / 3.0, -1), atol=1e-6)
    with pytest.raises(ValueError, match="posterior.map barycentric needs linearly independent codes"):
        build_model({"taxonomy": {"type": "joint"}}, ["a/f", "a/m", "b/f", "b/m"], D, L)
    joint = build_model({"taxonomy": {"type": "joint"}, "posterior": {"map": "cosine"}}, ["a/f", "a/m", "b/f", "b/m"], D, L)
    assert joint.predict(feats, lengths)["scores"].shape == (5, 4)
    with pytest.raises(ValueError, match="posterior.map must be one of"):
        resolve_config({"posterior": {"map": "dot"}})
    with pytest.raises(ValueError, match="posterior.floor"):
        resolve_config({"posterior": {"floor": 0}})
    with pytest.raises(ValueError, match="posterior.fit must be one of"):
        resolve_config({"posterior": {"fit": "ece"}})


def test_the_decided_class_holds_the_largest_posterior():
    # Far from every code, the coordinates can rank two classes otherwise than the cosines do.
    torch.manual_seed(0)
    model = build_model({}, LABELS, D, L).eval()
    x = torch.randn(2000, model.taxonomy.dim, generator=torch.Generator().manual_seed(1))
    plain = model.taxonomy.posteriors(x, map="barycentric", floor=model.config["posterior"]["floor"])
    out = model.decide_samples(x)
    assert torch.equal(out["pred"], model.taxonomy.decide(x))
    differs = plain.argmax(-1) != out["pred"]
    assert differs.any()  # not vacuous
    assert torch.equal(out["scores"].argmax(-1), out["pred"])
    assert torch.allclose(out["scores"].sort(-1).values, plain.sort(-1).values)  # the same values, two swapped
    assert torch.equal(out["scores"][~differs], plain[~differs])


def test_load_model_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="bad.pt"):
        load_model(bad)
    with pytest.raises(ModelError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelError, match="not a genser model"):
        load_model(other)
    model = build_model({"model": "classifier"}, LABELS, D, L)
    with pytest.raises(ValueError, match="extra.ua"):
        save_model(tmp_path / "m.pt", model, extra={"ua": object()})
    assert not (tmp_path / "m.pt").exists()

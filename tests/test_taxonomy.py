"""Exact checks of the sinusoidal taxonomy encoding and similarity decisions."""
import math

import pytest
import torch

from genser.taxonomy import (
    HierarchicalTaxonomy,
    Taxonomy,
    build_taxonomy,
    format_cosine_matrix,
    pairwise_cosine,
    project_simplex,
    similarity,
    sinusoidal_codes,
)

torch.set_num_threads(1)

EMOS = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]


def test_codes_follow_the_formula():
    K, D, base, g = 3, 6, 100.0, 2.0
    codes = sinusoidal_codes(K, D, base, g, norm="sqrt_dim")
    for k in range(K):
        for i in range(D // 2):
            w = base ** (-2 * i / D)
            assert codes[k, 2 * i].item() == pytest.approx(math.sqrt(2) * math.sin(g * k * w), abs=1e-6)
            assert codes[k, 2 * i + 1].item() == pytest.approx(math.sqrt(2) * math.cos(g * k * w), abs=1e-6)


@pytest.mark.parametrize("K,D", [(2, 8), (4, 16), (7, 64), (10, 32), (16, 128)])
def test_codes_have_equal_norm(K, D):
    codes = sinusoidal_codes(K, D)
    assert codes.shape == (K, D) and codes.dtype == torch.float32
    assert torch.allclose(codes.norm(dim=1), torch.full((K,), math.sqrt(D)), rtol=1e-6, atol=0)
    unit = sinusoidal_codes(K, D, norm="unit")
    assert torch.allclose(unit.norm(dim=1), torch.ones(K), rtol=1e-6, atol=0)


def test_default_codes_are_well_separated():
    # docs/METHOD.md §2.6: g=1, base=10000 gives cosine ~0.97 between adjacent classes (K=7, D=64)
    naive = pairwise_cosine(sinusoidal_codes(7, 64, base=10000.0, spacing=1.0))
    assert naive[0, 1].item() > 0.95
    for K in range(2, 11):
        cos = pairwise_cosine(sinusoidal_codes(K, 64))
        off = cos[~torch.eye(K, dtype=torch.bool)]
        assert off.max().item() < 0.1, f"K={K}: max off-diagonal cosine {off.max().item():.3f}"
        assert abs(off.mean().item()) < 0.1
        assert torch.allclose(cos.diagonal(), torch.ones(K), atol=1e-6)
        assert torch.allclose(cos, cos.T)


def test_cosine_decision_equals_dot_and_l2():
    # Why genser has no metric knob: with codes of one norm, dot product and negative squared L2
    # distance give the cosine decision.
    tax = Taxonomy(EMOS, dim=32)
    x = torch.randn(2000, 32, generator=torch.Generator().manual_seed(0)) * 4
    a = tax.decide(x)
    assert torch.equal(a, (x @ tax.codes.T).argmax(-1))
    assert torch.equal(a, (-torch.cdist(x, tax.codes) ** 2).argmax(-1))
    assert torch.equal(tax.decide(tax.codes), torch.arange(len(EMOS)))


def test_scores_and_posteriors():
    tax = Taxonomy(["a", "b", "c"], dim=16)
    x = tax.codes[[2, 0]] * 0.5
    cos = tax.scores(x)
    assert cos.shape == (2, 3)
    assert cos[0, 2].item() == pytest.approx(1.0, abs=1e-6) and cos[1, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(similarity(x, tax.codes), torch.nn.functional.cosine_similarity(
        x[:, None, :], tax.codes[None], dim=-1), atol=1e-6)
    post = tax.posteriors(x, map="cosine", tau=0.1)
    assert torch.allclose(post.sum(-1), torch.ones(2))
    assert torch.allclose(post, torch.softmax(cos / 0.1, dim=-1))
    assert torch.allclose(tax.posteriors(x, map="cosine", tau=0.1, temperature=2.0), torch.softmax(cos / 0.2, dim=-1))
    assert tax.index("b") == 1 and torch.equal(tax.encode(torch.tensor([1])), tax.codes[1:2])
    with pytest.raises(ValueError):
        tax.posteriors(x, map="cosine", tau=0.0)
    with pytest.raises(ValueError, match="posterior map"):
        tax.posteriors(x, map="dot", tau=0.1, floor=0.01)
    with pytest.raises(ValueError):
        tax.scores(torch.zeros(2, 8))
    with pytest.raises(ValueError):
        tax.index("z")


def test_pairwise_cosine_report():
    codes = sinusoidal_codes(4, 16)
    text = format_cosine_matrix(codes, ["neu", "hap", "ang", "sad"])
    assert "ang" in text and "off-diagonal cosine: mean" in text
    assert len(text.splitlines()) == 4 + 2


def test_hierarchical_decodes_each_level():
    levels = [["negative", "neutral", "positive"], ["f", "m"]]
    tax = HierarchicalTaxonomy(levels, dim=32)
    assert tax.labels == ["negative/f", "negative/m", "neutral/f", "neutral/m", "positive/f", "positive/m"]
    assert torch.allclose(tax.codes.norm(dim=1), torch.full((6,), math.sqrt(32)), rtol=1e-6)
    # siblings share the coarse block
    assert torch.equal(tax.codes[0, :16], tax.codes[1, :16])
    assert not torch.equal(tax.codes[0, 16:], tax.codes[1, 16:])
    noisy = tax.codes + 0.3 * torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    lv0, lv1 = tax.decide_levels(noisy)
    assert lv0.tolist() == [0, 0, 1, 1, 2, 2]
    assert lv1.tolist() == [0, 1, 0, 1, 0, 1]
    assert tax.decide(noisy).tolist() == list(range(6))
    assert torch.equal(tax.level_index, torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]]))
    # a joint code with the levels mixed: each level decodes on its own
    mixed = torch.cat([tax.level_codes(0)[2], tax.level_codes(1)[0]])[None]
    assert [int(v) for v in tax.decide_levels(mixed)] == [2, 0]


def test_build_taxonomy_kinds():
    flat = build_taxonomy({"dim": 16}, EMOS)
    assert type(flat) is Taxonomy and flat.codes.shape == (7, 16)
    joint = build_taxonomy({"type": "joint", "dim": 32}, ["angry/f", "angry/m", "sad/f", "sad/m"])
    assert joint.levels == [["angry", "sad"], ["f", "m"]]
    assert [x.tolist() for x in joint.decide_levels(joint.codes)] == [[0, 0, 1, 1], [0, 1, 0, 1]]
    groups = {"angry": "neg", "sad": "neg", "happy": "pos", "neutral": "neu"}
    grouped = build_taxonomy({"type": "grouped", "groups": groups, "dim": 32}, ["angry", "happy", "neutral", "sad"])
    assert grouped.levels[0] == ["neg", "pos", "neu"]
    assert grouped.labels == ["neg/angry", "pos/happy", "neu/neutral", "neg/sad"]
    assert [x.tolist() for x in grouped.decide_levels(grouped.codes)] == [[0, 1, 2, 0], [0, 1, 2, 3]]
    assert torch.equal(grouped.codes[0, :16], grouped.codes[3, :16])


def test_taxonomy_errors():
    with pytest.raises(ValueError, match="even"):
        sinusoidal_codes(3, 7)
    with pytest.raises(ValueError):
        sinusoidal_codes(0, 8)
    with pytest.raises(ValueError):
        sinusoidal_codes(3, 8, base=0.0)
    with pytest.raises(ValueError, match="duplicate"):
        Taxonomy(["a", "a"])
    with pytest.raises(ValueError, match="unknown taxonomy key"):
        build_taxonomy({"dimension": 8}, ["a", "b"])
    with pytest.raises(ValueError, match="no parent"):
        build_taxonomy({"type": "grouped", "groups": {"a": "x"}}, ["a", "b"])
    with pytest.raises(ValueError, match="parts"):
        build_taxonomy({"type": "joint"}, ["a/f", "b"])
    with pytest.raises(ValueError, match="even"):
        HierarchicalTaxonomy([["a", "b"], ["c", "d"]], dim=6)
    with pytest.raises(ValueError, match="not a label"):
        HierarchicalTaxonomy([["a", "b"], ["c", "d"]], classes=["a/x"], dim=8)


def test_project_simplex_exact_cases():
    v = torch.tensor([[0.2, 0.5, 0.9], [0.0, 0.0, 0.5], [3.0, -1.0, 0.0], [0.1, 0.3, 0.6]], dtype=torch.float64)
    p = project_simplex(v)
    expected = torch.tensor([[0.0, 0.3, 0.7], [1 / 6, 1 / 6, 2 / 3], [1.0, 0.0, 0.0], [0.1, 0.3, 0.6]],
                            dtype=torch.float64)
    assert torch.allclose(p, expected, atol=1e-12)  # the last row is on the simplex: unchanged
    g = torch.Generator().manual_seed(0)
    v = torch.randn(200, 7, generator=g, dtype=torch.float64) * 3
    p = project_simplex(v)
    assert (p >= 0).all() and torch.allclose(p.sum(-1), torch.ones(200, dtype=torch.float64))
    assert torch.equal(p.argmax(-1), v.argmax(-1))
    assert torch.allclose(project_simplex(p), p, atol=1e-12)
    # the nearest point: no simplex point is closer (random candidates)
    q = torch.distributions.Dirichlet(torch.ones(7, dtype=torch.float64)).sample((500,))
    assert ((v[:, None] - q[None]).norm(dim=-1) >= (v - p).norm(dim=-1, keepdim=True) - 1e-12).all()


def test_barycentric_posteriors_recover_the_mixture_of_codes():
    tax = Taxonomy(EMOS, dim=64)
    mix = torch.distributions.Dirichlet(torch.ones(len(EMOS))).sample((50,))
    x = mix @ tax.codes
    assert torch.allclose(tax.coordinates(x), mix, atol=1e-5)
    floor = 0.01
    post = tax.posteriors(x, map="barycentric", floor=floor)
    assert torch.allclose(post, (1 - floor) * mix + floor / len(EMOS), atol=1e-5)
    hot = tax.posteriors(x, map="barycentric", floor=floor, temperature=0.5)
    assert torch.allclose(hot, torch.softmax(2 * torch.log((1 - floor) * mix + floor / len(EMOS)), -1), atol=1e-5)
    assert torch.equal(tax.posteriors(tax.codes, map="barycentric", floor=floor).argmax(-1), torch.arange(len(EMOS)))
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="floor"):
            tax.posteriors(x, map="barycentric", floor=bad)


def test_coordinates_follow_loaded_codes_and_refuse_dependent_codes():
    tax = Taxonomy(["a", "b", "c"], dim=8)
    state = tax.state_dict()
    assert "coord_map" not in state  # derived from the codes, not stored
    other = Taxonomy(["a", "b", "c"], dim=8, spacing=777.0)
    other.load_state_dict(state)
    assert torch.allclose(other.coordinates(tax.codes), torch.eye(3), atol=1e-5)
    joint = build_taxonomy({"type": "joint"}, ["ang/f", "ang/m", "sad/f", "sad/m"])
    assert tax.independent and not joint.independent
    with pytest.raises(ValueError, match="linearly dependent"):
        joint.coordinates(joint.codes)

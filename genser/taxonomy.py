"""Sinusoidal taxonomy encoding: class labels as continuous codes (docs/METHOD.md §2.6, §2.7).

Class index k becomes ``e_k[2i] = sin(g k w_i)``, ``e_k[2i+1] = cos(g k w_i)``,
``w_i = base^(-2i/D)`` with spacing ``g``. Each (sin, cos) pair has unit norm, so every code has
the same norm; codes are scaled so that ``||e_k|| = sqrt(D)`` (each coordinate has RMS 1, the
scale of unit Gaussian noise), or to unit norm with ``norm="unit"``.

Defaults ``base=1000, spacing=10750`` were chosen by measurement: with g=1, base=10000 adjacent
codes have cosine ~0.97. With the defaults, the largest off-diagonal cosine for K <= 16 classes is
0.04 at D=32, 64 and 128 (mean -0.04 .. 0.0), i.e. the codes are nearly orthogonal. Use
``pairwise_cosine`` to report the matrix of any code set.

Example::

    >>> tax = Taxonomy(["neutral", "happy", "angry", "sad"], dim=64)
    >>> tax.codes.shape
    torch.Size([4, 64])
    >>> int(tax.decide(tax.codes[2:3])[0])
    2
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "sinusoidal_codes",
    "pairwise_cosine",
    "project_simplex",
    "POSTERIOR_MAPS",
    "format_cosine_matrix",
    "Taxonomy",
    "HierarchicalTaxonomy",
    "build_taxonomy",
    "TAXONOMY_DEFAULTS",
]

TAXONOMY_DEFAULTS = {
    # flat | joint (labels "a/b") | grouped (groups: {label: parent}) | hierarchical (families)
    "type": "flat",
    "dim": 64,
    "base": 1000.0,
    "spacing": 10750.0,
    "norm": "sqrt_dim",  # sqrt_dim | unit
    "groups": None,
    "sep": "/",
    # hierarchical: {label: family}; may name labels of other corpora too (one map per project)
    "families": None,
    # hierarchical: [family_dim, leaf_dim] (even, sum = dim); None splits dim in halves
    "level_dims": None,
}


def sinusoidal_codes(num_classes, dim, base=1000.0, spacing=10750.0, norm="sqrt_dim"):
    """Codes [num_classes, dim] (float32) of the sinusoidal taxonomy encoding."""
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    if int(dim) != dim or dim < 2 or dim % 2:
        raise ValueError(f"code dim must be a positive even integer, got {dim}")
    if not base > 0 or not math.isfinite(base):
        raise ValueError(f"base must be a positive finite number, got {base}")
    if not spacing > 0 or not math.isfinite(spacing):
        raise ValueError(f"spacing must be a positive finite number, got {spacing}")
    if norm not in ("sqrt_dim", "unit"):
        raise ValueError(f"norm must be 'sqrt_dim' or 'unit', got {norm!r}")
    # float64 phases: g*k*w_0 reaches ~1e5 rad, where float32 would lose the fractional part.
    i = torch.arange(dim // 2, dtype=torch.float64)
    w = float(base) ** (-2.0 * i / dim)
    k = torch.arange(int(num_classes), dtype=torch.float64)[:, None]
    phase = float(spacing) * k * w
    codes = torch.empty(int(num_classes), int(dim), dtype=torch.float64)
    codes[:, 0::2] = torch.sin(phase)
    codes[:, 1::2] = torch.cos(phase)
    # Every code has norm sqrt(dim/2) exactly (sin^2 + cos^2 = 1 per pair).
    scale = math.sqrt(2.0) if norm == "sqrt_dim" else math.sqrt(2.0 / dim)
    return (codes * scale).float()


def pairwise_cosine(codes):
    """Cosine-similarity matrix [K, K] of a code set [K, D]."""
    c = F.normalize(codes.double(), dim=-1)
    return (c @ c.T).to(codes.dtype)


def format_cosine_matrix(codes, labels=None):
    """Human-readable pairwise-cosine table (for experiment logs) plus mean/max off-diagonal."""
    cos = pairwise_cosine(codes)
    k = cos.shape[0]
    labels = [str(i) for i in range(k)] if labels is None else list(labels)
    width = max(6, max(len(x) for x in labels))
    lines = [" " * width + " " + " ".join(f"{x[:width]:>{width}}" for x in labels)]
    for i in range(k):
        lines.append(f"{labels[i]:>{width}} " + " ".join(f"{float(v):>{width}.3f}" for v in cos[i]))
    if k > 1:
        off = cos[~torch.eye(k, dtype=torch.bool)]
        lines.append(f"off-diagonal cosine: mean {float(off.mean()):.3f}, max {float(off.max()):.3f}")
    return "\n".join(lines)


# How a terminal sample becomes posteriors (docs/METHOD.md §2.7): "barycentric" reads them as the
# sample's coordinates in the codes, "cosine" as a softmax of the cosines over a temperature.
POSTERIOR_MAPS = ("barycentric", "cosine")


def project_simplex(v):
    """Euclidean projection of every row of v [..., K] onto the probability simplex.

    p = max(v - theta, 0) with the one theta per row that makes p sum to 1 (Held, Wolfe and
    Crowder 1974; Duchi et al. 2008): sort descending, and theta is (sum of the rho largest - 1)
    / rho for the largest rho whose rho-th entry still exceeds it. A shift and a clamp keep the
    order of the entries, so the argmax too. Sort, cumsum and gather only: it exports to ONNX.
    """
    u = torch.sort(v, dim=-1, descending=True).values
    excess = u.cumsum(-1) - 1.0
    rank = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    rho = (u - excess / rank > 0).sum(-1, keepdim=True)  # >= 1: the largest entry always qualifies
    theta = excess.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - theta).clamp_min(0.0)


class Taxonomy(nn.Module):
    """Flat taxonomy: one sinusoidal code per label, similarity scoring and decisions.

    Args:
        labels: class names in the fixed class order.
        dim, base, spacing, norm: see ``sinusoidal_codes``.

    Scores are cosine similarities. All codes have the same norm, so the dot product and the
    negative squared L2 distance would give the same decisions (docs/METHOD.md §2.7).
    """

    def __init__(self, labels, dim=64, base=1000.0, spacing=10750.0, norm="sqrt_dim"):
        super().__init__()
        labels = [str(x) for x in labels]
        if not labels:
            raise ValueError("a taxonomy needs at least one label")
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate labels in {labels}")
        self.labels, self.dim = labels, int(dim)
        self.base, self.spacing, self.norm = float(base), float(spacing), norm
        # Persistent buffer: a checkpoint decodes against exactly the codes it was trained with.
        self.register_buffer("codes", self._make_codes())
        # The least-squares map from a sample to its coordinates in the codes, [D, K], kept in step
        # with the codes (also after a checkpoint's codes are loaded): a constant of the ONNX graph.
        self.register_buffer("coord_map", self._coord_map(), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module._refresh_coord_map())

    def _make_codes(self):
        return sinusoidal_codes(len(self.labels), self.dim, self.base, self.spacing, self.norm)

    def _coord_map(self):
        codes = self.codes.double()
        if torch.linalg.matrix_rank(codes) < codes.shape[0]:
            return None  # dependent codes: coordinates are not unique (a joint product taxonomy)
        return torch.linalg.pinv(codes).to(self.codes.dtype)

    def _refresh_coord_map(self):
        self.coord_map = self._coord_map()

    @property
    def independent(self):
        """Whether the codes are linearly independent, so that a sample has unique coordinates."""
        return self.coord_map is not None

    @property
    def num_classes(self):
        return len(self.labels)

    def index(self, label):
        """Class index of a label name."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise ValueError(f"label {label!r} is not in the taxonomy {self.labels}") from None

    def encode(self, targets):
        """Codes [B, D] of class indices [B]."""
        return self.codes[targets]

    def scores(self, x):
        """Cosine similarity [..., K] of x [..., D] to every code."""
        return similarity(x, self.codes)

    def decide(self, x):
        """Argmax class index [...] of x [..., D]."""
        return self.scores(x).argmax(dim=-1)

    def coordinates(self, x):
        """The barycentric coordinates [..., K] of x [..., D]: the least-squares weights w with
        x ~ sum_k w_k c_k, projected onto the probability simplex (``project_simplex``)."""
        if not self.independent:
            raise ValueError(f"the {self.num_classes} codes are linearly dependent, so a sample has no unique "
                             "coordinates in them; use the cosine posterior map")
        return project_simplex(x @ self.coord_map.to(x.dtype))

    def posteriors(self, x, *, map, tau=None, floor=None, temperature=1.0):
        """Posteriors [..., K] of samples x [..., D]; rows sum to 1 (docs/METHOD.md §2.7). The
        model config's ``posterior`` section and ``tm.ce_tau`` hold the values (no defaults here).

        ``barycentric``: a sample trained by MSE to reach its class code estimates E[code | speech]
        = sum_k p_k c_k, so its coordinates in the codes estimate p. They are mixed with ``floor``
        of the uniform distribution (a coordinate of 0 is not a certainty) and sharpened or
        softened by ``temperature``: softmax(log p / T). ``cosine``: softmax(cos / (tau T)), the
        map of the CE term (tm.ce_tau); its largest posterior is bounded below 1 by tau.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if map == "cosine":
            if tau is None or not tau > 0:
                raise ValueError(f"temperature tau must be > 0, got {tau}")
            return torch.softmax(self.scores(x) / (tau * temperature), dim=-1)
        if map != "barycentric":
            raise ValueError(f"posterior map must be one of {POSTERIOR_MAPS}, got {map!r}")
        if floor is None or not 0 < floor < 1:
            raise ValueError(f"posterior floor must lie in (0, 1), got {floor}")
        p = (1.0 - floor) * self.coordinates(x) + floor / self.num_classes
        return torch.softmax(torch.log(p) / temperature, dim=-1)

    def extra_repr(self):
        return f"K={self.num_classes}, dim={self.dim}, base={self.base}, spacing={self.spacing}, norm={self.norm}"


class HierarchicalTaxonomy(Taxonomy):
    """Per-level codes concatenated: siblings share part of their code, each level decodes alone.

    Args:
        levels: one label list per level, coarse to fine, e.g. ``[["neg", "pos"], ["angry", ...]]``.
        classes: joint classes in class order, each a tuple of per-level labels or a string joined
            by ``sep`` ("angry/f"); default: the full product of the levels.
        dim: total code dim, split evenly over levels (each share must be even), or ``level_dims``.
    """

    def __init__(self, levels, classes=None, dim=64, base=1000.0, spacing=10750.0, norm="sqrt_dim",
                 sep="/", level_dims=None):
        levels = [[str(x) for x in lv] for lv in levels]
        if len(levels) < 1 or any(not lv for lv in levels):
            raise ValueError(f"levels must be a non-empty list of non-empty label lists, got {levels}")
        for lv in levels:
            if len(set(lv)) != len(lv):
                raise ValueError(f"duplicate labels within a level: {lv}")
        if level_dims is None:
            if dim % len(levels) or (dim // len(levels)) % 2:
                raise ValueError(f"dim {dim} does not split into {len(levels)} even per-level parts; "
                                 "pass level_dims")
            level_dims = [dim // len(levels)] * len(levels)
        level_dims = [int(d) for d in level_dims]
        if len(level_dims) != len(levels):
            raise ValueError(f"level_dims {level_dims} must have one entry per level ({len(levels)})")
        if classes is None:
            classes = [()]
            for lv in levels:
                classes = [c + (x,) for c in classes for x in lv]
        paths = []
        for c in classes:
            path = tuple(c.split(sep)) if isinstance(c, str) else tuple(str(x) for x in c)
            if len(path) != len(levels):
                raise ValueError(f"class {c!r} has {len(path)} parts but there are {len(levels)} levels")
            for j, (part, lv) in enumerate(zip(path, levels)):
                if part not in lv:
                    raise ValueError(f"class {c!r}: part {part!r} is not a label of level {j} {lv}")
            paths.append(path)
        self.levels, self.level_dims, self.sep = levels, level_dims, sep
        self._paths = paths  # per class, its label at every level
        super().__init__([sep.join(p) for p in paths], sum(level_dims), base, spacing, norm)
        # [K, n_levels]: index of each class's label within each level
        self.register_buffer(
            "level_index",
            torch.tensor([[lv.index(p) for p, lv in zip(path, levels)] for path in paths], dtype=torch.long),
            persistent=False,
        )

    def _level_block(self, level):
        """Codes [K_level, d_level] of one level's labels, scaled as they appear in joint codes."""
        d = self.level_dims[level]
        per = sinusoidal_codes(len(self.levels[level]), d, self.base, self.spacing, self.norm)
        # With norm="unit" the blocks share the unit norm in proportion to their dims.
        return per * math.sqrt(d / sum(self.level_dims)) if self.norm == "unit" else per

    def _make_codes(self):
        # Each level's block has the same norm for every label, so every joint code has the same
        # norm too (sqrt(dim) for norm="sqrt_dim"), so the cosine decision is the dot-product one.
        return torch.cat([self._level_block(j)[[lv.index(p[j]) for p in self._paths]]
                          for j, lv in enumerate(self.levels)], dim=1)

    def level_codes(self, level):
        """Codes [K_level, d_level] of one level's labels (the blocks of the joint codes)."""
        return self._level_block(level).to(self.codes)

    def level_scores(self, x, level):
        """Cosine similarity [..., K_level] of the level's block of x to that level's codes."""
        start = sum(self.level_dims[:level])
        part = x[..., start:start + self.level_dims[level]]
        return similarity(part, self.level_codes(level))

    def decide_levels(self, x):
        """Per-level argmax: list (one per level) of indices [...] into ``levels[j]``."""
        return [self.level_scores(x, j).argmax(dim=-1) for j in range(len(self.levels))]

    def extra_repr(self):
        return super().extra_repr() + f", levels={[len(lv) for lv in self.levels]}"


def similarity(x, codes):
    """Cosine similarity [..., K] of x [..., D] to codes [K, D]."""
    if x.shape[-1] != codes.shape[-1]:
        raise ValueError(f"vector dim {x.shape[-1]} does not match code dim {codes.shape[-1]}")
    codes = codes.to(x.dtype)
    return F.normalize(x, dim=-1, eps=1e-8) @ F.normalize(codes, dim=-1).T


def build_taxonomy(conf, labels):
    """Taxonomy for ``labels`` from a config dict (keys of ``TAXONOMY_DEFAULTS``).

    type ``flat``: one code per label. ``joint``: labels are "a/b" paths and per-level codes are
    concatenated (levels in order of first appearance). ``grouped``: ``groups`` maps every label
    to a parent (e.g. valence); codes are [parent code, label code]. ``hierarchical``: the
    same two-level code from ``families`` ({label: family}, may name other labels too), with
    ``level_dims`` [family_dim, leaf_dim] (see ``_hierarchical``).
    """
    conf = dict(TAXONOMY_DEFAULTS, **(conf or {}))
    unknown = set(conf) - set(TAXONOMY_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown taxonomy key(s) {sorted(unknown)}; known: {sorted(TAXONOMY_DEFAULTS)}")
    common = dict(dim=int(conf["dim"]), base=float(conf["base"]), spacing=float(conf["spacing"]),
                  norm=conf["norm"])
    kind, sep = conf["type"], conf["sep"]
    if kind == "flat":
        if conf["groups"] is not None:
            raise ValueError("taxonomy.groups is only used with taxonomy.type: grouped")
        return Taxonomy(labels, **common)
    if kind == "joint":
        paths = [str(x).split(sep) for x in labels]
        depth = len(paths[0])
        if depth < 2 or any(len(p) != depth for p in paths):
            raise ValueError(f"taxonomy.type joint needs labels with the same number (>= 2) of "
                             f"{sep!r}-separated parts, got {labels}")
        levels = [list(dict.fromkeys(p[j] for p in paths)) for j in range(depth)]
        return HierarchicalTaxonomy(levels, [tuple(p) for p in paths], sep=sep, **common)
    if kind == "grouped":
        groups = conf["groups"]
        if not isinstance(groups, dict):
            raise ValueError("taxonomy.type grouped needs taxonomy.groups: {label: parent, ...}")
        missing = [x for x in labels if x not in groups]
        if missing:
            raise ValueError(f"taxonomy.groups has no parent for label(s) {missing}")
        extra = [x for x in groups if x not in labels]
        if extra:
            raise ValueError(f"taxonomy.groups names label(s) {extra} that are not in {list(labels)}")
        parents = list(dict.fromkeys(str(groups[x]) for x in labels))
        tax = HierarchicalTaxonomy([parents, list(labels)], [(str(groups[x]), x) for x in labels],
                                   sep=sep, **common)
        return tax
    if kind == "hierarchical":
        return _hierarchical(conf, labels, common)
    raise ValueError(f"taxonomy.type must be flat, joint, grouped or hierarchical, got {kind!r}")


def _hierarchical(conf, labels, common):
    """Two-level code [family code, leaf code] for multi-corpus training on full label sets.

    ``families`` maps each label (a corpus-specific leaf such as ``emodb_boredom``) to a family
    shared across corpora (``angry``, or a valence/arousal quadrant).  Unlike ``grouped``, the
    map may hold labels this model does not have: a project keeps one map for all its corpora
    and trains on any subset.  Leaves of one family share the family half of their code, so a
    test corpus with other leaves can still be decoded at the family level.
    """
    families = conf["families"]
    if not isinstance(families, dict) or not families:
        raise ValueError("taxonomy.type hierarchical needs taxonomy.families: {label: family, ...}")
    missing = [x for x in labels if x not in families]
    if missing:
        raise ValueError(f"taxonomy.families has no family for label(s) {missing}")
    if conf["groups"] is not None:
        raise ValueError("taxonomy.groups is for type grouped; type hierarchical uses families")
    level_dims = conf["level_dims"]
    if level_dims is not None:
        if (not isinstance(level_dims, (list, tuple)) or len(level_dims) != 2
                or any(isinstance(d, bool) or not isinstance(d, int) for d in level_dims)):
            raise ValueError(f"taxonomy.level_dims must be [family_dim, leaf_dim] (ints), got {level_dims!r}")
        if sum(level_dims) != common["dim"]:
            raise ValueError(f"taxonomy.level_dims {list(level_dims)} must add up to taxonomy.dim "
                             f"{common['dim']}")
        if any(d < 2 or d % 2 for d in level_dims):
            raise ValueError(f"taxonomy.level_dims {list(level_dims)} must be even and >= 2")
        level_dims = [int(d) for d in level_dims]
    labels = [str(x) for x in labels]
    parents = list(dict.fromkeys(str(families[x]) for x in labels))
    return HierarchicalTaxonomy([parents, labels], [(str(families[x]), x) for x in labels],
                                sep=conf["sep"], level_dims=level_dims, **common)

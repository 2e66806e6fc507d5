"""Building blocks shared by both model kinds: featurizer, frame encoder, pooling.

Shapes: feats [B, T, L, D] (L upstream layers of dim D), lengths [B], mask [B, T] (True = valid).
Every block keeps padded frames out of the valid frames' outputs, so a model's predictions do not
depend on what the padding holds.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "lengths_to_mask",
    "masked_mean",
    "row_mean_var",
    "weighted_layer_sum",
    "spec_augment",
    "COMBINE_MODES",
    "Featurizer",
    "FrameEncoder",
    "MeanPooling",
    "AttentivePooling",
    "build_pooling",
    "SinusoidalEmbedding",
    "ENCODER_TYPES",
    "NORMALIZE_MODES",
]

ENCODER_TYPES = ("transformer", "conv", "mlp")
NORMALIZE_MODES = ("batch", "layer", "none")
COMBINE_MODES = ("weighted", "concat")


def lengths_to_mask(lengths, max_len):
    """Mask [B, max_len], True on the first lengths[b] frames; validates the lengths."""
    if lengths.ndim != 1:
        raise ValueError(f"lengths must have shape [B], got {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > max_len):
        raise ValueError(f"lengths must lie in [1, {max_len}] (the padded length), got "
                         f"[{int(lengths.min())}, {int(lengths.max())}]")
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x, mask):
    """Mean over valid frames: x [B, T, ...], mask [B, T] -> [B, ...]."""
    m = mask.to(x.dtype).reshape(mask.shape + (1,) * (x.ndim - 2))
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class Featurizer(nn.Module):
    """Combines upstream layers: a learnable softmax-weighted sum (SUPERB-style, weights start
    equal) or their concatenation.

    Args:
        num_layers: L, the number of layers in the features.
        layers: "all" or a list of layer indices to use; a single layer passes straight through.
        normalize: "batch" standardises every layer's dims like batch norm without affine
            (statistics of the valid frames; running statistics in eval mode),
            "layer" applies a per-frame LayerNorm to every layer, "none" does nothing.
        dim: D, needed for "batch".
        combine: "weighted" gives [B, T, D]; "concat" keeps every selected layer side by side,
            [B, T, L'*D], so that the encoder's input projection learns one map per layer (what
            a linear probe on all layers sees; the weighted sum can only scale whole layers).

    Example::

        >>> f = Featurizer(num_layers=3, layers="all", normalize="layer", combine="weighted", dim=8)
        >>> f(torch.randn(2, 5, 3, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, num_layers, *, layers, normalize, combine, dim=None, momentum=0.05):
        super().__init__()
        if combine not in COMBINE_MODES:
            raise ValueError(f"featurizer.combine must be one of {COMBINE_MODES}, got {combine!r}")
        if layers == "all":
            sel = list(range(num_layers))
        else:
            if isinstance(layers, int):
                layers = [layers]
            sel = [int(i) for i in layers]
            bad = [i for i in sel if not 0 <= i < num_layers]
            if bad or not sel or len(set(sel)) != len(sel):
                raise ValueError(f"featurizer.layers must be 'all' or distinct indices in [0, {num_layers}), "
                                 f"got {layers}")
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"featurizer.normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        if normalize == "batch" and dim is None:
            raise ValueError("featurizer normalize='batch' needs the feature dim")
        self.num_layers, self.selection, self.normalize, self.combine = num_layers, sel, normalize, combine
        self.momentum = float(momentum)
        # zero-initialised: softmax gives every layer the same weight at the start
        self.weights = nn.Parameter(torch.zeros(len(sel))) if len(sel) > 1 and combine == "weighted" else None
        if normalize == "batch":
            self.register_buffer("running_mean", torch.zeros(len(sel), dim))
            self.register_buffer("running_var", torch.ones(len(sel), dim))
            self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))

    def output_dim(self, dim):
        """Feature dim of the output for input layers of dim ``dim``."""
        return dim * len(self.selection) if self.combine == "concat" else dim

    def _batch_stats(self, x, mask):
        """Per-(layer, dim) mean and variance [L', D] to normalise with, updating the running ones.

        Training uses the statistics of the batch's valid frames, as batch norm does (measured on
        EmoDB: the batch noise regularises; normalising with running statistics lost ~1-2 UA
        points); evaluation, and batches of a single frame, use the running statistics.
        """
        rows = x.flatten(0, 1) if bool(mask.all()) else x[mask]
        if not self.training or rows.shape[0] < 2:
            return self.running_mean, self.running_var
        mean, var = row_mean_var(rows.reshape(rows.shape[0], -1))
        mean, var = mean.view_as(self.running_mean), var.view_as(self.running_var)
        # cumulative average over the first batches (exact global statistics), then an EMA
        mom = max(self.momentum, 1.0 / float(self.num_batches + 1))
        self.running_mean.lerp_(mean, mom)
        self.running_var.lerp_(var, mom)
        self.num_batches += 1
        return mean, var

    def forward(self, feats, mask=None):
        """feats [B, T, L, D] (, mask [B, T]) -> [B, T, D]; padded frames only affect themselves."""
        if feats.ndim != 4 or feats.shape[2] != self.num_layers:
            raise ValueError(f"featurizer expects [B, T, {self.num_layers}, D] features, got {tuple(feats.shape)}")
        x = feats[:, :, self.selection] if len(self.selection) != self.num_layers else feats
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if self.combine == "concat":
            if self.normalize == "batch":
                with torch.no_grad():
                    mean, var = self._batch_stats(x, mask)
                x = (x - mean) * torch.rsqrt(var + 1e-5)
            elif self.normalize == "layer":
                # a plain int (D is fixed by the model): a traced shape would make the ONNX
                # export of the head (genser/onnx_head.py) fail
                x = F.layer_norm(x, (int(x.shape[-1]),))
            return x.flatten(2)
        w = torch.softmax(self.weights, dim=0) if self.weights is not None else x.new_ones(1)
        if self.normalize == "batch":
            # sum_l w_l (x_l - mu_l) / sd_l = sum_l x_l * scale_l - sum_l mu_l * scale_l: one pass over
            # x, the standardised [B, T, L, D] tensor is never built (it dominated the step time).
            with torch.no_grad():
                mean, var = self._batch_stats(x, mask)
            scale = w[:, None] * torch.rsqrt(var + 1e-5)
            return weighted_layer_sum(x, scale) - (scale * mean).sum(0)
        if self.normalize == "layer":
            x = F.layer_norm(x, (int(x.shape[-1]),))
        return weighted_layer_sum(x, w)


def spec_augment(x, mask, time_masks=0, time_width=0.0, chan_masks=0, chan_width=0.0, generator=None):
    """SpecAugment (Park et al. 2019) on standardised features x [B, T, C]: zeroes (the mean)
    ``time_masks`` spans of up to ``time_width`` of each utterance's valid frames and
    ``chan_masks`` bands of up to ``chan_width`` of the C channels. Widths are fractions, so one
    setting suits fbank (80 dims, 100 frames/s) and SSL layers alike; a 1-frame input (utterance
    means) gets channel masks only."""
    b, t, c = x.shape
    keep = torch.ones(b, t, c, dtype=torch.bool, device=x.device)
    pos_c = torch.arange(c, device=x.device)[None, :]
    for _ in range(chan_masks):
        width = (torch.rand(b, generator=generator) * chan_width * c).long().to(x.device)
        start = (torch.rand(b, generator=generator) * (c - width + 1).float().cpu()).long().to(x.device)
        keep &= ~((pos_c >= start[:, None]) & (pos_c < (start + width)[:, None]))[:, None, :]
    if t > 1:
        valid = mask.sum(1).float()
        pos_t = torch.arange(t, device=x.device)[None, :]
        for _ in range(time_masks):
            width = (torch.rand(b, generator=generator).to(x.device) * time_width * valid).long()
            start = (torch.rand(b, generator=generator).to(x.device) * (valid - width + 1)).long()
            keep &= ~((pos_t >= start[:, None]) & (pos_t < (start + width)[:, None]))[:, :, None]
    return x * keep


def row_mean_var(rows):
    """Mean and biased variance over the rows of [N, C] (C-wise), a fast path for CPU."""
    try:
        # torch's batch-norm statistics kernel: one vectorised pass, ~10x faster on CPU than
        # var_mean(dim=0) for [3200, 3584] (whisper frames x 7 layers)
        return torch.batch_norm_update_stats(rows, None, None, 0.0)
    except (AttributeError, RuntimeError, TypeError):
        var, mean = torch.var_mean(rows, dim=0, correction=0)
        return mean, var


def weighted_layer_sum(x, coef):
    """sum_l x[:, :, l] * coef[l] for x [B, T, L, D] and coef [L] or [L, D] -> [B, T, D].

    An addcmul chain over layer views: much cheaper on CPU than einsum or a broadcast product,
    which materialise or re-layout the whole [B, T, L, D] tensor.
    """
    y = x[:, :, 0] * coef[0]
    for layer in range(1, x.shape[2]):
        y = y.addcmul(x[:, :, layer], coef[layer])
    return y


class FeedForward(nn.Module):
    """Pre-LN position-wise feed-forward residual branch."""

    def __init__(self, dim, mult=2, dropout=0.1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim * mult, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(self.norm(x))


class SelfAttention(nn.Module):
    """Pre-LN multi-head self-attention residual branch; padded keys are masked out."""

    def __init__(self, dim, heads=4, dropout=0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"encoder hidden {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # [B, 1, 1, T] boolean: every query attends to the valid keys only
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.drop(self.out(y.transpose(1, 2).reshape(b, t, d)))


class ConvBranch(nn.Module):
    """Pre-LN 1-D convolution residual branch over time (padded frames zeroed first)."""

    def __init__(self, dim, kernel=5, dropout=0.1):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"encoder kernel must be odd, got {kernel}")
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask):
        y = self.norm(x).masked_fill(~mask[..., None], 0.0)
        return self.drop(F.gelu(self.conv(y.transpose(1, 2)).transpose(1, 2)))


class FrameEncoder(nn.Module):
    """Input projection and a small stack over frames, with padding masks; works for T=1.

    Args:
        input_dim: D of the featurizer output. hidden: model width.
        type: "transformer" (self-attention + feed-forward blocks), "conv" (1-D conv +
            feed-forward blocks) or "mlp" (feed-forward blocks only, frame by frame).
        layers: number of blocks (0: projection only).
    """

    def __init__(self, input_dim, *, hidden, layers, type, heads, ff_mult, kernel, dropout, input_dropout):
        super().__init__()
        if type not in ENCODER_TYPES:
            raise ValueError(f"encoder.type must be one of {ENCODER_TYPES}, got {type!r}")
        self.type, self.hidden = type, hidden
        self.in_drop = nn.Dropout(input_dropout)
        self.proj = nn.Linear(input_dim, hidden)
        self.mixers = nn.ModuleList()
        self.ffs = nn.ModuleList()
        for _ in range(layers):
            if type == "transformer":
                self.mixers.append(SelfAttention(hidden, heads=heads, dropout=dropout))
            elif type == "conv":
                self.mixers.append(ConvBranch(hidden, kernel=kernel, dropout=dropout))
            self.ffs.append(FeedForward(hidden, mult=ff_mult, dropout=dropout))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x, mask):
        """x [B, T, D], mask [B, T] -> [B, T, hidden] (padded frames set to 0)."""
        pad = ~mask[..., None]
        h = self.proj(self.in_drop(x.masked_fill(pad, 0.0)))
        for i, ff in enumerate(self.ffs):
            if self.mixers:
                h = h + self.mixers[i](h, mask)
            h = h + ff(h)
        return self.norm(h).masked_fill(pad, 0.0)


class MeanPooling(nn.Module):
    """Mean over valid frames."""

    def forward(self, h, mask):
        return masked_mean(h, mask)


class AttentivePooling(nn.Module):
    """Weighted mean over valid frames with learned scores w2 tanh(W1 h) (masked softmax)."""

    def __init__(self, dim, att_dim=None):
        super().__init__()
        att_dim = att_dim or max(dim // 2, 1)
        self.score = nn.Sequential(nn.Linear(dim, att_dim), nn.Tanh(), nn.Linear(att_dim, 1))

    def forward(self, h, mask):
        s = self.score(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, dim=1)
        return torch.einsum("bt,btd->bd", w, h)


def build_pooling(kind, dim):
    """Pooling module by name: "mean" or "attentive"."""
    if kind == "mean":
        return MeanPooling()
    if kind == "attentive":
        return AttentivePooling(dim)
    raise ValueError(f"pooling must be 'mean' or 'attentive', got {kind!r}")


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal embedding [B, dim] of times t [B] in [0, 1] (scaled by 1000, max period 1e4)."""

    def __init__(self, dim=64, scale=1000.0, max_period=10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale

    def forward(self, t):
        arg = (t.float() * self.scale)[:, None] * self.freqs[None]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)

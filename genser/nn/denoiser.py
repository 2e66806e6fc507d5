"""The Gen-SER network D(x_t, t, c): estimates the terminal code x0 from a path state.

A residual MLP over code vectors; time enters through a sinusoidal embedding, and time plus the
speech condition c modulate every block through adaptive LayerNorm (shift, scale, gate; the
modulation starts at zero so each block starts as the identity, as in DiT's adaLN-Zero).
Works on utterance vectors x [B, Dc] with c [B, H], or frame sequences x [B, T, Dc] with
c [B, T, H]; t is always per utterance [B].
"""
import torch
import torch.nn as nn

from genser.nn.layers import SinusoidalEmbedding

__all__ = ["AdaLNBlock", "Denoiser"]


class AdaLNBlock(nn.Module):
    """Pre-LN feed-forward residual block whose LayerNorm is modulated by the condition."""

    def __init__(self, dim, mult=2, dropout=0.1):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.mod = nn.Linear(dim, 3 * dim)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim * mult, dim))

    def forward(self, h, cond):
        shift, scale, gate = self.mod(cond).chunk(3, dim=-1)
        return h + gate * self.net(self.norm(h) * (1.0 + scale) + shift)


class Denoiser(nn.Module):
    """D(x_t, t, c) -> x0_hat.

    Args:
        code_dim: Dc, the taxonomy code dim. cond_dim: H, the dim of c.
        hidden: width; layers: number of AdaLN blocks; time_dim: sinusoidal embedding dim.
    """

    def __init__(self, code_dim, cond_dim, *, hidden, layers, time_dim, mult, dropout):
        super().__init__()
        self.time_embed = SinusoidalEmbedding(time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.cond_proj = nn.Linear(cond_dim, hidden)
        self.in_proj = nn.Linear(code_dim, hidden)
        self.cond_in = nn.Linear(cond_dim, hidden)
        self.blocks = nn.ModuleList(AdaLNBlock(hidden, mult=mult, dropout=dropout) for _ in range(layers))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, code_dim)

    def forward(self, x, t, c):
        """x [B, (T,) Dc], t [B], c [B, (T,) H] -> x0_hat with the shape of x."""
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape [{x.shape[0]}], got {tuple(t.shape)}")
        e = self.time_mlp(self.time_embed(t))
        if x.ndim == 3:
            e = e[:, None, :]
        cond = torch.nn.functional.silu(e + self.cond_proj(c))
        h = self.in_proj(x) + self.cond_in(c)
        for block in self.blocks:
            h = block(h, cond)
        return self.out(self.out_norm(h))

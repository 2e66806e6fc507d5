"""Neural-network building blocks of genser (re-exported by ``genser.models``)."""
from genser.nn.denoiser import AdaLNBlock, Denoiser
from genser.nn.layers import (
    AttentivePooling,
    Featurizer,
    FrameEncoder,
    MeanPooling,
    SinusoidalEmbedding,
    build_pooling,
    lengths_to_mask,
    masked_mean,
)

__all__ = [
    "AdaLNBlock",
    "AttentivePooling",
    "Denoiser",
    "Featurizer",
    "FrameEncoder",
    "MeanPooling",
    "SinusoidalEmbedding",
    "build_pooling",
    "lengths_to_mask",
    "masked_mean",
]

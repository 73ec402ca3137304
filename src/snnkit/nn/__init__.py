"""Spiking layers, surrogate gradients and encoders (multi-step, ``[B, T, ...]``)."""
from snnkit.nn.encoders import (ENCODERS, DirectEncoder, Encoder, FramesEncoder, LatencyEncoder, PoissonEncoder,
                                build_encoder)
from snnkit.nn.layers import AvgPool2d, BatchNormTT, Conv2d, Flatten, MaxPool2d, SumPool2d
from snnkit.nn.residual import Block, IAnd
from snnkit.nn.neurons import IF, LI, LIF, CubaLI, CubaLIF, SpikingLayer
from snnkit.nn.surrogate import SURROGATES, Surrogate, use_surrogate
from snnkit.nn.surrogate import parse as parse_surrogate

__all__ = [
    "ENCODERS", "SURROGATES", "AvgPool2d", "BatchNormTT", "Block", "Conv2d", "CubaLI", "CubaLIF", "DirectEncoder",
    "Encoder", "FramesEncoder", "Flatten", "IAnd", "IF", "LI", "LIF", "LatencyEncoder", "MaxPool2d", "PoissonEncoder",
    "SpikingLayer", "SumPool2d", "Surrogate", "build_encoder", "parse_surrogate", "use_surrogate",
]

"""The model wrapper every snnkit network shares: encoder -> layers -> output spikes.

``model(x)`` takes ``x [B, *input_shape]`` in [0, 1] and returns ``[B, C]`` logits: the output layer's spikes
averaged over time, times the fixed temperature ``config["logit_scale"]`` (so torchattacks and AutoAttack can
use it directly; the argmax is the spike-count argmax). ``model.run(x)`` returns the
per-step outputs with every spiking layer's spikes and pre-reset membrane potentials.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from snnkit.nn.encoders import Encoder
from snnkit.nn.neurons import SpikingLayer


@dataclass
class RunResult:
    """One forward pass with recordings.

    outputs: ``[B, T, C]`` output spikes per step.
    spikes / membranes: layer name -> ``[B, T, ...]`` spikes / pre-reset membrane potential, in layer order.
    """

    outputs: torch.Tensor
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)
    membranes: dict[str, torch.Tensor] = field(default_factory=dict)

    logit_scale: float = 1.0

    @property
    def logits(self) -> torch.Tensor:
        return self.outputs.mean(1) * self.logit_scale


class SpikingModel(nn.Module):
    """An encoder followed by a sequence of multi-step layers; ``config`` rebuilds it (see ``models.build``)."""

    def __init__(self, encoder: Encoder, layers: nn.Sequential, config: dict):
        super().__init__()
        self.encoder = encoder
        self.layers = layers
        self.config = dict(config)

    @property
    def timesteps(self) -> int:
        return self.encoder.timesteps

    def spiking_layers(self) -> dict[str, SpikingLayer]:
        return {name: m for name, m in self.layers.named_children() if isinstance(m, SpikingLayer)}

    @property
    def logit_scale(self) -> float:
        return float(self.config.get("logit_scale", 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encoder(x)).mean(1) * self.logit_scale

    def run(self, x: torch.Tensor) -> RunResult:
        """Forward with recordings (autograd graph kept, so regularisers can use them)."""
        layers = self.spiking_layers()
        for m in layers.values():
            m.record = True
        try:
            out = self.layers(self.encoder(x))
            result = RunResult(out, logit_scale=self.logit_scale)
            for name, m in layers.items():
                result.spikes[name] = m.recorded["spikes"]
                result.membranes[name] = m.recorded["v"]
        finally:
            for m in layers.values():
                m.record = False
                m.recorded = {}
        return result

"""The model wrapper every snnkit network shares: encoder -> layers -> output spikes.

``model(x)`` takes ``x [B, *input_shape]`` in [0, 1] and returns ``[B, C]`` logits: the output layer's spikes
averaged over time, times the fixed temperature ``config["logit_scale"]`` (so torchattacks and AutoAttack can
use it directly; the argmax is the spike-count argmax). ``model.run(x)`` returns the
per-step outputs with every spiking layer's spikes and pre-reset membrane potentials.

Two differentiable stand-ins of a model, the sources that attacks use besides its own surrogate gradient:

- ``model.twin()``: the non-spiking (ANN) twin, one step, every spiking layer replaced by its rate function
  ``rate(I) = clamp(drive(I) / threshold, 0, 1)`` with ``drive(I) = g I + (1 - beta) v_leak`` (the spike rate of
  an integrate-and-fire neuron with reset by subtraction under a constant drive, at most one spike per step;
  for a leaky neuron the leak-free upper bound). Its output is ``logit_scale x rate``. :func:`rate_twin` is the
  one definition: the ONNX export (``snnkit.export.onnx_twin``) builds its twin with it too.
- ``model.bptr()``: backpropagation through rates (BPTR). The forward pass *is* the spiking model (bit-identical
  logits); the backward pass replaces each spiking layer by the derivative of its rate function at the
  layer's input averaged over time, ``d mean_t s / d mean_t I ~ rate'(mean_t I)``.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from snnkit.nn.encoders import Encoder
from snnkit.nn.layers import AvgPool2d, BatchNormTT, Conv2d, Flatten, time_invariant
from snnkit.nn.neurons import LIF, SpikingLayer
from snnkit.nn.residual import Block

PER_STEP = (nn.Linear, Conv2d, AvgPool2d, Flatten)  # maps of one step alone: computed once on a constant input


class TwinUndefined(ValueError):
    """The model has no non-spiking twin; the message says why."""


class Rate(nn.Module):
    """The rate function of a LIF/IF layer (shared, not copied): ``clamp(layer.drive(I) / threshold, 0, 1)``.

    Elementwise on any shape; per-neuron parameters broadcast as in the spiking layer.
    """

    def __init__(self, layer: LIF):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.layer.drive(x) / self.layer.threshold, 0.0, 1.0)


def rate_of(name: str, layer: nn.Module) -> Rate:
    """:class:`Rate` of a spiking layer; :class:`TwinUndefined` for neurons without one (CubaLIF)."""
    if not isinstance(layer, LIF):
        raise TwinUndefined(f"node {name!r}: no rate function for {type(layer).__name__} neurons, so the model has "
                            "no non-spiking twin")
    return Rate(layer)


class RateTwin(nn.Module):
    """The non-spiking twin (see the module docstring): ``forward(x [B, *input_shape]) -> [B, C]`` logits.

    Its connection layers are the spiking model's own modules (multi-step layers run on one step), so the twin
    follows the model's weights.
    """

    def __init__(self, layers: nn.Sequential, logit_scale: float):
        super().__init__()
        self.layers = layers
        self.logit_scale = float(logit_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.unsqueeze(1)).squeeze(1) * self.logit_scale


def neurons_replaced(name: str, m: nn.Module, fn) -> nn.Module:
    """``m`` with every spiking layer (``m`` itself, or one inside a residual :class:`Block`) replaced by
    ``fn(qualified name, layer)``; other modules are returned as they are (shared, not copied)."""
    if isinstance(m, SpikingLayer):
        return fn(name, m)
    if isinstance(m, Block):
        return m.map_layers(lambda n, sub: neurons_replaced(f"{name}.{n}", sub, fn))
    return m


def rate_twin(layers: Iterable[tuple[str, nn.Module]], logit_scale: float) -> RateTwin:
    """The twin of a layer chain ``[(name, module), ...]``: spiking layers become their :class:`Rate`."""
    chain = [(name.replace(".", "_"), neurons_replaced(name, m, rate_of)) for name, m in layers]
    return RateTwin(nn.Sequential(OrderedDict(chain)), logit_scale)


class ThroughRate(nn.Module):
    """A spiking layer's spikes forward, the derivative of its :class:`Rate` at the time-averaged input backward
    (one BPTR layer, see the module docstring); ``forward(h [B, T, ...]) -> [B, T, ...]`` spikes."""

    def __init__(self, layer: SpikingLayer):
        super().__init__()
        self.layer = layer

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        r = Rate(self.layer)(h.mean(1, keepdim=True))
        with torch.no_grad():
            s = self.layer(h)
        return s + (r - r.detach())


def check_twin_encoder(spec: "dict | str | None") -> None:
    """:class:`TwinUndefined` for the latency code (a time-to-first-spike input has no rate to carry over)."""
    name = spec.get("name") if isinstance(spec, dict) else spec
    if name == "latency":
        raise TwinUndefined("the model uses the latency (time-to-first-spike) code, whose input has no rate: "
                            "no non-spiking twin is defined")


class RateBackprop(nn.Module):
    """BPTR view of a :class:`SpikingModel` (see the module docstring); shares the model's modules.

    ``forward(x [B, *input_shape]) -> [B, C]``: the model's logits exactly; gradients flow through the rate
    functions of its spiking layers (``0`` where a layer is silent or saturated on average).
    """

    def __init__(self, model: "SpikingModel"):
        super().__init__()
        for name, m in model.spiking_layers().items():
            rate_of(name, m)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.model.encoder(x)
        for name, m in self.model.layers.named_children():
            h = neurons_replaced(name, m, lambda _, layer: ThroughRate(layer))(h)
        return h.mean(1) * self.model.logit_scale


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


def check_chain(model: "SpikingModel", what: str, error: type[ValueError] = ValueError) -> None:
    """``error`` naming the model's first residual block: ``what`` handles layer chains only (the architectures
    without residual blocks, named in the message)."""
    blocks = [name for name, m in model.layers.named_children() if isinstance(m, Block)]
    if blocks:
        from snnkit.models.build import ARCHS
        from snnkit.models.paper import RESNETS

        chains = ", ".join(a for a in ARCHS if a not in RESNETS)
        raise error(f"{what} handles layer chains ({chains}); layer {blocks[0]!r} is a residual block")


class SpikingModel(nn.Module):
    """An encoder followed by a sequence of multi-step layers (residual blocks among them, ``snnkit.nn.residual``);
    ``config`` rebuilds it (see ``models.build``)."""

    def __init__(self, encoder: Encoder, layers: nn.Sequential, config: dict):
        super().__init__()
        self.encoder = encoder
        self.layers = layers
        self.config = dict(config)

    @property
    def timesteps(self) -> int:
        return self.encoder.timesteps

    def spiking_layers(self) -> dict[str, SpikingLayer]:
        """Every spiking layer in order, by name (``"<block>.<layer>"`` inside residual blocks)."""
        return {name: m for name, m in self.layers.named_modules() if isinstance(m, SpikingLayer)}

    @property
    def logit_scale(self) -> float:
        return float(self.config.get("logit_scale", 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.propagate(self.encoder(x)).mean(1) * self.logit_scale

    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        """The layers on an encoded input ``h [B, T, ...]``; returns the output spikes ``[B, T, C]``.

        While the input is time-invariant (the direct code: one frame repeated, :func:`time_invariant`), the
        per-step layers and BatchNormTT run on that frame alone and the first spiking layer scans it repeated
        over T (``LIF.forward_frame``): the same values as step by step, for 1/T of the work in the forward and
        the backward pass.
        """
        steps = h.shape[1]
        frame = h[:, :1] if time_invariant(h) else None  # [B, 1, ...] while every step is this frame
        for m in self.layers:
            if frame is not None and isinstance(m, PER_STEP):
                frame = m(frame)
            elif frame is not None and isinstance(m, BatchNormTT):
                frame = m.forward_frame(frame, steps)
            elif frame is not None and isinstance(m, LIF):
                h, frame = m.forward_frame(frame, steps), None
            else:
                if frame is not None:
                    h, frame = frame.expand(frame.shape[0], steps, *frame.shape[2:]), None
                h = m(h)
        return h if frame is None else frame.expand(frame.shape[0], steps, *frame.shape[2:])

    def twin(self) -> RateTwin:
        """The non-spiking twin (module docstring); :class:`TwinUndefined` for the latency code or CubaLIF."""
        check_twin_encoder(self.config.get("encoder"))
        return rate_twin(self.layers.named_children(), self.logit_scale)

    def bptr(self) -> RateBackprop:
        """The rate-backprop (BPTR) view: this model's forward, gradients through rates (module docstring)."""
        return RateBackprop(self)

    def run(self, x: torch.Tensor) -> RunResult:
        """Forward with recordings (autograd graph kept, so regularisers can use them)."""
        layers = self.spiking_layers()
        for m in layers.values():
            m.record = True
        try:
            out = self.propagate(self.encoder(x))
            result = RunResult(out, logit_scale=self.logit_scale)
            for name, m in layers.items():
                result.spikes[name] = m.recorded["spikes"]
                result.membranes[name] = m.recorded["v"]
        finally:
            for m in layers.values():
                m.record = False
                m.recorded = {}
        return result

"""Quantisation-aware fine-tuning for Loihi 2 (``snn-train --init MODEL.pt --qat loihi``).

:class:`LoihiQAT` wraps a trained :class:`~snnkit.models.SpikingModel` so that its forward pass *is* the
deployed network and its backward pass reaches the model's float parameters:

- **Forward.** The current model is exported (``to_nir``: BatchNorm folded with its running statistics,
  thresholds, decays) and quantised by the ``loihi-emu`` target exactly as ``snn-deploy`` and ``snn-export``
  do it (``quantize``: per-layer ``vth``, weight exponents and 8-bit mantissas, 12-bit decays, biases, the
  input coding inferred from the training inputs). The bit-exact emulator runs those integers, so a forward
  pass gives the outputs Lava would give, bit for bit.
- **Backward.** Straight through (:class:`ModelPath`, a :class:`~snnkit.deploy.loihi.emulator.FloatPath`):
  every synapse stage's message and every layer's bias take the gradient of their real values, computed by the
  model's own modules between two spiking layers (in eval mode: BatchNorm as it was folded) and scaled into
  the emulator's integer units, ``vth x g / theta`` per neuron. The spikes take each layer's own surrogate on
  the potential in threshold units; rounding, shifts, wraps and saturation pass their real counterparts'.
  Gradients therefore reach weights, biases and BatchNorm's affine parameters, through the rounding that the
  forward pass really applied. Decays are the quantised ones and are not trained.

The quantisation (``vth``, exponents, mantissas) is redone after every optimiser step
(:meth:`LoihiQAT.requantise`), so each forward pass is the deployment of the weights it sees, and the model
written at the end deploys to the integers of its last weights. Masks of pruned models stay frozen (the
trainer zeroes pruned weights after each step, before the requantisation).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from snnkit.deploy.inputs import encode
from snnkit.deploy.loihi.emulator import FloatPath, LoihiEmulator, LoihiEmulatorTarget
from snnkit.deploy.loihi.graph import ACT_SHIFT, LoihiGraph, NeuronLayer, Projection
from snnkit.export import to_nir
from snnkit.models.spiking import SpikingModel, check_chain
from snnkit.nn.neurons import LIF, SpikingLayer

TARGETS = ("loihi",)
"""What ``--qat`` accepts: the fixed-point targets QAT can train for."""
PROBE = 256
"""Training samples whose encoding fixes the input coding of the quantisation."""


class QATError(ValueError):
    """A model or option QAT cannot use (one line)."""


def _chains(model: SpikingModel, input_name: str) -> dict[str, tuple[str, list[nn.Module]]]:
    """Per spiking layer: its source (``input_name`` or the previous spiking layer) and the modules between them."""
    check_chain(model, "--qat: quantisation-aware training", QATError)
    chains: dict[str, tuple[str, list[nn.Module]]] = {}
    src, mods = input_name, []
    for name, m in model.layers.named_children():
        if isinstance(m, nn.MaxPool2d):
            raise QATError(f"--qat: layer {name!r} is a max pool; quantisation-aware training handles average and "
                           "sum pooling")
        if isinstance(m, SpikingLayer):
            if not isinstance(m, LIF):
                raise QATError(f"--qat: layer {name!r} is a {type(m).__name__}; quantisation-aware training "
                               "handles LIF and IF layers")
            chains[name] = (src, mods)
            src, mods = name, []
        else:
            mods.append(m)
    return chains


class ModelPath(FloatPath):
    """The real values of a quantised model's messages and biases, from the model's own float modules.

    For a layer with threshold ``theta``, input gain ``g`` and integer threshold ``V = vth``, the message of its
    incoming stage stands for ``V g / theta x (chain(x) - chain(0))`` (the current the modules between the two
    spiking layers give, without their constant), and its bias for ``64 V / theta x drive(chain(0))``
    (the layer's constant drive, ``g chain(0) + (1 - beta) v_leak``), as :func:`~snnkit.deploy.loihi.quantize`
    scales them. ``x`` is the integers the stage receives, in input units (divided by the input scale for the
    graph's input).
    """

    def __init__(self, model: SpikingModel, lg: LoihiGraph):
        self.lg = lg
        self.layers = model.spiking_layers()
        self.chains = _chains(model, lg.input.name)
        if sorted(layer.name for layer in lg.layers) != sorted(self.chains):
            raise QATError("--qat: the quantised graph's layers are not the model's spiking layers")
        for p in lg.projections:
            if p.recurrent or self.chains[p.dst][0] != p.src:
                raise QATError(f"--qat: projection {p.name} ({p.src} -> {p.dst}) is not a stage of the model's chain")

    def _scale(self, layer: NeuronLayer) -> torch.Tensor:
        """``V / theta`` per neuron, flattened: ``[n]``."""
        m = self.layers[layer.name]
        return (float(layer.vth) / torch.broadcast_to(m.threshold, layer.shape)).reshape(-1)

    def _chain(self, dst: str, x: torch.Tensor) -> torch.Tensor:
        """The modules into layer ``dst`` on one step of source outputs ``x [N, *src_shape]``: ``[N, n_dst]``."""
        h = x.unsqueeze(1)
        for m in self.chains[dst][1]:
            h = m(h)
        return h.reshape(x.shape[0], -1)

    def _constant(self, dst: str) -> torch.Tensor:
        """The current the modules into ``dst`` give for a silent source: ``[1, n_dst]``."""
        src = self.chains[dst][0]
        m = self.layers[dst]
        return self._chain(dst, m.threshold.new_zeros((1, *self.lg.source_shape(src))))

    def message(self, p: Projection, x: torch.Tensor) -> torch.Tensor:
        layer = self.lg.layer(p.dst)
        m = self.layers[p.dst]
        q = self.lg.input.scale if p.src == self.lg.input.name else 1.0
        xf = (x / q).to(m.threshold.dtype)
        current = self._chain(p.dst, xf) - self._constant(p.dst)
        gain = torch.broadcast_to(m.input_scale, layer.shape).reshape(-1)
        return current * gain * self._scale(layer)

    def bias(self, layer: NeuronLayer) -> torch.Tensor:
        m = self.layers[layer.name]
        drive = m.drive(self._constant(layer.name))[0]
        return drive * self._scale(layer) * float(1 << ACT_SHIFT)


class LoihiQAT(nn.Module):
    """``model`` as it runs on Loihi 2, differentiable in the model's parameters (see the module docstring).

    ``forward(x [B, *input_shape])`` (values in [0, 1], as ``model(x)``) returns ``[B, C]`` logits: the
    emulated output spikes on the reference time axis, averaged over the ``T`` steps, times the model's
    ``logit_scale``; their argmax is the Loihi target's prediction. The wrapped model stays in eval mode
    (BatchNorm uses, and keeps, the running statistics it is exported with).

    probe: samples ``[N, *input_shape]`` whose encoding fixes the input coding (as a target infers it from
        its inputs: the training data).
    device: where the emulator runs.
    """

    def __init__(self, model: SpikingModel, probe: torch.Tensor, device: str = "cpu"):
        super().__init__()
        _chains(model, "input")  # a layer QAT cannot handle is refused before any quantisation
        self.model = model
        self.device = device
        with torch.no_grad():
            self.probe = model.encoder(probe.to(next(model.parameters()).device)).cpu().numpy()
        self.target = LoihiEmulatorTarget(device=device)
        self.surrogates = {name: m.surrogate for name, m in model.spiking_layers().items()}
        self.requantise()
        self.model.eval()

    def requantise(self) -> LoihiGraph:
        """Quantise the current model as the Loihi targets do; later forward passes run these integers."""
        with torch.no_grad():
            graph = to_nir(self.model)
        self.lg = self.target.quantised(graph, self.probe)
        self.emulator = LoihiEmulator(self.lg, device=self.device, differentiable=True, surrogates=self.surrogates,
                                      float_path=ModelPath(self.model, self.lg))
        return self.lg

    def train(self, mode: bool = True) -> "LoihiQAT":
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.model.encoder(x)
        steps = h.shape[1]
        out = self.emulator.run(h)[self.lg.output]
        return out[:, self.lg.delay:self.lg.delay + steps].mean(1).to(x.dtype) * self.model.logit_scale


def deployed_accuracy(model: SpikingModel, x: torch.Tensor, y: torch.Tensor, target: str = "loihi-emu",
                      device: str = "cpu") -> float:
    """Accuracy of ``model`` on ``(x [B, *input_shape], y [B])`` run by ``target`` from its NIR export, as
    ``snn-deploy MODEL.pt --target TARGET`` computes it (``loihi-emu`` is bit-identical to Lava)."""
    from snnkit.deploy.base import make_target

    graph = to_nir(model)
    xe = encode(x.cpu().numpy(), graph.metadata)
    result = make_target(target, device=device).run(graph, xe)
    return float(np.mean(result.predictions(xe.shape[1]) == y.cpu().numpy()))


def check(cfg) -> None:
    """One-line :class:`QATError` when a training config asks QAT for what it cannot do."""
    if cfg.qat not in TARGETS:
        raise QATError(f"--qat {cfg.qat}: unknown target (available: {', '.join(TARGETS)})")
    if not cfg.init:
        raise QATError("--qat fine-tunes a trained model: give it with --init MODEL.pt")
    if cfg.regs:
        raise QATError("--reg does not compose with --qat (regularisers read the float model's membrane potentials)")


def wrap(model: SpikingModel, cfg, x_train: torch.Tensor) -> LoihiQAT:
    """The model a ``qat`` training run trains (``cfg``: its :class:`~snnkit.train.TrainConfig`)."""
    check(cfg)
    return LoihiQAT(model, x_train[:PROBE], device=cfg.device)


def record(cfg, model: SpikingModel, x: torch.Tensor, y: torch.Tensor) -> dict:
    """What ``metrics.json`` says of a QAT run: float (``torch`` target) and ``loihi-emu`` accuracy on the test
    samples ``(x, y)`` of the model it started from (``cfg.init``) and of ``model``, both from their NIR export."""
    from snnkit.models import load

    start = load(cfg.init)
    acc = {f"{kind}_accuracy_{when}": deployed_accuracy(m, x, y, target, device=cfg.device)
           for when, m in (("before", start), ("after", model)) for kind, target in (("float", "torch"),
                                                                                      ("loihi", "loihi-emu"))}
    return {"target": cfg.qat, "emulator": "loihi-emu (bit-identical to Lava fixed_pt)", "test_samples": len(x),
            **acc}

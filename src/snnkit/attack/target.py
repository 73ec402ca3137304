"""A deployed target seen as a score function, so that black-box, transfer and white-box attacks re-attack it.

``TargetScores(target, graph)(x)`` encodes ``x [B, *input_shape]`` (values in [0, 1]) with the encoder recorded
in the graph's metadata (the same encoding ``snn-deploy`` uses), runs the graph on the target and returns
``[B, C]`` scores: the output spikes averaged over the reference time steps (the target's pipeline delay
removed), times the graph's ``logit_scale`` when it records one. For the torch target these are exactly the
model's logits. No gradient flows: use it with :class:`~snnkit.attack.square.Square`, as the target of
:class:`~snnkit.attack.transfer.Transfer`, or as the model of :func:`~snnkit.attack.runner.evaluate`
(``check_gradients=False``).

Differentiable views of targets, with the same encoding (the graph's encoder, built in torch, so gradients reach
``x``; a Poisson code draws the same spikes as ``TargetScores`` on every call) and the same scores:

- :class:`TargetModule`: a torch-based target (torch, norse, snntorch) running its own built network with
  gradients on: white-box attacks on the target itself, through that framework's surrogate gradients.
- :class:`EmulatorModule`: the Loihi emulator's differentiable mode (bit-identical forward values to Lava and
  ``loihi-emu``, straight-through gradients): the model adaptive attacks on ``lava``/``loihi-emu`` differentiate.
"""
from __future__ import annotations

import time

import nir
import numpy as np
import torch
from torch import nn

from snnkit.deploy.base import DeployError, Target, get_target
from snnkit.deploy.inputs import encode, encoder_spec, graph_timesteps


class TargetScores:
    """Score function of ``graph`` running on ``target`` (a :class:`Target` or a target name plus options).

    timesteps: steps per sample (default: the graph's metadata). After calls, ``queries`` counts the samples
    evaluated, ``calls`` the target runs and ``seconds`` their wall-clock time (encoding included).
    """

    def __init__(self, target: "Target | str", graph: nir.NIRGraph, *, timesteps: int | None = None,
                 **options):
        self.target = get_target(target, **options) if isinstance(target, str) else target
        self.graph = graph
        self.metadata = dict(graph.metadata or {})
        self.timesteps = graph_timesteps(self.metadata, timesteps)
        self.scale = float(self.metadata.get("logit_scale", 1.0))
        self.queries = 0
        self.calls = 0
        self.seconds = 0.0

    @property
    def name(self) -> str:
        return self.target.name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        encoded = encode(x.detach().cpu().numpy(), self.metadata, self.timesteps)
        result = self.target.run(self.graph, encoded)
        rates = np.asarray(result.aligned_outputs(self.timesteps), dtype=np.float32).mean(axis=1)
        self.seconds += time.perf_counter() - t0
        self.queries += int(x.shape[0])
        self.calls += 1
        return torch.from_numpy(rates * self.scale).to(x.device)

    @property
    def queries_per_second(self) -> float:
        return self.queries / self.seconds if self.seconds > 0 else float("nan")


def encode_torch(x: torch.Tensor, metadata: dict, timesteps: int) -> torch.Tensor:
    """``x [B, ...]`` -> ``[B, T, ...]`` with the graph's encoder as a torch module (differentiable; a fresh
    encoder per call, so a Poisson code draws what :func:`snnkit.deploy.inputs.encode` draws)."""
    from snnkit.nn.encoders import build_encoder

    try:
        enc = build_encoder(encoder_spec(metadata), timesteps)
    except (KeyError, TypeError, ValueError) as exc:
        raise DeployError(f"cannot build the graph's encoder {encoder_spec(metadata)} ({exc})") from None
    return enc.to(x.device)(x)


class _GraphScores(nn.Module):
    """What the differentiable views share: the graph's metadata, steps, logit scale and the target's name."""

    def __init__(self, name: str, graph: nir.NIRGraph, timesteps: int | None):
        super().__init__()
        self.target_name = name
        self.graph = graph
        self.metadata = dict(graph.metadata or {})
        self.timesteps = graph_timesteps(self.metadata, timesteps)
        self.scale = float(self.metadata.get("logit_scale", 1.0))

    @property
    def name(self) -> str:
        return self.target_name


class TargetModule(_GraphScores):
    """A torch-based target (:class:`~snnkit.deploy.torch_target.TorchBasedTarget`, or its name plus options)
    as a differentiable score function ``x [B, *input_shape] -> [B, C]``: the network the target built for
    ``graph`` (its cached build, so the same code as ``Target.run``), called with gradients on."""

    def __init__(self, target: "Target | str", graph: nir.NIRGraph, *, timesteps: int | None = None, **options):
        from snnkit.deploy.torch_target import TorchBasedTarget

        target = get_target(target, **options) if isinstance(target, str) else target
        if not isinstance(target, TorchBasedTarget):
            raise DeployError(f"target {target.name!r} is not torch-based: it has no differentiable network "
                              "(use TargetScores, or EmulatorModule for the Loihi targets)")
        super().__init__(target.name, graph, timesteps)
        self.target = target
        self.network = target.network(graph)
        self.device = target.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.network
        encoded = encode_torch(x.to(self.device), self.metadata, self.timesteps)
        out = net.runner(encoded)
        name = net.plan.output_name
        y = out[name] if name in out else sum(out[s] for s, _ in net.plan.inputs[name])
        return (y.float().mean(1) * self.scale).to(x.device)


class EmulatorModule(_GraphScores):
    """The Loihi fixed-point network of ``graph`` as a differentiable score function ``x [B, ...] -> [B, C]``.

    target: the ``lava`` or ``loihi-emu`` target whose quantisation is used (its options, its cached
        quantised graph); probe: inputs ``[B, ...]`` in [0, 1] the quantisation's input coding is inferred from
        (encoded like every query; for the ``direct`` and spike codes any probe in [0, 1] gives the same graph).
    device: where the emulator runs; surrogate_alpha: the spike's arctan surrogate sharpness.
    Forward values are bit-identical to ``TargetScores`` on ``lava``/``loihi-emu``.
    """

    def __init__(self, target: "Target | str", graph: nir.NIRGraph, probe: torch.Tensor, *,
                 timesteps: int | None = None, device: str = "cpu", surrogate_alpha: float = 2.0, **options):
        from snnkit.deploy.loihi.emulator import LoihiModule

        target = get_target(target, **options) if isinstance(target, str) else target
        if not hasattr(target, "quantised"):
            raise DeployError(f"target {target.name!r} is not a Loihi target (lava, loihi-emu)")
        super().__init__(target.name, graph, timesteps)
        self.lg = target.quantised(graph, encode(probe.detach().cpu().numpy(), self.metadata, self.timesteps))
        self.module = LoihiModule(self.lg, device=device, surrogate_alpha=surrogate_alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded = encode_torch(x, self.metadata, self.timesteps)
        spikes = self.module(encoded)[:, self.lg.delay:self.lg.delay + self.timesteps]
        return (spikes.mean(1) * self.scale).to(device=x.device, dtype=x.dtype)

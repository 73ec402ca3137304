"""A deployed target seen as a score function, so that black-box, transfer and white-box attacks re-attack it.

``TargetScores(target, graph)(x)`` encodes ``x [B, *input_shape]`` (values in [0, 1]) with the encoder recorded
in the graph's metadata (the same encoding ``snn-deploy`` uses), runs the graph on the target and returns
``[B, C]`` scores: the output spikes averaged over the reference time steps (the target's pipeline delay
removed), times the graph's ``logit_scale`` when it records one. For the torch target these are exactly the
model's logits. No gradient flows: use it with :class:`~snnkit.attack.square.Square`, as the target of
:class:`~snnkit.attack.transfer.Transfer`, or as the model of :func:`~snnkit.attack.runner.evaluate`
(``check_gradients=False``).

:class:`TargetModule` is the differentiable view a target offers (``Target.differentiable``) with the same
encoding (the graph's encoder, built in torch, so gradients reach ``x``; a Poisson code draws the same spikes as
``TargetScores`` on every call) and the same scores. What the view is, the target says: torch, norse and snntorch
hand out their own network (exact: white-box attacks on the target itself, through that framework's surrogate
gradients); the Loihi targets hand out the emulator's differentiable mode (bit-identical forward values,
straight-through gradients: the model adaptive attacks differentiate).
"""
from __future__ import annotations

import inspect
import time

import nir
import numpy as np
import torch
from torch import nn

from snnkit.deploy.base import DeployError, Differentiable, Target, get_target
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
        # a query needs the outputs only: no counting where the target can leave it out (a plug-in's run may not)
        self._options = {"counts": False} if "counts" in inspect.signature(self.target.run).parameters else {}

    @property
    def name(self) -> str:
        return self.target.name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        encoded = encode(x.detach().cpu().numpy(), self.metadata, self.timesteps)
        result = self.target.run(self.graph, encoded, **self._options)
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


class TargetModule(nn.Module):
    """The differentiable view of ``target`` (a :class:`Target`, or its name plus options) running ``graph``, as a
    score function ``x [B, *input_shape] -> [B, C]``.

    probe: inputs ``[B, ...]`` in [0, 1] like the ones to come (a quantising target infers its input coding from
    them, encoded like every query); device: where a model of the target runs; view: the target's view when
    already asked for. Attributes: ``exact`` (the view is the target's own computation), ``via`` (what it is).
    DeployError when the target has no such view.
    """

    def __init__(self, target: "Target | str", graph: nir.NIRGraph, probe: torch.Tensor | None = None, *,
                 timesteps: int | None = None, device: str = "cpu", view: Differentiable | None = None, **options):
        super().__init__()
        self.target = get_target(target, **options) if isinstance(target, str) else target
        self.graph = graph
        self.metadata = dict(graph.metadata or {})
        self.timesteps = graph_timesteps(self.metadata, timesteps)
        self.scale = float(self.metadata.get("logit_scale", 1.0))
        if view is None:
            encoded = None if probe is None else encode(probe.detach().cpu().numpy(), self.metadata, self.timesteps)
            view = self.target.differentiable(graph, encoded, device=device)
        if view is None:
            raise DeployError(f"target {self.target.name!r} has no differentiable view (attack it with queries: "
                              "TargetScores)")
        self.view = view
        if isinstance(view.forward, nn.Module):
            self.model = view.forward  # registered, so .to() and .eval() reach it

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def exact(self) -> bool:
        return self.view.exact

    @property
    def via(self) -> str:
        return self.view.via

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded = encode_torch(x, self.metadata, self.timesteps)
        out = self.view.forward(encoded)[:, self.view.delay:self.view.delay + self.timesteps]
        return (out.float().mean(1) * self.scale).to(device=x.device, dtype=x.dtype)

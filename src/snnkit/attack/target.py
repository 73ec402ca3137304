"""A deployed target seen as a score function, so that black-box and transfer attacks re-attack it.

``TargetScores(target, graph)(x)`` encodes ``x [B, *input_shape]`` (values in [0, 1]) with the encoder recorded
in the graph's metadata (the same encoding ``snn-deploy`` uses), runs the graph on the target and returns
``[B, C]`` scores: the output spikes averaged over the reference time steps (the target's pipeline delay
removed), times the graph's ``logit_scale`` when it records one. For the torch target these are exactly the
model's logits. No gradient flows: use it with :class:`~snnkit.attack.square.Square`, as the target of
:class:`~snnkit.attack.transfer.Transfer`, or as the model of :func:`~snnkit.attack.runner.evaluate`
(``check_gradients=False``).
"""
from __future__ import annotations

import time

import nir
import numpy as np
import torch

from snnkit.deploy.base import Target, get_target
from snnkit.deploy.inputs import encode, graph_timesteps


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

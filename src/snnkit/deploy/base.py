"""The Target interface and the result record every target returns.

A target consumes a NIR graph (the single hand-off from training) and an input ``[B, T, ...]`` (spikes or
analog currents, already encoded) and returns a :class:`TargetResult`. The counting mechanism is shared
(``snnkit.energy.counting``): a target only reports, per node, its output activity; synaptic ops and neuron
updates follow from the graph.
"""
from __future__ import annotations

import abc
import json
from dataclasses import asdict, dataclass, field
import nir
import numpy as np

from snnkit.energy.counting import NEURONS, WEIGHTED, Activity, fanout, neuron_count


class DeployError(Exception):
    """A problem with the user's graph, input or environment: reported as one line, exit code 2."""


@dataclass
class LayerStats:
    """Counts for one NIR node over a whole run (all samples, all steps)."""

    name: str
    kind: str
    neurons: int = 0
    spikes: int = 0
    synops: int = 0
    macs: int = 0
    neuron_updates: int = 0


@dataclass
class TargetResult:
    """What a target returns for one run.

    outputs: ``[B, T, C]`` the graph's output node per step (spikes for spiking outputs), on the target's own
        time axis (see ``delay``).
    layers: per-node counts, in the graph's topological order.
    wall_s: wall-clock seconds of the run proper (graph build excluded, see ``build_s``).
    delay: steps by which the target's outputs lag the reference semantics (0 for torch; one per connection
        layer on Loihi). ``aligned_outputs`` removes it.
    records: optional per-node outputs ``[B, T, ...]`` when recording was requested.
    """

    target: str
    outputs: np.ndarray
    layers: list[LayerStats]
    wall_s: float
    build_s: float = 0.0
    delay: int = 0
    records: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def total_spikes(self) -> int:
        return int(sum(layer.spikes for layer in self.layers))

    @property
    def total_synops(self) -> int:
        return int(sum(layer.synops for layer in self.layers))

    @property
    def total_neuron_updates(self) -> int:
        return int(sum(layer.neuron_updates for layer in self.layers))

    def aligned_outputs(self, timesteps: int) -> np.ndarray:
        """Outputs on the reference time axis: steps ``delay .. delay + timesteps - 1``."""
        return self.outputs[:, self.delay : self.delay + timesteps]

    def predictions(self, timesteps: int | None = None) -> np.ndarray:
        """Class per sample: argmax of the output spike count (ties go to the lowest index)."""
        out = self.outputs if timesteps is None else self.aligned_outputs(timesteps)
        return out.sum(axis=1).argmax(axis=1)

    def summary(self) -> dict:
        """JSON-ready summary (no per-step arrays)."""
        return {
            "target": self.target,
            "n_samples": int(self.outputs.shape[0]),
            "timesteps": int(self.outputs.shape[1]),
            "delay": self.delay,
            "layers": [asdict(layer) for layer in self.layers],
            "total_spikes": self.total_spikes,
            "total_synops": self.total_synops,
            "total_neuron_updates": self.total_neuron_updates,
            "wall_s": self.wall_s,
            "build_s": self.build_s,
            **({"info": self.info} if self.info else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.summary(), indent=2)


class Target(abc.ABC):
    """A place a NIR graph can run. Subclasses specialise the mapping, not the bookkeeping."""

    name: str = ""

    def check_available(self) -> None:
        """Raise a one-line :class:`DeployError` when this target cannot run here (a missing environment)."""

    @abc.abstractmethod
    def run(self, graph: nir.NIRGraph, x: np.ndarray, *, record: bool = False) -> TargetResult:
        """Run ``graph`` on input ``x`` of shape ``[B, T, ...]``; fresh neuron state for every sample."""


def layer_stats(graph: nir.NIRGraph, activity: dict[str, Activity], batch: int, steps: int,
                input_shapes: dict[str, tuple[int, ...]]) -> list[LayerStats]:
    """Per-node counts from per-node activity (shared by all targets).

    activity: node name -> its output activity (the graph's input node included).
    input_shapes: node name -> the shape of that node's input (no batch), for weighted nodes.
    """
    preds: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    stats = []
    for name in topological_order(graph):
        node = graph.nodes[name]
        st = LayerStats(name=name, kind=type(node).__name__)
        if isinstance(node, NEURONS):
            st.neurons = neuron_count(node)
            st.neuron_updates = st.neurons * batch * steps
            if name in activity and not isinstance(node, (nir.LI, nir.CubaLI, nir.I)):  # those emit potentials
                st.spikes = int(activity[name].events.sum())
        elif isinstance(node, WEIGHTED):
            fo = fanout(node, input_shapes[name])
            for p in preds[name]:
                if p not in activity:
                    continue
                ops = int((activity[p].events.reshape(fo.shape) * fo).sum())
                if activity[p].analog:
                    st.macs += ops
                else:
                    st.synops += ops
        else:
            continue
        stats.append(st)
    return stats


def topological_order(graph: nir.NIRGraph) -> list[str]:
    """Node names in an order where every node follows its sources; edges closing a cycle are ignored."""
    succ: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for src, dst in graph.edges:
        succ[src].append(dst)
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        state[n] = 1
        for m in succ[n]:
            if state.get(m, 0) == 0:
                visit(m)
        state[n] = 2
        order.append(n)

    roots = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)] or list(graph.nodes)
    for r in roots + sorted(graph.nodes):
        if state.get(r, 0) == 0:
            visit(r)
    return order[::-1]


# Built-in targets, imported only when asked for (the Lava worker side must never import torch).
TARGETS: dict[str, str] = {
    "torch": "snnkit.deploy.torch_target:TorchTarget",
    "norse": "snnkit.deploy.norse_target:NorseTarget",
    "snntorch": "snnkit.deploy.snntorch_target:SnnTorchTarget",
    "lava": "snnkit.deploy.lava.target:LavaTarget",
    "loihi-emu": "snnkit.deploy.loihi.emulator:LoihiEmulatorTarget",
}


def get_target(name: str, **options) -> Target:
    """Instantiate a target by name (one of ``TARGETS``) with its options."""
    import importlib

    if name not in TARGETS:
        raise DeployError(f"unknown target {name!r}; available: {', '.join(TARGETS)}")
    module, cls = TARGETS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)

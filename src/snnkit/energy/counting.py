"""Exact operation counts from a NIR graph and the activity each target recorded (the one counting rule).

Definitions (docs/semantics.md, "Counting"; docs/reference/energy.md):

- *events* of a node: over all samples and steps, the sum of its output values where they are non-negative
  integers (a spike is one event; a SumPool2d output of 3 is three spikes arriving together), otherwise the
  number of non-zero outputs (analog values; each is one multiply-accumulate downstream).
- *synaptic ops* of a weighted node (Affine, Linear, Conv1d, Conv2d): for every input position, its events
  times the number of non-zero weights leaving that position (its fan-out, exact at convolution borders and
  with stride). Pruned (zero) weights cost nothing. When the input is analog the same count is reported as
  MACs instead.
- *neuron updates*: neurons x steps x samples for every neuron node.

A target only reports what each node emitted: it feeds its outputs, batch by batch, to an
:class:`ActivityAccumulator` and hands the resulting :class:`Activity` per node to :func:`layer_stats`.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from snnkit.graph.kinds import NEURONS, POTENTIALS, WEIGHTED
from snnkit.graph.ops import conv_padding, pair
from snnkit.graph.shapes import neuron_count
from snnkit.graph.topology import predecessors, topological_order


MAX_EVENTS_PER_STEP = 2 ** 31
"""An integer output value at or above this is not a count of events in one step (an analog value: inputs of
1e30 are integers too, and their sums do not fit the int64 counters)."""


@dataclass(frozen=True)
class Activity:
    """What one node emitted over a whole run, reduced over samples and steps.

    events: array with the node's output shape (no batch or time axis): events per output position.
    analog: True when the output values were not all event counts (non-negative integers below
        :data:`MAX_EVENTS_PER_STEP`).
    """

    events: np.ndarray
    analog: bool

    @classmethod
    def from_output(cls, y: np.ndarray) -> "Activity":
        """Reduce a node's whole output ``y`` of shape ``[B, T, ...]`` to its activity."""
        acc = ActivityAccumulator()
        acc.add("y", np.asarray(y))
        return acc.activity()["y"]


class ActivityAccumulator:
    """Per-node :class:`Activity` of a run seen in pieces (batches, chunks): ``add`` each piece
    ``[B, T, ...]`` of a node's output, then ``activity()``. The pieces of one node must share their shape after
    the first two axes."""

    def __init__(self) -> None:
        self._sum: dict[str, np.ndarray] = {}
        self._nonzero: dict[str, np.ndarray] = {}
        self._counts: dict[str, bool] = {}

    def add(self, name: str, y: np.ndarray) -> None:
        s = y.sum(axis=(0, 1), dtype=np.float64)
        nz = (y != 0).sum(axis=(0, 1)).astype(np.int64)
        counts = bool(np.all(y >= 0) and np.all(y < MAX_EVENTS_PER_STEP) and np.all(np.mod(y, 1) == 0))
        if name in self._sum:
            self._sum[name] += s
            self._nonzero[name] += nz
            self._counts[name] &= counts
        else:
            self._sum[name], self._nonzero[name], self._counts[name] = s, nz, counts

    def activity(self) -> dict[str, Activity]:
        return {n: (Activity(np.rint(self._sum[n]).astype(np.int64), False) if self._counts[n]
                    else Activity(self._nonzero[n], True)) for n in self._sum}


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

    COUNTS = ("spikes", "synops", "macs", "neuron_updates")
    """The fields that count events of a run (they add up over runs on parts of the samples)."""

    @classmethod
    def combined(cls, parts: "list[LayerStats]") -> "LayerStats":
        """One node's stats of runs on parts of the samples as one run's: its counts summed."""
        first = parts[0]
        return cls(name=first.name, kind=first.kind, neurons=first.neurons,
                   **{k: sum(getattr(p, k) for p in parts) for k in cls.COUNTS})


def layer_stats(graph: nir.NIRGraph, activity: dict[str, Activity], batch: int, steps: int,
                input_shapes: dict[str, tuple[int, ...]]) -> list[LayerStats]:
    """Per-node counts (neuron and weighted nodes, in topological order) from per-node activity.

    activity: node name -> its output activity (the graph's input node included).
    input_shapes: node name -> the shape of that node's input (no batch), for weighted nodes
        (``snnkit.graph.weighted_input_shapes``).
    """
    preds = predecessors(graph)
    stats = []
    for name in topological_order(graph):
        node = graph.nodes[name]
        st = LayerStats(name=name, kind=type(node).__name__)
        if isinstance(node, NEURONS):
            st.neurons = neuron_count(node)
            st.neuron_updates = st.neurons * batch * steps
            if name in activity and not isinstance(node, POTENTIALS):  # those emit potentials, not spikes
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


def dense_layer_macs(graph: nir.NIRGraph, input_shapes: dict[str, tuple[int, ...]]) -> list[LayerStats]:
    """Per weighted node, the multiply-accumulates of one dense evaluation (one sample, one step): every weight
    times every input position it reaches, zero weights and zero inputs included, as a dense GEMM or
    convolution computes them (the ``macs`` field). This is the work of the non-spiking twin per sample and the
    dense op count per step of the spiking graph.

    input_shapes: node name -> the shape of that node's input (``snnkit.graph.weighted_input_shapes``).
    """
    import dataclasses

    out = []
    for name in topological_order(graph):
        node = graph.nodes[name]
        if isinstance(node, WEIGHTED):
            ones = dataclasses.replace(node, weight=np.ones_like(np.asarray(node.weight)))
            out.append(LayerStats(name=name, kind=type(node).__name__,
                                  macs=int(fanout(ones, input_shapes[name]).sum())))
    return out


def fanout(node: nir.NIRNode, input_shape: tuple[int, ...]) -> np.ndarray:
    """Number of non-zero synapses leaving each input position of a weighted node.

    Shape: ``input_shape`` (no batch axis). For Affine/Linear the column counts of non-zero weights; for
    convolutions a transposed convolution of the non-zero mask with a ones map, which counts exactly the
    output positions each input reaches (borders, stride, padding, dilation and groups included).
    """
    import torch
    import torch.nn.functional as F

    w = np.asarray(node.weight)
    if isinstance(node, (nir.Affine, nir.Linear)):
        per_input = (w != 0).sum(axis=0)
        return per_input.reshape(input_shape)
    nd = w.ndim - 2
    nz = torch.from_numpy((w != 0).astype(np.float64))
    groups = int(np.asarray(node.groups).item())
    x = torch.zeros((1, *input_shape), dtype=torch.float64)
    conv = F.conv1d if isinstance(node, nir.Conv1d) else F.conv2d
    # The gradient of sum(conv(x)) with respect to x is exactly the per-input fan-out count (computed with
    # gradients on even when the caller runs under torch.no_grad(), as an attack querying a target does).
    x.requires_grad_(True)
    with torch.enable_grad():
        conv(x, nz, stride=pair(node.stride, nd), padding=conv_padding(node), dilation=pair(node.dilation, nd),
             groups=groups).sum().backward()
    return np.rint(x.grad[0].numpy()).astype(np.int64)

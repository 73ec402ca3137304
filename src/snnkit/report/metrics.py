"""NeuroBench-style metrics computed from a NIR graph and a target's result record.

Definitions (NeuroBench 2.x, restated for snnkit's records; see docs/reference/energy.md):

- activation sparsity: ``1 - spikes / neuron updates`` over every neuron node (the fraction of neuron-steps
  that emitted nothing);
- synaptic operations per sample: effective ACs (``synops``: spike-fed), effective MACs (``macs``: analog-fed)
  and dense ops (every weight times every input position, zeros included) per sample, summed over steps;
- connection sparsity: the fraction of zero weights over every weighted node (Affine, Linear, Conv);
- footprint: every floating-point value stored in the graph's nodes (weights and biases, plus per-neuron
  parameters: thresholds, time constants, gains) at float32, 4 bytes each (NeuroBench counts the torch
  module's parameters and buffers, where scalar neuron parameters are single values);
- membrane updates per sample: ``neuron_updates / samples``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import nir
import numpy as np

from snnkit.energy.counting import dense_layer_macs
from snnkit.graph import weighted_input_shapes
from snnkit.graph.kinds import NEURONS, PORTS, WEIGHTED

FLOAT32_BYTES = 4


@dataclass
class StaticMetrics:
    """Properties of the graph alone."""

    parameters: int
    synaptic_parameters: int
    footprint_bytes: int
    weights: int
    zero_weights: int
    dense_ops_per_step: int

    @property
    def connection_sparsity(self) -> float:
        return self.zero_weights / self.weights if self.weights else 0.0


@dataclass
class WorkloadMetrics:
    """Properties of one run (per sample unless named total)."""

    samples: int
    steps: int
    activation_sparsity: float
    synops_per_sample: float
    macs_per_sample: float
    dense_ops_per_sample: float
    membrane_updates_per_sample: float
    spikes_per_sample: float


def static_metrics(graph: nir.NIRGraph) -> StaticMetrics:
    """Parameter count, footprint, connection sparsity and dense ops per step of ``graph``."""
    params = synaptic = weights = zeros = 0
    input_shapes = weighted_input_shapes(graph)
    for name, node in graph.nodes.items():
        if isinstance(node, PORTS):
            continue
        for f in dataclasses.fields(node):
            if f.name in ("input_type", "output_type", "metadata", "input_shape"):
                continue
            v = getattr(node, f.name)
            if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
                params += int(v.size)
                synaptic += int(v.size) if isinstance(node, WEIGHTED) else 0
        if isinstance(node, WEIGHTED):
            w = np.asarray(node.weight)
            weights += int(w.size)
            zeros += int(np.count_nonzero(w == 0))
    dense = sum(layer.macs for layer in dense_layer_macs(graph, input_shapes))
    return StaticMetrics(parameters=params, synaptic_parameters=synaptic, footprint_bytes=params * FLOAT32_BYTES, weights=weights,
                         zero_weights=zeros, dense_ops_per_step=dense)


def workload_metrics(graph: nir.NIRGraph, result, steps: int | None = None,
                     static: StaticMetrics | None = None) -> WorkloadMetrics:
    """Workload metrics of ``result`` (a :class:`~snnkit.deploy.base.TargetResult`) on ``graph``.

    steps: the steps the counts cover (default: the result's own time axis, ``T + delay`` on Loihi).
    """
    static = static or static_metrics(graph)
    n = int(result.outputs.shape[0])
    steps = int(result.outputs.shape[1]) if steps is None else int(steps)
    neuron_layers = [layer for layer in result.layers if isinstance(graph.nodes.get(layer.name), NEURONS)]
    updates = sum(layer.neuron_updates for layer in neuron_layers)
    spikes = sum(layer.spikes for layer in neuron_layers)
    macs = result.total_macs
    return WorkloadMetrics(
        samples=n, steps=steps,
        activation_sparsity=1.0 - spikes / updates if updates else float("nan"),
        synops_per_sample=result.total_synops / n, macs_per_sample=macs / n,
        dense_ops_per_sample=float(static.dense_ops_per_step * steps),
        membrane_updates_per_sample=updates / n, spikes_per_sample=spikes / n)

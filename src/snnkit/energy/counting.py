"""Exact operation counts from a NIR graph and the activity each target recorded.

Definitions (docs/semantics.md, "Counting"; docs/reference/energy.md):

- *events* of a node: over all samples and steps, the sum of its output values where they are non-negative
  integers (a spike is one event; a SumPool2d output of 3 is three spikes arriving together), otherwise the
  number of non-zero outputs (analog values; each is one multiply-accumulate downstream).
- *synaptic ops* of a weighted node (Affine, Linear, Conv1d, Conv2d): for every input position, its events
  times the number of non-zero weights leaving that position (its fan-out, exact at convolution borders and
  with stride). Pruned (zero) weights cost nothing. When the input is analog the same count is reported as
  MACs instead.
- *neuron updates*: neurons x steps x samples for every neuron node.

Everything here is numpy/torch on the host; targets only report per-node activity.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

WEIGHTED = (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d)
NEURONS = (nir.LIF, nir.IF, nir.CubaLIF, nir.LI, nir.CubaLI, nir.I)


@dataclass(frozen=True)
class Activity:
    """What one node emitted over a whole run, reduced over samples and steps.

    events: array with the node's output shape (no batch or time axis): events per output position.
    analog: True when the output values were not all non-negative integers.
    """

    events: np.ndarray
    analog: bool

    @classmethod
    def from_output(cls, y: np.ndarray) -> "Activity":
        """Reduce a node's output ``y`` of shape ``[B, T, ...]`` to its activity."""
        y = np.asarray(y)
        is_count = bool(np.all(y >= 0) and np.all(np.mod(y, 1) == 0))
        if is_count:
            return cls(events=y.sum(axis=(0, 1)).astype(np.int64), analog=False)
        return cls(events=(y != 0).sum(axis=(0, 1)).astype(np.int64), analog=True)


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
    nz = torch.from_numpy((w != 0).astype(np.float64))
    stride, padding, dilation = _conv_geometry(node)
    groups = int(np.asarray(node.groups).item())
    x = torch.zeros((1, *input_shape), dtype=torch.float64)
    conv = F.conv1d if isinstance(node, nir.Conv1d) else F.conv2d
    # The gradient of sum(conv(x)) with respect to x is exactly the per-input fan-out count.
    x.requires_grad_(True)
    conv(x, nz, stride=stride, padding=padding, dilation=dilation, groups=groups).sum().backward()
    return np.rint(x.grad[0].numpy()).astype(np.int64)


def _conv_geometry(node: nir.NIRNode):
    def tup(v):
        a = np.atleast_1d(np.asarray(v))
        return tuple(int(i) for i in a)

    padding = node.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        else:  # 'same' with stride 1: symmetric padding of (k-1)/2 * dilation
            k = np.asarray(node.weight).shape[2:]
            d = np.broadcast_to(np.asarray(node.dilation), (len(k),))
            padding = tuple(int(dd * (kk - 1) // 2) for kk, dd in zip(k, d))
    return tup(node.stride), tup(padding), tup(node.dilation)


def neuron_count(node: nir.NIRNode) -> int:
    """Number of neurons in a neuron node (the size of its per-neuron parameters)."""
    for attr in ("v_threshold", "tau", "tau_mem", "r"):
        if hasattr(node, attr):
            return int(np.asarray(getattr(node, attr)).size)
    raise ValueError(f"not a neuron node: {type(node).__name__}")

"""The graph analysis that groups NIR's connection nodes into Loihi projections (numpy, torch-free).

The connection nodes themselves are applied with :mod:`snnkit.graph.ops` (``x [N, *in_shape]`` in, batch axis
first).

Between two spiking layers (or the input and a spiking layer) a NIR graph may hold any chain of connection
nodes (Affine, Linear, Conv2d, pooling, Flatten, Scale). On Loihi that whole chain becomes one synapse
stage: :func:`projections_into` finds, for one neuron node, the linear map from each of its sources and
the constant (bias) the chain adds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np

from snnkit.graph.kinds import PORTS
from snnkit.graph.ops import apply_node, conv_padding, pair
from snnkit.limits import check as check_memory


@dataclass
class Region:
    """The connection nodes feeding one neuron node, and the sources (spiking layers / the input) feeding them.

    ``order`` lists the region's connection nodes in evaluation order; ``feeds[n]`` the region nodes or sources
    whose outputs are summed into node ``n`` (or into the target neuron for the key ``target``).
    """

    target: str
    order: list[str]
    sources: list[str]
    feeds: dict[str, list[str]] = field(default_factory=dict)


def region_into(target: str, nodes: dict[str, nir.NIRNode], preds: dict[str, list[str]],
                is_source) -> Region:
    """Walk back from ``target`` through connection (and pass-through) nodes until sources are reached."""
    order: list[str] = []
    sources: list[str] = []
    feeds: dict[str, list[str]] = {}
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ValueError(f"a cycle through connection node {n!r} without a spiking layer in it")
        state[n] = 1
        feeds[n] = []
        for p in preds[n]:
            if is_source(p):
                if p not in sources:
                    sources.append(p)
            else:
                visit(p)
            feeds[n].append(p)
        state[n] = 2
        order.append(n)

    feeds[target] = []
    for p in preds[target]:
        if is_source(p):
            if p not in sources:
                sources.append(p)
        else:
            visit(p)
        feeds[target].append(p)
    return Region(target=target, order=order, sources=sources, feeds=feeds)


def evaluate_region(region: Region, nodes: dict[str, nir.NIRNode], inputs: dict[str, np.ndarray],
                    batch: int, target_shape: tuple[int, ...], shapes: dict) -> np.ndarray:
    """The summed input current of ``region.target`` for the given source outputs ``[N, *shape]``.

    Sources missing from ``inputs`` contribute zero; the result is ``[N, prod(target_shape)]``.
    """
    vals: dict[str, np.ndarray] = {}

    def get(p: str) -> np.ndarray | None:
        if p in vals:
            return vals[p]
        return inputs.get(p)

    def summed(ps: list[str]) -> np.ndarray | None:
        acc = None
        for p in ps:
            v = get(p)
            if v is None:
                continue
            acc = v if acc is None else acc + v.reshape(acc.shape)
        return acc

    for n in region.order:
        x = summed(region.feeds[n])
        node = nodes[n]
        if x is None:
            x = np.zeros((batch, *shapes[n][0]))
        vals[n] = x if isinstance(node, PORTS) else apply_node(node, x)
    y = summed(region.feeds[region.target])
    if y is None:
        return np.zeros((batch, int(np.prod(target_shape))))
    return y.reshape(batch, -1)


PROBE_BLOCK = 256
"""Unit vectors per evaluation of a region in :func:`linear_maps`: the probes and the intermediate values stay
``PROBE_BLOCK x`` (a node's size) instead of growing with the square of the source's size."""


def linear_maps(region: Region, nodes: dict[str, nir.NIRNode], shapes: dict,
                target_shape: tuple[int, ...]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Exact matrices ``A[src]`` (``[n_target, n_src]``) and the constant ``b`` (``[n_target]``) of a region.

    Found by probing the region with unit vectors (each source alone, :data:`PROBE_BLOCK` at a time) and with
    zeros; ``shapes`` as :func:`snnkit.graph.infer_shapes` returns.
    """
    direct = _affine_chain(region, nodes, shapes)
    if direct is not None:
        return direct
    b = evaluate_region(region, nodes, {}, 1, target_shape, shapes)[0]
    sizes = {s: int(np.prod(shapes[s][1])) for s in region.sources}
    check_memory(f"the connection matrices into node {region.target!r} "
                 + " + ".join(f"[{b.shape[0]} x {n}]" for n in sizes.values()),
                 8.0 * b.shape[0] * sum(sizes.values()))
    maps = {}
    for s in region.sources:
        shape, n = shapes[s][1], sizes[s]
        a = np.empty((b.shape[0], n))
        for lo in range(0, n, PROBE_BLOCK):
            hi = min(n, lo + PROBE_BLOCK)
            probe = np.zeros((hi - lo, n))
            probe[np.arange(hi - lo), np.arange(lo, hi)] = 1.0
            y = evaluate_region(region, nodes, {s: probe.reshape(hi - lo, *shape)}, hi - lo, target_shape, shapes)
            a[:, lo:hi] = (y - b[None, :]).T
        maps[s] = a
    return maps, b


def _affine_chain(region: Region, nodes: dict[str, nir.NIRNode], shapes: dict
                  ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """``linear_maps`` of a region that is one source through Flatten nodes into one Affine or Linear: the
    weight is the matrix and the bias the constant (what probing finds, without ``n_src`` evaluations of a
    ``[block, n_src]`` product); None for any other region."""
    if len(region.sources) != 1 or not region.order:
        return None
    *head, last = region.order
    node = nodes[last]
    if not isinstance(node, (nir.Affine, nir.Linear)) or any(not isinstance(nodes[n], nir.Flatten) for n in head):
        return None
    prev = region.sources[0]
    for n in [*region.order, region.target]:
        if region.feeds.get(n) != [prev]:
            return None
        prev = n
    weight = np.asarray(node.weight, dtype=np.float64)
    n_src = int(np.prod(shapes[region.sources[0]][1]))
    if weight.ndim != 2 or len(shapes[last][0]) != 1 or weight.shape[1] != n_src:
        return None
    bias = np.asarray(node.bias, dtype=np.float64) if isinstance(node, nir.Affine) else np.zeros(weight.shape[0])
    return {region.sources[0]: weight}, np.broadcast_to(bias, weight.shape[:1]).copy()


@dataclass
class ConvChain:
    """A region that is a single chain ``[pooling...] -> Conv2d`` from one source: kept as a convolution."""

    weight: np.ndarray  # [O, C/groups, kH, kW], pooling folded in
    bias: np.ndarray  # [O]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    in_shape: tuple[int, int, int]  # (C, H, W) of the source
    out_shape: tuple[int, int, int]


def as_conv_chain(region: Region, nodes: dict[str, nir.NIRNode], shapes: dict) -> ConvChain | None:
    """The region as one convolution, or None when it is not ``[SumPool2d/AvgPool2d...] -> Conv2d``.

    Non-overlapping pooling (kernel == stride, no padding, input divisible by the kernel) before a Conv2d
    with dilation 1 folds exactly into a larger, strided kernel: each weight is repeated over its pooling
    window (divided by the window size for AvgPool2d).
    """
    if len(region.sources) != 1 or len(region.order) == 0:
        return None
    chain = [n for n in region.order if not isinstance(nodes[n], PORTS)]
    for n in region.order:
        if len(region.feeds[n]) != 1:
            return None
    if len(region.feeds[region.target]) != 1 or region.feeds[region.target][0] != region.order[-1]:
        return None
    # a simple chain: each node fed by the previous one
    prev = region.sources[0]
    for n in region.order:
        if region.feeds[n][0] != prev:
            return None
        prev = n
    if not chain or not isinstance(nodes[chain[-1]], nir.Conv2d):
        return None
    src_shape = shapes[region.sources[0]][1]
    if len(src_shape) != 3:
        return None
    conv = nodes[chain[-1]]
    w = np.asarray(conv.weight, dtype=np.float64)
    stride, padding, dilation = pair(conv.stride), conv_padding(conv), pair(conv.dilation)
    groups = int(np.asarray(conv.groups).item())
    shape = src_shape
    factor = [1, 1]
    scale = 1.0
    for n in chain[:-1]:
        node = nodes[n]
        if not isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            return None
        k, s, p = pair(node.kernel_size), pair(node.stride), pair(node.padding)
        if k != s or p != (0, 0) or shape[1] % k[0] or shape[2] % k[1]:
            return None
        factor = [factor[0] * k[0], factor[1] * k[1]]
        if isinstance(node, nir.AvgPool2d):
            scale /= k[0] * k[1]
        shape = (shape[0], shape[1] // k[0], shape[2] // k[1])
    if factor != [1, 1]:
        if dilation != (1, 1):
            return None
        w = np.kron(w, np.ones((1, 1, factor[0], factor[1]))) * scale
        stride = (stride[0] * factor[0], stride[1] * factor[1])
        padding = (padding[0] * factor[0], padding[1] * factor[1])
    bias = np.zeros(w.shape[0]) if getattr(conv, "bias", None) is None else \
        np.broadcast_to(np.asarray(conv.bias, dtype=np.float64), (w.shape[0],)).copy()
    return ConvChain(weight=w, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     in_shape=tuple(src_shape), out_shape=shapes[chain[-1]][1])

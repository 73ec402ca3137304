"""Numpy versions of NIR's connection nodes and the graph analysis that groups them into projections.

Torch-free (the Lava worker imports this package). Shapes carry no batch axis in NIR; here every array
function takes a leading batch axis: ``x`` is ``[N, *in_shape]`` and the result ``[N, *out_shape]``.

Between two spiking layers (or the input and a spiking layer) a NIR graph may hold any chain of connection
nodes (Affine, Linear, Conv2d, pooling, Flatten, Scale). On Loihi that whole chain becomes one synapse
stage: :func:`projections_into` finds, for one neuron node, the linear map from each of its sources and
the constant (bias) the chain adds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np

CONNECTIONS = (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d, nir.Flatten,
               nir.Scale)
SPIKING = (nir.LIF, nir.IF, nir.CubaLIF)


def pair(v, n: int = 2) -> tuple[int, ...]:
    """``v`` (int, sequence or array) as an ``n``-tuple of ints."""
    a = np.atleast_1d(np.asarray(v)).astype(np.int64).ravel()
    if a.size == 1:
        a = np.repeat(a, n)
    return tuple(int(i) for i in a[:n])


def conv_padding(node: nir.NIRNode) -> tuple[int, ...]:
    """Numeric padding of a Conv1d/Conv2d node (``'valid'`` -> 0, ``'same'`` -> symmetric, odd kernels)."""
    w = np.asarray(node.weight)
    nd = w.ndim - 2
    pad = node.padding
    if isinstance(pad, str):
        if pad == "valid":
            return (0,) * nd
        k = w.shape[2:]
        d = pair(node.dilation, nd)
        if any((dd * (kk - 1)) % 2 for kk, dd in zip(k, d)):
            raise ValueError(f"padding='same' with an even kernel {k} needs asymmetric padding")
        return tuple(dd * (kk - 1) // 2 for kk, dd in zip(k, d))
    return pair(pad, nd)


def _type_shape(node: nir.NIRNode, key: str) -> tuple[int, ...] | None:
    types = getattr(node, key + "_type", None) or {}
    v = types.get(key)
    if v is None:
        return None
    a = np.atleast_1d(np.asarray(v, dtype=object))
    if a.size == 0 or any(i is None for i in a.ravel()):
        return None
    return tuple(int(i) for i in a)


def infer_shapes(nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]], in_name: str
                 ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``name -> (input shape, output shape)`` (no batch axis) for every node reachable from ``in_name``.

    NIR's own type inference leaves some nodes untyped (pooling, for one); here shapes are propagated from
    the Input node by applying each connection node to zeros. Neurons keep their input's shape (or their
    parameters' shape when those are not scalar). Edges that close a cycle are not needed for shapes.
    """
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for s, d in edges:
        succ[s].append(d)
        preds[d].append(s)
    start = _type_shape(nodes[in_name], "output") or _type_shape(nodes[in_name], "input")
    if start is None:
        raise ValueError(f"input node {in_name!r} has no shape")
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {in_name: (start, start)}
    frontier = [in_name]
    while frontier:
        nxt = []
        for n in frontier:
            for d in succ[n]:
                if d in shapes:
                    continue
                known = [shapes[p][1] for p in preds[d] if p in shapes]
                if len(known) < len([p for p in preds[d] if _reachable_before(p, d, shapes, preds)]):
                    continue
                shp_in = known[0]
                node = nodes[d]
                if isinstance(node, CONNECTIONS):
                    out = apply_node(node, np.zeros((1, *shp_in)))
                    shp_out = tuple(out.shape[1:])
                elif isinstance(node, (nir.Input, nir.Output)):
                    shp_out = shp_in
                else:
                    params = [np.asarray(getattr(node, a)) for a in ("v_threshold", "tau", "tau_mem", "r")
                              if getattr(node, a, None) is not None]
                    shp_out = next((tuple(p.shape) for p in params if p.ndim > 0 and p.size > 1), shp_in)
                shapes[d] = (tuple(shp_in), tuple(shp_out))
                nxt.append(d)
        frontier = nxt
    return shapes


def _reachable_before(p: str, d: str, shapes: dict, preds: dict[str, list[str]]) -> bool:
    """Whether predecessor ``p`` of ``d`` must be shaped first (False for edges that close a cycle)."""
    if p in shapes:
        return True
    seen, stack = set(), [p]
    while stack:  # p is on a cycle through d when d reaches it backwards
        q = stack.pop()
        if q == d:
            return False
        if q in seen:
            continue
        seen.add(q)
        stack.extend(preds[q])
    return True


# --- array versions of the connection nodes -------------------------------------------------------------

def conv2d(x: np.ndarray, w: np.ndarray, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
           groups: int = 1) -> np.ndarray:
    """Cross-correlation as torch's ``conv2d``: ``x [N, C, H, W]``, ``w [O, C/groups, kH, kW]`` -> ``[N, O, H', W']``."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    og = o // groups
    outs = []
    for g in range(groups):
        xs = win[:, g * cg:(g + 1) * cg]  # [N, cg, H', W', kh, kw]
        ws = w[g * og:(g + 1) * og]  # [og, cg, kh, kw]
        outs.append(np.einsum("ncxyij,ocij->noxy", xs, ws, optimize=True))
    return np.concatenate(outs, axis=1)


def conv1d(x: np.ndarray, w: np.ndarray, stride=(1,), padding=(0,), dilation=(1,), groups: int = 1) -> np.ndarray:
    """``x [N, C, L]``, ``w [O, C/groups, k]`` -> ``[N, O, L']`` (as a 2-D convolution of height 1)."""
    y = conv2d(x[:, :, None, :], w[:, :, None, :], (1, stride[0]), (0, padding[0]), (1, dilation[0]), groups)
    return y[:, :, 0, :]


def sum_pool2d(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """Sum over windows: ``x [N, C, H, W]`` -> ``[N, C, H', W']`` (zero padding)."""
    c = x.shape[1]
    ones = np.ones((c, 1, *kernel), dtype=x.dtype)
    return conv2d(x, ones, stride, padding, (1, 1), groups=c)


def apply_node(node: nir.NIRNode, x: np.ndarray) -> np.ndarray:
    """Apply one connection node to ``x [N, *in_shape]`` (float64)."""
    n = x.shape[0]
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight, dtype=np.float64)
        y = x.reshape(n, -1) @ w.T
        if isinstance(node, nir.Affine):
            y = y + np.asarray(node.bias, dtype=np.float64).reshape(1, -1)
        return y
    if isinstance(node, nir.Scale):
        return x * np.asarray(node.scale, dtype=np.float64)
    if isinstance(node, nir.Flatten):
        shape = x.shape[1:]
        nd = len(shape)
        start = int(node.start_dim) % nd if nd else 0
        end = int(node.end_dim) % nd if nd else 0
        new = shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
        return x.reshape(n, *new)
    if isinstance(node, nir.Conv2d):
        y = conv2d(x, np.asarray(node.weight, dtype=np.float64), pair(node.stride), conv_padding(node),
                   pair(node.dilation), int(np.asarray(node.groups).item()))
        return y + _channel_bias(node, y.ndim)
    if isinstance(node, nir.Conv1d):
        y = conv1d(x, np.asarray(node.weight, dtype=np.float64), pair(node.stride, 1), conv_padding(node),
                   pair(node.dilation, 1), int(np.asarray(node.groups).item()))
        return y + _channel_bias(node, y.ndim)
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        k = pair(node.kernel_size)
        y = sum_pool2d(x, k, pair(node.stride), pair(node.padding))
        return y / (k[0] * k[1]) if isinstance(node, nir.AvgPool2d) else y
    raise ValueError(f"not a connection node: {type(node).__name__}")


def _channel_bias(node: nir.NIRNode, ndim: int) -> np.ndarray:
    b = np.asarray(getattr(node, "bias", 0.0) if getattr(node, "bias", None) is not None else 0.0,
                   dtype=np.float64)
    if b.ndim == 0:
        return b
    return b.reshape((1, -1) + (1,) * (ndim - 2))


# --- graph analysis --------------------------------------------------------------------------------------

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
        vals[n] = x if isinstance(node, (nir.Input, nir.Output)) else apply_node(node, x)
    y = summed(region.feeds[region.target])
    if y is None:
        return np.zeros((batch, int(np.prod(target_shape))))
    return y.reshape(batch, -1)


def linear_maps(region: Region, nodes: dict[str, nir.NIRNode], shapes: dict,
                target_shape: tuple[int, ...]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Exact matrices ``A[src]`` (``[n_target, n_src]``) and the constant ``b`` (``[n_target]``) of a region.

    Found by probing the region with unit vectors (each source alone) and with zeros; ``shapes`` as
    :func:`infer_shapes` returns.
    """
    b = evaluate_region(region, nodes, {}, 1, target_shape, shapes)[0]
    maps = {}
    for s in region.sources:
        shape = shapes[s][1]
        n = int(np.prod(shape))
        eye = np.eye(n).reshape(n, *shape)
        y = evaluate_region(region, nodes, {s: eye}, n, target_shape, shapes) - b[None, :]
        maps[s] = y.T.copy()
    return maps, b


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
    chain = [n for n in region.order if not isinstance(nodes[n], (nir.Input, nir.Output))]
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

"""Graph-to-graph rewrites that keep a graph's meaning (docs/semantics.md) but suit another reader.

Third-party importers (Norse, snnTorch) read NIR with known gaps (docs/reference/nir-conventions.md).
Each rewrite here takes a graph and returns a new one with the same outputs under the reference semantics, in
a form the importer reads correctly. Node names are kept, so what a target records maps back to the original
graph. Each returns ``(graph, changes)``, ``changes`` being one line per node it touched (empty: nothing to do).

- :func:`batch_agnostic_flatten`: Flatten dims as negative indices (importers build ``torch.nn.Flatten``
  from NIR's batch-free ``start_dim``, which then swallows the batch axis).
- :func:`pool_to_conv`: AvgPool2d, or a padded SumPool2d, as the equivalent (channel-diagonal) Conv2d.
- :func:`rescale_time`: time constants for a reader whose ``dt`` is fixed (snnTorch: 1e-4 s); the metadata's
  ``dt`` follows, so snnkit reads the rewritten graph the same way.
- :func:`pool_params_as_pairs`: pooling ``kernel_size``/``stride``/``padding`` as 2-element arrays (snnTorch's and
  SpikingJelly's exporters write scalars, which snnTorch's own importer cannot iterate).
- :func:`leak_to_bias`: a LIF's ``v_leak`` as a constant input current (bias of its source layer).
- :func:`fold_input_gain`: a neuron's input gain multiplied into its source layer's weights.
"""
from __future__ import annotations

from typing import Callable

import nir
import numpy as np

from snnkit.graph import DeployError, infer_shapes, predecessors, successors
from snnkit.graph.kinds import POOLING, WEIGHTED
from snnkit.graph.ops import pair


Changes = list[str]


def replace_nodes(graph: nir.NIRGraph, new: dict[str, nir.NIRNode]) -> nir.NIRGraph:
    """A copy of ``graph`` with some nodes replaced (same names, same edges, same metadata)."""
    nodes = {name: new.get(name, node) for name, node in graph.nodes.items()}
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata or {}),
                        type_check=False)


def batch_agnostic_flatten(graph: nir.NIRGraph) -> tuple[nir.NIRGraph, Changes]:
    """Flatten nodes with ``start_dim``/``end_dim`` counted from the end of the sample shape."""
    shapes = None
    new, changes = {}, []
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.Flatten) or int(node.start_dim) < 0:
            continue
        shape = node.input_type.get("input") if node.input_type else None
        if shape is None:
            shapes = shapes or {n: io[1] for n, io in infer_shapes(graph).items()}
            shape = shapes[predecessors(graph)[name][0]]
        n = len(shape)
        start = int(node.start_dim) - n
        end = int(node.end_dim) - n if int(node.end_dim) >= 0 else int(node.end_dim)
        new[name] = nir.Flatten(input_type={"input": np.asarray(shape)}, start_dim=start, end_dim=end)
        changes.append(f"{name}: Flatten start_dim {int(node.start_dim)} -> {start} (batch axis left alone)")
    return (replace_nodes(graph, new) if new else graph), changes


def pool_to_conv(graph: nir.NIRGraph, *, avg: bool = True, padded_sum: bool = True) -> tuple[nir.NIRGraph, Changes]:
    """AvgPool2d (``avg``) and SumPool2d with padding (``padded_sum``) as Conv2d nodes.

    The kernel is channel-diagonal, ``1/(kH kW)`` (average, zero padding counted) or 1 (sum): exact for spike
    inputs. It is a full ``(C, C, kH, kW)`` kernel, not a grouped one, because Norse's and snnTorch's importers
    take a Conv2d's input channels from ``weight.shape[1]`` and so cannot build grouped convolutions.
    """
    shapes = None
    new, changes = {}, []
    for name, node in graph.nodes.items():
        is_avg = isinstance(node, nir.AvgPool2d)
        is_padded_sum = isinstance(node, nir.SumPool2d) and bool(np.any(np.asarray(node.padding) != 0))
        if not ((avg and is_avg) or (padded_sum and is_padded_sum)):
            continue
        shapes = shapes or {n: io[1] for n, io in infer_shapes(graph).items()}
        c, h, w = shapes[predecessors(graph)[name][0]]
        k = np.broadcast_to(np.atleast_1d(np.asarray(node.kernel_size)), (2,)).astype(int)
        value = 1.0 / (k[0] * k[1]) if is_avg else 1.0
        weight = np.zeros((c, c, k[0], k[1]), dtype=np.float32)
        weight[np.arange(c), np.arange(c)] = value
        pair = lambda v: tuple(int(i) for i in np.broadcast_to(np.atleast_1d(np.asarray(v)), (2,)))  # noqa: E731
        new[name] = nir.Conv2d(input_shape=(h, w), weight=weight, stride=pair(node.stride),
                               padding=pair(node.padding), dilation=(1, 1), groups=1,
                               bias=np.zeros(c, dtype=np.float32))
        changes.append(f"{name}: {type(node).__name__} -> channel-diagonal Conv2d (weights {value:g})")
    return (replace_nodes(graph, new) if new else graph), changes


def pool_params_as_pairs(graph: nir.NIRGraph) -> tuple[nir.NIRGraph, Changes]:
    """SumPool2d/AvgPool2d whose kernel_size, stride or padding is a scalar, with each as a pair."""
    new, changes = {}, []
    for name, node in graph.nodes.items():
        if isinstance(node, POOLING) and any(np.ndim(getattr(node, a)) == 0
                                             for a in ("kernel_size", "stride", "padding")):
            pairs = {a: np.asarray(pair(getattr(node, a))) for a in ("kernel_size", "stride", "padding")}
            new[name] = type(node)(**pairs)
            changes.append(f"{name}: {type(node).__name__} kernel_size/stride/padding as pairs")
    return (replace_nodes(graph, new) if new else graph), changes


def rescale_time(graph: nir.NIRGraph, dt: float, dt_reader: float) -> tuple[nir.NIRGraph, Changes]:
    """Scale every time constant by ``dt_reader/dt``: a reader stepping with ``dt_reader`` then computes the same
    ``1 - dt/tau`` decays. Gains ``r`` and ``w_in`` stay as they are (``(1-beta) r`` is unchanged too)."""
    if dt == dt_reader:
        return graph, []
    f = dt_reader / dt
    new = {}
    for name, n in graph.nodes.items():
        if isinstance(n, nir.LIF):
            new[name] = nir.LIF(tau=_f64(n.tau) * f, r=_f64(n.r), v_leak=n.v_leak, v_threshold=n.v_threshold,
                                v_reset=n.v_reset)
        elif isinstance(n, nir.CubaLIF):
            new[name] = nir.CubaLIF(tau_syn=_f64(n.tau_syn) * f, tau_mem=_f64(n.tau_mem) * f, r=_f64(n.r),
                                    v_leak=n.v_leak, v_threshold=n.v_threshold, v_reset=n.v_reset, w_in=_f64(n.w_in))
    changes = [f"{name}: time constants x {f:g} (dt {dt:g} s read as {dt_reader:g} s)" for name in new]
    out = replace_nodes(graph, new)
    out.metadata["dt"] = dt_reader  # the same decays at the reader's step: the graph keeps its meaning
    return out, changes


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _single_weighted_source(graph: nir.NIRGraph, name: str, what: str) -> list[str]:
    """The weighted nodes feeding neuron ``name``, each feeding nothing else (else DeployError)."""
    srcs = predecessors(graph)[name]
    for s in srcs:
        node = graph.nodes[s]
        if not isinstance(node, WEIGHTED):
            raise DeployError(f"node {name!r}: cannot move its {what} into its input layer {s!r} "
                              f"({type(node).__name__} has no weights)")
        if successors(graph)[s] != [name]:
            raise DeployError(f"node {name!r}: cannot move its {what} into {s!r}, which also feeds "
                              f"{', '.join(repr(d) for d in successors(graph)[s] if d != name)}")
    return srcs


def _per_output(node: nir.NIRNode, factor: np.ndarray, name: str, what: str) -> np.ndarray:
    """``factor`` (neuron shape or scalar) as one value per output row/channel of the weighted ``node``."""
    n_out = np.asarray(node.weight).shape[0]
    f = np.asarray(factor, dtype=np.float64)
    conv = np.ndim(node.weight) > 2
    if conv and f.ndim == np.ndim(node.weight) - 1:  # one value per neuron [C, ...]: one per channel needed
        per_channel = f.reshape(f.shape[0], -1)
        if not np.all(per_channel == per_channel[:, :1]):
            raise DeployError(f"node {name!r}: its {what} varies within a channel, which a convolution cannot "
                              "absorb")
        f = per_channel[:, 0]
    f = f.reshape(-1)
    if f.size == 1:
        f = np.full(n_out, f.item())
    if f.size != n_out:
        raise DeployError(f"node {name!r}: its {what} has {f.size} values for {n_out} outputs")
    return f


def _with_weights(node: nir.NIRNode, weight: np.ndarray, bias: np.ndarray | None) -> nir.NIRNode:
    dtype = np.asarray(node.weight).dtype
    weight = weight.astype(dtype)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        return type(node)(input_shape=node.input_shape, weight=weight, stride=node.stride, padding=node.padding,
                          dilation=node.dilation, groups=node.groups,
                          bias=(np.zeros(weight.shape[0]) if bias is None else bias).astype(dtype))
    if bias is None:
        return nir.Linear(weight=weight)
    return nir.Affine(weight=weight, bias=bias.astype(dtype))


def fold_input_gain(graph: nir.NIRGraph,
                    gain: Callable[[str, nir.NIRNode], "tuple[np.ndarray, nir.NIRNode] | None"],
                    what: str = "input gain") -> tuple[nir.NIRGraph, Changes]:
    """Multiply a per-neuron input gain into the weights (and bias) of the layers feeding each neuron.

    ``gain(name, node)`` returns ``(k, replacement)`` — the factor to move out of the neuron and the neuron
    node without it — or None to leave the node alone. Exact for neurons whose state is linear in their input
    (every neuron here: the gain multiplies the input before anything else touches it).
    """
    new: dict[str, nir.NIRNode] = {}
    changes = []
    for name, node in graph.nodes.items():
        res = gain(name, node)
        if res is None:
            continue
        k, replacement = res
        k = np.asarray(k, dtype=np.float64)
        new[name] = replacement
        if np.all(k == 1.0):
            continue
        for s in _single_weighted_source(graph, name, what):
            src = new.get(s, graph.nodes[s])
            f = _per_output(src, k, name, what)
            w = _f64(src.weight) * f.reshape((-1,) + (1,) * (np.ndim(src.weight) - 1))
            bias = getattr(src, "bias", None)
            new[s] = _with_weights(src, w, None if bias is None else _f64(bias) * f)
        changes.append(f"{name}: {what} (x{_describe(k)}) moved into {', '.join(predecessors(graph)[name])}")
    return (replace_nodes(graph, new) if new else graph), changes


def leak_to_bias(graph: nir.NIRGraph) -> tuple[nir.NIRGraph, Changes]:
    """A LIF's ``v_leak`` as the constant input ``v_leak / r`` added to its source layer's bias.

    ``tau dv/dt = (v_leak - v) + r I = -v + r (I + v_leak/r)``: the same dynamics from the same zero state.
    """
    from snnkit.graph import plan

    recurrent = plan(graph).recurrent
    new: dict[str, nir.NIRNode] = {}
    changes = []
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.LIF) or np.all(_f64(node.v_leak) == 0):
            continue
        extra = _f64(node.v_leak) / _f64(node.r)
        # A constant current enters once, through a feed-forward source (a recurrent one is silent at t = 0).
        s = next((s for s in predecessors(graph)[name] if (s, name) not in recurrent), None)
        src = new.get(s, graph.nodes[s]) if s is not None else None
        if not isinstance(src, WEIGHTED) or len(successors(graph)[s]) != 1:
            raise DeployError(f"node {name!r}: cannot move its v_leak into its input layer {s!r} "
                              "(it must be a Linear/Affine/Conv1d/Conv2d feeding only this node)")
        f = _per_output(src, extra, name, "v_leak")
        bias = getattr(src, "bias", None)
        new[s] = _with_weights(src, _f64(src.weight), (0.0 if bias is None else _f64(bias)) + f)
        new[name] = nir.LIF(tau=node.tau, r=node.r, v_leak=np.zeros_like(_f64(node.v_leak)),
                            v_threshold=node.v_threshold, v_reset=node.v_reset)
        changes.append(f"{name}: v_leak ({_describe(node.v_leak)}) moved into the bias of {s}")
    return (replace_nodes(graph, new) if new else graph), changes


def _describe(a) -> str:
    a = np.asarray(a, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    return f"{lo:.6g}" if lo == hi else f"{lo:.6g}..{hi:.6g}"

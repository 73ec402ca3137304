"""``to_nir``: an snnkit model as a ``nir.NIRGraph`` (parameters as in docs/semantics.md).

Layers map one to one (``nn.Linear`` -> Affine or Linear, ``Conv2d`` -> Conv2d, ``AvgPool2d`` -> AvgPool2d,
``SumPool2d`` -> SumPool2d, ``Flatten`` -> Flatten, ``LIF``/``IF``/``CubaLIF``/``LI``/``CubaLI`` -> their NIR
nodes) and keep their names; ``BatchNormTT`` is folded into the preceding Linear/Conv2d with its running (eval)
statistics. Residual blocks (``snnkit.nn.residual``) keep their layers' names (``"<block>.<layer>"``) and become
edges: a layer fed by a sum gets an edge from each term (NIR sums a node's inputs), so a tdBN shortcut is an
edge into the block's last neuron and a SEW ADD output an edge from both spike sources into every consumer.
``MaxPool2d`` over the spikes of one spiking layer becomes SumPool2d -> IF (threshold 0.5), exact on 0/1 inputs;
a max pool over anything else, and SEW's IAND, have no exact NIR form and are refused in one line naming the
layer (the report's warnings say so too).

Weights are copied unchanged (pruned weights stay exact zeros). Neuron parameters are written per neuron with
the neuron's shape, time constants and gains in float64 so that reading them back gives the same float32 layer
parameters:

- LIF: ``tau = dt/(1-beta)``, ``r = g/(1-beta)``; IF: ``r = g``; CubaLIF: ``tau_syn = dt/(1-alpha)``,
  ``w_in = g_syn/(1-alpha)`` and ``tau_mem``, ``r`` as LIF. A LIF whose ``beta`` is 1 for every neuron is an IF.

Graph metadata: ``dt``, ``reset`` (per spiking node), ``encoder``, ``timesteps``, ``input_shape``,
``num_classes``, ``logit_scale``, ``snnkit_version``. Reset by subtraction, which NIR cannot express, is kept in
the metadata and listed as a warning in the report.
"""
from __future__ import annotations

from collections import OrderedDict

import nir
import numpy as np
import torch
from torch import nn

from snnkit.export.report import ExportReport, NodeRecord
from snnkit.graph.kinds import SPIKING, WEIGHTED
from snnkit.models.spiking import SpikingModel
from snnkit.graph.errors import first_line
from snnkit.nn.layers import BatchNormTT, Flatten, SumPool2d
from snnkit.nn.neurons import IF, LI, LIF, CubaLI, CubaLIF
from snnkit.nn.residual import BLOCK_INPUT, Block, IAnd


def _np(t: torch.Tensor, dtype=np.float32) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy().astype(dtype)


def _full(value: torch.Tensor, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """A (scalar or broadcastable) parameter as an array of the neuron shape."""
    return np.broadcast_to(_np(value, np.float64), shape).astype(dtype).copy()


def _exported_layers(layers: nn.Module, prefix: str = ""):
    """``(name, module)`` of every layer the export maps: the chain's layers and, inside residual blocks,
    theirs (``"<block>.<layer>"``)."""
    for name, m in layers.named_children():
        yield prefix + name, m
        if isinstance(m, Block):
            yield from _exported_layers(m, f"{prefix}{name}.")


def _layer_shapes(model: SpikingModel, input_shape: tuple[int, ...]) -> dict[str, tuple[tuple, tuple]]:
    """(input shape, output shape) of every layer for one sample and one step."""
    shapes: dict[str, tuple[tuple, tuple]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(
        n, (tuple(inp[0].shape[2:]), tuple(out.shape[2:])))) for n, m in _exported_layers(model.layers)]
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        with torch.no_grad():
            model.layers(torch.zeros((1, 1, *input_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return shapes


def _fold_bn(node: "nir.Affine | nir.Conv2d", bn: BatchNormTT) -> "nir.Affine | nir.Conv2d":
    """Fold eval-mode BatchNorm ``y = gamma (z - mean)/sqrt(var + eps) + beta`` into ``z = W x + b``."""
    b = bn.bn
    scale = _np(b.weight, np.float64) / np.sqrt(_np(b.running_var, np.float64) + b.eps)
    shift = _np(b.bias, np.float64) - _np(b.running_mean, np.float64) * scale
    w = np.asarray(node.weight, dtype=np.float64)
    w = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    bias = np.asarray(getattr(node, "bias", None) if getattr(node, "bias", None) is not None else 0.0, np.float64)
    bias = (bias * scale + shift).astype(np.float32)
    if isinstance(node, nir.Conv2d):
        return nir.Conv2d(input_shape=node.input_shape, weight=w, stride=node.stride, padding=node.padding,
                          dilation=node.dilation, groups=node.groups, bias=bias)
    return nir.Affine(weight=w, bias=bias)


def _lif_node(m: LIF, shape, dt: float, name: str, report: ExportReport) -> nir.NIRNode:
    beta = _full(m.decay(), shape)
    g = _full(m.input_scale, shape)
    thr = _full(m.threshold, shape, np.float32)
    v_reset = _full(m.v_reset if m.reset == "zero" else torch.zeros(()), shape, np.float32)
    if isinstance(m, IF) or bool(np.all(beta == 1.0)):
        if not isinstance(m, IF):
            report.note(f"{name}: LIF with beta = 1 (no leak) written as NIR IF")
        return nir.IF(r=g, v_threshold=thr, v_reset=v_reset)
    if np.any(beta == 1.0):
        raise ValueError(f"layer {name!r}: some neurons have beta = 1 (no leak) and others not; "
                         "NIR LIF cannot express beta = 1 (tau = inf)")
    return nir.LIF(tau=dt / (1.0 - beta), r=g / (1.0 - beta), v_leak=_full(m.v_leak, shape, np.float32),
                   v_threshold=thr, v_reset=v_reset)


def _readout_node(m: "LI | CubaLI", shape, dt: float, name: str) -> nir.NIRNode:
    """LI / CubaLI: the charge parameters of the LIF / CubaLIF node, without threshold and reset."""
    if isinstance(m, CubaLI):
        c = _cuba_node(m, shape, dt, name)
        return nir.CubaLI(tau_syn=c.tau_syn, tau_mem=c.tau_mem, r=c.r, v_leak=c.v_leak, w_in=c.w_in)
    beta = _full(m.decay(), shape)
    if np.any(beta == 1.0):
        raise ValueError(f"layer {name!r}: LI with beta = 1 has an infinite time constant")
    return nir.LI(tau=dt / (1.0 - beta), r=_full(m.input_scale, shape) / (1.0 - beta),
                  v_leak=_full(m.v_leak, shape, np.float32))


def _cuba_node(m: CubaLIF, shape, dt: float, name: str) -> nir.NIRNode:
    alpha, beta, _, _ = m._params()
    alpha, beta = _full(alpha, shape), _full(beta, shape)
    if np.any(alpha == 1.0) or np.any(beta == 1.0):
        raise ValueError(f"layer {name!r}: CubaLIF with alpha or beta = 1 has an infinite time constant")
    return nir.CubaLIF(tau_syn=dt / (1.0 - alpha), tau_mem=dt / (1.0 - beta),
                       r=_full(m.input_scale, shape) / (1.0 - beta), v_leak=_full(m.v_leak, shape, np.float32),
                       v_threshold=_full(m.threshold, shape, np.float32),
                       v_reset=_full(m.v_reset if m.reset == "zero" else torch.zeros(()), shape, np.float32),
                       w_in=_full(m.syn_scale, shape) / (1.0 - alpha))


def _pool_args(m: "nn.AvgPool2d | nn.MaxPool2d") -> dict:
    def pair(v):
        return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)
    return {"kernel_size": pair(m.kernel_size), "stride": pair(m.stride if m.stride is not None else m.kernel_size),
            "padding": pair(m.padding)}


def _layer_node(name: str, m: nn.Module, in_shape: tuple, out_shape: tuple, dt: float,
                report: ExportReport) -> "nir.NIRNode | None":
    """The NIR node of one layer (None for layers that are the identity at inference)."""
    from snnkit.export.executor import PartialFlatten, Scale

    kind = type(m).__name__
    if isinstance(m, nn.Linear):
        w = _np(m.weight)
        return nir.Linear(weight=w) if m.bias is None else nir.Affine(weight=w, bias=_np(m.bias))
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise ValueError(f"layer {name!r}: Conv2d padding_mode {m.padding_mode!r} has no NIR equivalent")
        padding = m.padding if isinstance(m.padding, str) else np.array(m.padding, dtype=np.int64)
        bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels, np.float32)
        return nir.Conv2d(input_shape=np.array(in_shape[1:], dtype=np.int64), weight=_np(m.weight),
                          stride=np.array(m.stride, dtype=np.int64), padding=padding,
                          dilation=np.array(m.dilation, dtype=np.int64), groups=m.groups, bias=bias)
    if isinstance(m, SumPool2d):
        return nir.SumPool2d(**_pool_args(m))
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or (not m.count_include_pad and np.any(np.asarray(m.padding) != 0)):
            raise ValueError(f"layer {name!r}: AvgPool2d with ceil_mode or count_include_pad=False has no "
                             "NIR equivalent")
        return nir.AvgPool2d(**_pool_args(m))
    if isinstance(m, PartialFlatten):
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=m.start_dim, end_dim=m.end_dim)
    if isinstance(m, (Flatten, nn.Flatten)):
        if isinstance(m, nn.Flatten) and (m.start_dim != 1 and m.start_dim != -len(in_shape) - 1):
            raise ValueError(f"layer {name!r}: only a full flatten of each sample can be exported")
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1)
    if isinstance(m, Scale):
        return nir.Scale(scale=_np(m.scale))
    if isinstance(m, (LI, CubaLI)):
        return _readout_node(m, out_shape, dt, name)
    if isinstance(m, (LIF, CubaLIF)):
        node = _lif_node(m, out_shape, dt, name, report) if isinstance(m, LIF) else _cuba_node(m, out_shape, dt, name)
        if m.reset == "subtract":
            report.warn(f"{name}: reset by subtraction cannot be expressed in NIR; the file says v_reset = 0 "
                        "and records 'subtract' in metadata['reset'] (snnkit reads it back exactly, other "
                        "readers reset to zero)")
        learned = [p for p in ("beta", "alpha", "threshold") if isinstance(getattr(m, p, None), nn.Parameter)]
        if learned:
            report.note(f"{name}: learnable {', '.join(learned)} exported at the current values")
        return node
    if isinstance(m, (nn.Identity, nn.Dropout)):
        report.note(f"{name}: {kind} is the identity at inference and is not exported")
        return None
    if isinstance(m, IAnd):
        raise ValueError(f"layer {name!r}: SEW IAND ((1 - A) x S of two spike trains) has no exact NIR form "
                         "(NIR only sums a node's inputs); train with the ADD connection (--sew add) to export")
    raise ValueError(f"layer {name!r}: {kind} has no NIR mapping")


class _Walk:
    """The NIR nodes and edges of a layer chain, residual blocks included.

    What a layer's output is, is a list of NIR node names whose sum it equals (NIR sums a node's inputs): one
    node for a mapped layer; the same list for BatchNormTT (folded into its Linear/Conv2d) and for layers that
    are the identity; for a residual block, the sum of its output sources' lists, so a SEW ADD is the edges of
    both spike sources into every consumer, and a tdBN shortcut an edge into the block's last neuron.
    """

    def __init__(self, nodes: dict, sources: dict, shapes: dict, dt: float, report: ExportReport):
        self.nodes, self.sources, self.shapes, self.dt, self.report = nodes, sources, shapes, dt, report
        self.edges: list[tuple[str, str]] = []
        self.resets: dict[str, str] = {}

    def chain(self, layers, inputs: list[str]) -> list[str]:
        """Map ``[(name, module), ...]`` applied in turn to the sum of ``inputs``; returns the output's list."""
        for name, m in layers:
            inputs = self.layer(name, m, inputs, consumers=1)
        return inputs

    def block(self, name: str, block: Block, inputs: list[str]) -> list[str]:
        refs = [s for srcs in block.sources.values() for s in srcs] + list(block.output)
        value = {BLOCK_INPUT: inputs}
        for sub, m in block.named_children():
            srcs = [s for ref in block.sources[sub] for s in value[ref]]
            value[sub] = self.layer(f"{name}.{sub}", m, srcs, consumers=max(1, refs.count(block.sources[sub][0])))
        return [s for ref in block.output for s in value[ref]]

    def layer(self, name: str, m: nn.Module, inputs: list[str], consumers: int) -> list[str]:
        """Map one layer fed by the sum of ``inputs`` (``consumers``: how many layers read its one input)."""
        if isinstance(m, Block):
            return self.block(name, m, inputs)
        kind = type(m).__name__
        if isinstance(m, nn.MaxPool2d):
            return self.max_pool(name, m, inputs)
        if isinstance(m, BatchNormTT):
            src = inputs[0] if len(inputs) == 1 else None
            if src is None or not isinstance(self.nodes.get(src), WEIGHTED) or consumers > 1 or \
                    any(s == src for s, _ in self.edges):
                raise ValueError(f"layer {name!r}: BatchNormTT must directly follow a Linear or Conv2d to be folded")
            self.nodes[src] = _fold_bn(self.nodes[src], m)
            self.sources[src] += f" + {kind} {name}"
            self.report.note(f"{name}: BatchNormTT folded into {src} (running statistics)")
            return inputs
        in_shape, out_shape = self.shapes[name]
        node = _layer_node(name, m, in_shape, out_shape, self.dt, self.report)
        if node is None:
            return inputs
        if isinstance(m, (LIF, CubaLIF)) and not isinstance(m, (LI, CubaLI)):
            self.resets[name] = m.reset
        self.nodes[name] = node
        self.sources[name] = f"{kind} {name}"
        self.edges += [(s, name) for s in inputs]
        return [name]

    def max_pool(self, name: str, m: nn.MaxPool2d, inputs: list[str]) -> list[str]:
        """MaxPool2d over the spikes (0/1) of one spiking layer: the window's maximum is 1 exactly when its sum is
        at least 1, so SumPool2d -> IF (``r = 1``, threshold 0.5, reset to 0) gives it step by step (the IF's
        potential is 0 after every step: reset after a spike, else the sum was 0)."""
        src = self.nodes.get(inputs[0]) if len(inputs) == 1 else None
        plain = m.dilation in (1, (1, 1)) and not m.ceil_mode and not m.return_indices
        if not isinstance(src, SPIKING) or not plain:
            why = "its input is not the spikes of one spiking layer" if plain else \
                "dilation, ceil_mode or return_indices"
            raise ValueError(f"layer {name!r}: MaxPool2d has no exact NIR form here ({why}; NIR pools only sum or "
                             "average, and a maximum is exact only over spikes); train with --pool avg to export")
        _, out_shape = self.shapes[name]
        gate = f"{name}_or"
        self.nodes[name] = nir.SumPool2d(**_pool_args(m))
        self.nodes[gate] = nir.IF(r=np.ones(out_shape), v_threshold=np.full(out_shape, 0.5, np.float32),
                                  v_reset=np.zeros(out_shape, np.float32))
        self.sources[name] = f"MaxPool2d {name} (window sums)"
        self.sources[gate] = f"MaxPool2d {name} (1 where a window sum is >= 1)"
        self.resets[gate] = "zero"
        self.edges += [(s, name) for s in inputs] + [(name, gate)]
        self.report.note(f"{name}: MaxPool2d over spikes written as SumPool2d {name} -> IF {gate} (threshold 0.5): "
                         "exact, the maximum of 0/1 values is 1 where their sum is at least 1")
        return [gate]


def _finish(nodes: dict, edges: list, metadata: dict, sources: dict, report: ExportReport) -> nir.NIRGraph:
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=False)
    report.nodes = [NodeRecord(name=n, kind=type(node).__name__, source=sources.get(n, type(node).__name__),
                               neurons=int(np.asarray(getattr(node, "v_threshold", [])).size))
                    for n, node in graph.nodes.items()]
    report.metadata = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in metadata.items()}
    return graph


def to_nir(model: "SpikingModel | nn.Module", *, dt: float | None = None,
           report: ExportReport | None = None) -> nir.NIRGraph:
    """The NIR graph of ``model``: a :class:`SpikingModel`, or a :class:`~snnkit.export.executor.NIRNetwork`
    (an imported graph, recurrent ones included: their cycles are written back as cyclic edges).

    dt: step length in seconds (default ``model.config["dt"]`` / the network's ``dt``). report: filled with the
    node list, warnings (lossy cases) and notes when given. Raises ValueError for a layer NIR cannot express.
    """
    from snnkit.export.executor import NIRNetwork

    report = report if report is not None else ExportReport()
    if isinstance(model, NIRNetwork):
        return _network_to_nir(model, dt, report)
    from snnkit import __version__

    cfg = model.config
    dt = float(dt if dt is not None else cfg.get("dt", 1e-3))
    if not dt > 0:
        raise ValueError(f"dt must be positive, not {dt}")
    report.dt = dt
    input_shape = tuple(int(s) for s in cfg["input_shape"])
    shapes = _layer_shapes(model, input_shape)
    nodes: "OrderedDict[str, nir.NIRNode]" = OrderedDict(input=nir.Input(input_type=np.array(input_shape)))
    walk = _Walk(nodes, {"input": "input"}, shapes, dt, report)
    try:
        out = walk.chain(model.layers.named_children(), ["input"])
    except ValueError as exc:  # a layer NIR cannot express: the report says which and why
        report.warn(f"export refused: {first_line(exc)}")
        raise
    last = out[0]
    nodes["output"] = nir.Output(output_type=np.array(shapes[last][1] if last in shapes else input_shape))
    walk.edges += [(s, "output") for s in out]
    encoder = model.encoder.spec() if hasattr(model.encoder, "spec") else {"name": "direct"}
    metadata = {
        "dt": dt,
        "reset": walk.resets,
        "encoder": encoder,
        "timesteps": int(model.timesteps),
        "input_shape": np.array(input_shape, dtype=np.int64),
        "num_classes": int(cfg.get("num_classes", shapes[last][1][-1] if last in shapes else 0)),
        "logit_scale": float(model.logit_scale),
        "snnkit_version": __version__,
    }
    return _finish(dict(nodes), walk.edges, metadata, walk.sources, report)


def _network_to_nir(net, dt: float | None, report: ExportReport) -> nir.NIRGraph:
    """An imported (possibly recurrent) network back to NIR, with the same node names and edges."""
    from snnkit import __version__
    from snnkit.graph import graph_metadata

    dt = float(dt if dt is not None else net.dt)
    report.dt = dt
    with torch.no_grad():
        outs = net.run(torch.zeros((1, 1, *net.input_shape), device=next(net.buffers(), torch.zeros(1)).device))
    shape = {n: tuple(y.shape[2:]) for n, y in outs.items()}
    nodes, sources, resets = {}, {}, {}
    for name, m in zip(net.plan.order, net.layers):
        srcs = [s for s, _ in net.plan.inputs[name]]
        in_shape = shape[srcs[0]] if srcs else net.input_shape
        if name == net.plan.input_name:
            node = nir.Input(input_type=np.array(net.input_shape))
        elif name == net.plan.output_name:
            node = nir.Output(output_type=np.array(shape[name]))
        else:
            node = _layer_node(name, m, in_shape, shape[name], dt, report)
        if node is None:
            raise ValueError(f"node {name!r}: {type(m).__name__} cannot be written back")
        if isinstance(m, (LIF, CubaLIF)) and not isinstance(m, (LI, CubaLI)):
            resets[name] = m.reset
        nodes[name] = node
        sources[name] = type(m).__name__
    edges = [(s, d) for s, d in net.graph.edges if s in nodes and d in nodes]
    metadata = {k: v for k, v in graph_metadata(net.graph).items() if not k.startswith("_")}
    metadata.update(dt=dt, reset=resets, snnkit_version=__version__)
    return _finish(nodes, edges, metadata, sources, report)

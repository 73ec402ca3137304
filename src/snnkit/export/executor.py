"""``from_nir``: a NIR graph as an executable snnkit module (the torch reference executor).

Each node becomes an ``snnkit.nn`` layer with per-neuron parameter tensors as NIR gives them (no other neuron
dynamics exist here):

| NIR | module | parameters |
|---|---|---|
| Affine / Linear | ``torch.nn.Linear`` | weight, bias |
| Conv2d | ``snnkit.nn.Conv2d`` | weight, bias, stride, padding, dilation, groups |
| SumPool2d / AvgPool2d | ``snnkit.nn.SumPool2d`` / ``snnkit.nn.AvgPool2d`` | kernel, stride, padding |
| Flatten | ``snnkit.nn.Flatten`` (or a partial flatten) | start_dim, end_dim (no batch axis) |
| Scale | elementwise product | scale |
| LIF | ``snnkit.nn.LIF`` | ``beta = 1 - dt/tau``, ``input_scale = (1-beta) r``, v_leak, threshold, v_reset |
| IF | ``snnkit.nn.IF`` | ``input_scale = r``, threshold, v_reset |
| CubaLIF | ``snnkit.nn.CubaLIF`` | ``alpha = 1 - dt/tau_syn``, ``syn_scale = (1-alpha) w_in``, beta and input_scale as LIF |
| LI / CubaLI | ``snnkit.nn.LI`` / ``snnkit.nn.CubaLI`` | as LIF / CubaLIF without threshold; the output is the potential |

The reset mode of a spiking node is ``metadata["reset"][name]`` when snnkit wrote the graph, else ``"zero"``
(NIR has no reset-mode field). Feed-forward graphs run layer at a time on ``[B, T, ...]`` (the code path of
snnkit's own models, so a round trip is bit-identical); graphs with cycles run step at a time with each
layer's ``.step()``, a recurrent edge reading its source's output of the previous step (zero at ``t = 0``).
Everything runs in float32.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import nir
import numpy as np
import torch
from torch import nn

from snnkit.graph import DeployError, GraphPlan, flatten_graph, graph_dt, graph_metadata, plan, read_nir
from snnkit.graph.conventions import decay, node_resets
from snnkit.graph.kinds import SPIKING
from snnkit.nn.layers import AvgPool2d, Conv2d, Flatten, SumPool2d
from snnkit.nn.neurons import IF, LI, LIF, CubaLI, CubaLIF, SpikingLayer



def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.get_default_dtype()).clone()


def _pair(v) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])


def _v_reset(node) -> np.ndarray:
    return _f64(0.0 if getattr(node, "v_reset", None) is None else node.v_reset)


class Scale(nn.Module):
    """NIR ``Scale``: elementwise product with a fixed array (any ``[B, T, ...]``)."""

    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", _t(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class PartialFlatten(nn.Module):
    """NIR ``Flatten`` over dims ``start..end`` of one sample (no batch axis) of ``[B, T, ...]``."""

    def __init__(self, start_dim: int, end_dim: int):
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.start_dim + 2 if self.start_dim >= 0 else self.start_dim
        e = self.end_dim + 2 if self.end_dim >= 0 else self.end_dim
        return x.flatten(s, e)


def _affine(name, node, dt, reset) -> nn.Module:
    w = np.asarray(node.weight)
    bias = getattr(node, "bias", None)
    m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        m.weight.copy_(_t(w))
        if bias is not None:
            m.bias.copy_(_t(bias))
    return m


def _conv2d(name, node, dt, reset) -> nn.Module:
    w = np.asarray(node.weight)
    groups = int(np.asarray(node.groups).item())
    padding = node.padding if isinstance(node.padding, str) else _pair(node.padding)
    m = Conv2d(w.shape[1] * groups, w.shape[0], w.shape[2:], stride=_pair(node.stride), padding=padding,
               dilation=_pair(node.dilation), groups=groups, bias=True)
    with torch.no_grad():
        m.weight.copy_(_t(w))
        m.bias.copy_(_t(np.zeros(w.shape[0]) if node.bias is None else node.bias))
    return m


def _pool(cls):
    def build(name, node, dt, reset) -> nn.Module:
        return cls(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding))
    return build


def _flatten(name, node, dt, reset) -> nn.Module:
    start, end = int(node.start_dim), int(node.end_dim)
    shape = node.input_type.get("input") if node.input_type else None
    if start == 0 and (end == -1 or (shape is not None and end == len(shape) - 1)):
        return Flatten()
    return PartialFlatten(start, end)


def _lif(name, node, dt, reset) -> nn.Module:
    beta = decay(name, "beta", dt, node.tau)
    return LIF(beta=_t(beta), threshold=_t(node.v_threshold), reset=reset, v_leak=_t(node.v_leak),
               input_scale=_t((1.0 - beta) * _f64(node.r)), v_reset=_t(_v_reset(node)))


def _if(name, node, dt, reset) -> nn.Module:
    return IF(threshold=_t(node.v_threshold), reset=reset, input_scale=_t(node.r), v_reset=_t(_v_reset(node)))


def _cuba(name, node, dt, reset) -> nn.Module:
    alpha = decay(name, "alpha", dt, node.tau_syn)
    beta = decay(name, "beta", dt, node.tau_mem)
    return CubaLIF(alpha=_t(alpha), beta=_t(beta), threshold=_t(node.v_threshold), reset=reset,
                   v_leak=_t(node.v_leak), syn_scale=_t((1.0 - alpha) * _f64(node.w_in)),
                   input_scale=_t((1.0 - beta) * _f64(node.r)), v_reset=_t(_v_reset(node)))


def _li(name, node, dt, reset) -> nn.Module:
    beta = decay(name, "beta", dt, node.tau)
    return LI(beta=_t(beta), v_leak=_t(node.v_leak), input_scale=_t((1.0 - beta) * _f64(node.r)))


def _cuba_li(name, node, dt, reset) -> nn.Module:
    alpha = decay(name, "alpha", dt, node.tau_syn)
    beta = decay(name, "beta", dt, node.tau_mem)
    return CubaLI(alpha=_t(alpha), beta=_t(beta), v_leak=_t(node.v_leak), syn_scale=_t((1.0 - alpha) * _f64(node.w_in)),
                  input_scale=_t((1.0 - beta) * _f64(node.r)))


BUILDERS: dict[type, Callable[..., nn.Module]] = {
    nir.Input: lambda *a: nn.Identity(),
    nir.Output: lambda *a: nn.Identity(),
    nir.Affine: _affine,
    nir.Linear: _affine,
    nir.Conv2d: _conv2d,
    nir.SumPool2d: _pool(SumPool2d),
    nir.AvgPool2d: _pool(AvgPool2d),
    nir.Flatten: _flatten,
    nir.Scale: lambda name, node, dt, reset: Scale(node.scale),
    nir.LIF: _lif,
    nir.IF: _if,
    nir.CubaLIF: _cuba,
    nir.LI: _li,
    nir.CubaLI: _cuba_li,
}
SUPPORTED = tuple(sorted(t.__name__ for t in BUILDERS))


class NIRNetwork(nn.Module):
    """An executable NIR graph over ``[B, T, *input_shape]`` -> ``[B, T, *output_shape]`` (float32).

    ``run(x)`` returns every node's output ``[B, T, ...]`` by name; ``forward(x)`` the Output node's.
    Neuron state starts at zero on every call. Attributes: ``graph`` (flat), ``plan``, ``dt`` (s),
    ``resets`` (per spiking node), ``input_shape``.
    """

    def __init__(self, graph: nir.NIRGraph, dt: float | None = None, reset: str | None = None):
        super().__init__()
        graph = flatten_graph(graph)
        self.graph = graph
        self.plan: GraphPlan = plan(graph)
        self.dt = graph_dt(graph, dt)
        self.resets = node_resets(graph, reset)
        modules = []
        for name in self.plan.order:
            node = graph.nodes[name]
            build = BUILDERS.get(type(node))
            if build is None:
                raise DeployError(f"node {name!r}: NIR node type {type(node).__name__} is not supported "
                                  f"(supported: {', '.join(SUPPORTED)})")
            try:
                modules.append(build(name, node, self.dt, self.resets.get(name, "zero")))
            except DeployError:
                raise
            except (ValueError, TypeError, RuntimeError) as exc:
                raise DeployError(f"node {name!r} ({type(node).__name__}): {str(exc).splitlines()[0]}") from None
        self.layers = nn.ModuleList(modules)
        shape = graph.nodes[self.plan.input_name].input_type.get("input")
        if shape is None:
            raise DeployError("the graph's Input node has no shape")
        self.input_shape = tuple(int(s) for s in np.asarray(shape).tolist())

    def modules_by_name(self) -> dict[str, nn.Module]:
        return dict(zip(self.plan.order, self.layers))

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != len(self.input_shape) + 2 or tuple(x.shape[2:]) != self.input_shape:
            want = ", ".join(str(s) for s in self.input_shape)
            raise DeployError(f"input has shape {list(x.shape)}; the graph expects [B, T, {want}]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.plan.output_name]

    def run(self, x: torch.Tensor, *, stepped: bool | None = None) -> dict[str, torch.Tensor]:
        """Every node's output ``[B, T, ...]`` for input ``x [B, T, *input_shape]``.

        stepped: one step at a time through every layer (default: only for graphs with cycles; feed-forward
        graphs run layer at a time, with the same results).
        """
        self.check_input(x)
        x = x.to(torch.get_default_dtype())
        if self.plan.has_cycles if stepped is None else stepped:
            return self._run_stepped(x)
        out: dict[str, torch.Tensor] = {}
        for name, module in zip(self.plan.order, self.layers):
            src = x if name == self.plan.input_name else _sum(out[s] for s, _ in self.plan.inputs[name])
            out[name] = module(src)
        return out

    def _run_stepped(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        named = list(zip(self.plan.order, self.layers))
        states: dict[str, object] = {}
        prev: dict[str, torch.Tensor] = {}
        steps: dict[str, list[torch.Tensor]] = {name: [] for name, _ in named}
        for t in range(x.shape[1]):
            cur: dict[str, torch.Tensor] = {}
            for name, module in named:
                if name == self.plan.input_name:
                    src = x[:, t]
                else:
                    src = _sum(prev[s] if rec else cur[s] for s, rec in self.plan.inputs[name]
                               if not (rec and s not in prev))
                if isinstance(module, SpikingLayer):
                    if name not in states:
                        states[name] = module.init_state(src)
                    y, states[name], _ = module.step(src, states[name])
                else:
                    y = module(src.unsqueeze(1)).squeeze(1)
                cur[name] = y
                steps[name].append(y)
            prev = cur
        return {name: torch.stack(ys, 1) for name, ys in steps.items()}


def _sum(tensors) -> torch.Tensor:
    total = None
    for t in tensors:
        total = t if total is None else total + t
    return total


def from_nir(graph: "nir.NIRGraph | str | Path", *, dt: float | None = None,
             reset: str | None = None) -> NIRNetwork:
    """Build the torch reference executor of a NIR graph (or ``.nir`` file).

    dt: step length in seconds; default the graph's ``metadata["dt"]``, else 1e-4 (third-party files).
    reset: reset mode for all spiking nodes; default the graph's metadata, else "zero".
    Raises DeployError for unsupported nodes, bad parameters or a graph that cannot run.
    """
    if isinstance(graph, (str, Path)):
        graph = read_nir(graph)
    return NIRNetwork(graph, dt=dt, reset=reset)

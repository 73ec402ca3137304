"""Run a NIR graph through another library's own importer and step it (the reverse direction of tests/interop).

Each ``run_*`` function imports ``graph`` with the library's importer as a user would, steps it over
``x [B, T, *input_shape]`` from a fresh state and returns the output spikes ``[B, T, C]`` (float32 numpy).
Nothing here works around an importer bug: where one needs a work-around, the per-library export
(``snn-export --target norse|snntorch``) or the caller does it, and says which bug.
"""
from __future__ import annotations

import nir
import numpy as np
import torch

from conftest import quiet


def _tensor_steps(x: np.ndarray):
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return [xt[:, t] for t in range(x.shape[1])]


def run_snntorch(graph: nir.NIRGraph, x: np.ndarray) -> np.ndarray:
    """``snntorch.import_nir.import_from_nir(graph)``, stepped with its hidden state reset first."""
    from snntorch import utils as snn_utils
    from snntorch.import_nir import import_from_nir

    with quiet():
        module = import_from_nir(graph)
        snn_utils.reset(module)
        outs, state = [], None
        with torch.no_grad():
            for xt in _tensor_steps(x):
                out = module(xt) if state is None else module(xt, state)
                if isinstance(out, tuple):
                    out, state = out[0], (out[1] if len(out) > 1 else None)
                outs.append(out[0] if isinstance(out, tuple) else out)
    return torch.stack(outs, 1).float().numpy()


def run_norse(graph: nir.NIRGraph, x: np.ndarray, dt: float) -> np.ndarray:
    """``norse.torch.from_nir(graph, dt=dt)``, stepped from its own initial state."""
    import norse.torch as nt

    with quiet():
        module = nt.from_nir(graph, dt=dt)
        outs, state = [], None
        with torch.no_grad():
            for xt in _tensor_steps(x):
                out, state = module(xt, state)
                outs.append(out)
    return torch.stack(outs, 1).float().numpy()


def run_spikingjelly(graph: nir.NIRGraph, x: np.ndarray, dt: float) -> np.ndarray:
    """``spikingjelly...nir_exchange.import_from_nir(graph, dt=dt)`` in single-step mode, state passed along."""
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    with quiet():
        module = import_from_nir(graph, dt=dt, step_mode="s")
        outs, state = [], None
        with torch.no_grad():
            for xt in _tensor_steps(x):
                out, state = module(xt, state)
                outs.append(out)
    return torch.stack(outs, 1).float().numpy()


# --------------------------------------------------------------------------------------------- nirtorch


class EulerNeuron(torch.nn.Module):
    """A user's NIR neuron for ``nirtorch.nir_to_torch``: forward-Euler LIF / IF / CubaLIF with step ``dt``,
    reset to ``v_reset``, state passed in and out (nirtorch's stateful-module protocol)."""

    def __init__(self, node: nir.NIRNode, dt: float):
        super().__init__()
        self.kind = type(node).__name__
        f = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)).float()  # noqa: E731
        self.thr, self.v_reset = f(node.v_threshold), f(0.0 if node.v_reset is None else node.v_reset)
        self.r = f(node.r)
        if isinstance(node, nir.LIF):
            self.k_mem, self.v_leak = f(dt / np.asarray(node.tau, np.float64)), f(node.v_leak)
        if isinstance(node, nir.CubaLIF):
            self.k_mem, self.v_leak = f(dt / np.asarray(node.tau_mem, np.float64)), f(node.v_leak)
            self.k_syn, self.w_in = f(dt / np.asarray(node.tau_syn, np.float64)), f(node.w_in)

    def forward(self, x, state=None):
        v, i = (torch.zeros_like(x), torch.zeros_like(x)) if state is None else state
        if self.kind == "IF":
            h = v + self.r * x
        else:
            if self.kind == "CubaLIF":
                i = i + self.k_syn * (self.w_in * x - i)
                x = i
            h = v + self.k_mem * (self.v_leak - v + self.r * x)
        s = (h > self.thr).float()
        return s, (torch.where(s > 0, self.v_reset, h), i)


def run_nirtorch(graph: nir.NIRGraph, x: np.ndarray, dt: float, node_map: dict | None = None) -> np.ndarray:
    """``nirtorch.nir_to_torch(graph, node_map)``: nirtorch's default maps for the connection nodes, the
    user's :class:`EulerNeuron` for the neurons (nirtorch has none), plus ``node_map``."""
    import nirtorch

    neurons = {cls: (lambda n: EulerNeuron(n, dt)) for cls in (nir.LIF, nir.IF, nir.CubaLIF)}
    with quiet():
        module = nirtorch.nir_to_torch(graph, {**neurons, **(node_map or {})})
        outs, state = [], None
        with torch.no_grad():
            for xt in _tensor_steps(x):
                out, state = module(xt, state)
                outs.append(out)
    return torch.stack(outs, 1).float().numpy()


def affine_with_bias(node: nir.Affine) -> torch.nn.Linear:
    """The Affine mapping nirtorch 2.6 gets wrong (its default writes the bias to ``weight.bias``)."""
    m = torch.nn.Linear(node.weight.shape[1], node.weight.shape[0], bias=True)
    with torch.no_grad():
        m.weight.copy_(torch.as_tensor(np.asarray(node.weight, np.float32)))
        m.bias.copy_(torch.as_tensor(np.asarray(node.bias, np.float32)))
    return m


def batch_agnostic_flatten(node: nir.Flatten) -> torch.nn.Flatten:
    """The Flatten mapping nirtorch 2.6 gets wrong for NIR's batch-free ``start_dim`` (its default builds
    ``torch.nn.Flatten(start_dim)``, which then counts the batch axis)."""
    shape = node.input_type.get("input") if node.input_type else None
    n = len(shape) if shape is not None else 3
    start = int(node.start_dim) - n if int(node.start_dim) >= 0 else int(node.start_dim)
    end = int(node.end_dim) - n if int(node.end_dim) >= 0 else int(node.end_dim)
    return torch.nn.Flatten(start, end)

"""The non-spiking ANN twin of a model, exported to ONNX.

The twin is the same feed-forward chain with the same weights, one step (``T = 1``), the encoder left out (its
input is the raw sample ``x [B, ...]`` in [0, 1], the expected input per step of the ``direct`` and ``poisson``
codes), and every spiking layer replaced by its rate function

    rate(I) = clamp((g I + (1 - beta) v_leak) / threshold, 0, 1)

the spike rate (spikes per step) of an integrate-and-fire neuron with reset by subtraction under a constant
drive, capped at one spike per step: a ReLU with a slope and a ceiling. For a leaky neuron it is the leak-free
upper bound. The twin's output is ``logit_scale x rate`` of the output layer, so its argmax is comparable to the
spiking model's spike-count argmax.

The twin is *not defined* (:class:`TwinUndefined`) for graphs with cycles or branches, for CubaLIF neurons and
for the ``latency`` code (a time-to-first-spike input has no rate to carry over). Exported with
``torch.onnx.export``, checked with ``onnx.checker`` and evaluated with ONNX's reference evaluator against the
torch twin.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from snnkit.export.executor import _decay, _f64
from snnkit.export.graph import flatten_graph, plan
from snnkit.export.nirfile import graph_dt, graph_metadata


class TwinUndefined(ValueError):
    """The model has no non-spiking twin; the message says why."""


class RateFunction(nn.Module):
    """``clamp((g x + leak) / threshold, 0, 1)`` elementwise (per-neuron parameters)."""

    def __init__(self, gain: np.ndarray, leak: np.ndarray, threshold: np.ndarray):
        super().__init__()
        for name, value in (("gain", gain), ("leak", leak), ("threshold", threshold)):
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp((x * self.gain + self.leak) / self.threshold, 0.0, 1.0)


class SumPool(nn.AvgPool2d):
    """Sum pooling on ``[B, C, H, W]`` (``kH*kW`` x the average, zero padding counted)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return super().forward(x) * (k[0] * k[1])


class Scaled(nn.Module):
    def __init__(self, body: nn.Module, scale: float):
        super().__init__()
        self.body, self.scale = body, float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.scale


def _pair(v) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])


def _module(name: str, node: nir.NIRNode, dt: float) -> nn.Module | None:
    if isinstance(node, (nir.Input, nir.Output)):
        return None
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight)
        bias = getattr(node, "bias", None)
        m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            if bias is not None:
                m.bias.copy_(torch.as_tensor(np.asarray(bias), dtype=torch.float32))
        return m
    if isinstance(node, nir.Conv2d):
        w = np.asarray(node.weight)
        groups = int(np.asarray(node.groups).item())
        padding = node.padding if isinstance(node.padding, str) else _pair(node.padding)
        m = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[2:], stride=_pair(node.stride), padding=padding,
                      dilation=_pair(node.dilation), groups=groups, bias=True)
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            m.bias.copy_(torch.as_tensor(np.asarray(node.bias), dtype=torch.float32))
        return m
    if isinstance(node, nir.AvgPool2d):
        return nn.AvgPool2d(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding))
    if isinstance(node, nir.SumPool2d):
        return SumPool(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding))
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    if isinstance(node, nir.LIF):
        beta = _decay(name, "beta", dt, node.tau)
        return RateFunction((1 - beta) * _f64(node.r), (1 - beta) * _f64(node.v_leak), _f64(node.v_threshold))
    if isinstance(node, nir.IF):
        return RateFunction(_f64(node.r), np.zeros(1), _f64(node.v_threshold))
    raise TwinUndefined(f"node {name!r}: no rate function for {type(node).__name__} neurons, so the model has no "
                        "non-spiking twin")


def ann_twin(graph: nir.NIRGraph, dt: float | None = None) -> nn.Module:
    """The twin of a feed-forward chain graph: ``x [B, *input_shape]`` -> logits ``[B, C]``."""
    graph = flatten_graph(graph)
    meta = graph_metadata(graph)
    encoder = (meta.get("encoder") or {"name": "direct"})
    if isinstance(encoder, dict) and encoder.get("name") == "latency":
        raise TwinUndefined("the model uses the latency (time-to-first-spike) code, whose input has no rate: "
                            "no non-spiking twin is defined")
    p = plan(graph)
    if p.has_cycles:
        raise TwinUndefined("the graph is recurrent (it has cycles): no feed-forward non-spiking twin is defined")
    if any(len(srcs) > 1 for srcs in p.inputs.values()) or len(graph.edges) != len(p.order) - 1:
        raise TwinUndefined("the graph branches or merges: the twin is defined for layer chains only")
    dt = graph_dt(graph, dt)
    modules = [m for n in p.order if (m := _module(n, graph.nodes[n], dt)) is not None]
    return Scaled(nn.Sequential(*modules), float(meta.get("logit_scale", 1.0))).eval()


def export_onnx(graph: nir.NIRGraph, path: "str | Path", *, probe: np.ndarray | None = None,
                opset: int = 18) -> dict:
    """Write the twin of ``graph`` to ``path`` as ONNX; returns what was checked.

    probe: inputs ``[B, *input_shape]`` to compare ONNX (reference evaluator) with the torch twin; default 8
    uniform random samples. Raises :class:`TwinUndefined` where the twin is not defined.
    """
    import onnx
    from onnx.reference import ReferenceEvaluator

    from snnkit.models.io import atomic_write

    twin = ann_twin(graph)
    shape = tuple(int(s) for s in np.asarray(graph.nodes[plan(flatten_graph(graph)).input_name]
                                            .input_type["input"]).tolist())
    if probe is None:
        probe = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    example = torch.as_tensor(probe[:2], dtype=torch.float32)

    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the exporter logs every optional op library it cannot find
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(twin, (example,), input_names=["x"], output_names=["logits"],
                                        opset_version=opset, dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        dynamo=True, verbose=False)
    finally:
        logger.setLevel(level)
    model = program.model_proto
    path = Path(path)
    atomic_write(path, lambda tmp: onnx.save(model, tmp))
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    with torch.no_grad():
        ref = twin(torch.as_tensor(probe, dtype=torch.float32)).numpy()
    got = ReferenceEvaluator(model).run(None, {"x": np.asarray(probe, dtype=np.float32)})[0]
    return {
        "file": str(path),
        "opset": opset,
        "checker": "passed",
        "input": {"name": "x", "shape": ["batch", *shape], "meaning": "one sample in [0, 1], no encoder"},
        "output": {"name": "logits", "shape": ["batch", int(ref.shape[1])]},
        "activation": "rate(I) = clamp((g I + (1-beta) v_leak) / threshold, 0, 1) per spiking layer",
        "probe_samples": int(len(probe)),
        "max_abs_diff_onnx_vs_torch": float(np.max(np.abs(got - ref))),
    }

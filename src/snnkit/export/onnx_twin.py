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

from snnkit.graph import flatten_graph, graph_metadata, plan
from snnkit.models.spiking import RateTwin, TwinUndefined, check_twin_encoder, rate_twin

__all__ = ["TwinUndefined", "ann_twin", "export_onnx"]


def ann_twin(graph: nir.NIRGraph, dt: float | None = None) -> RateTwin:
    """The twin of a feed-forward chain graph: ``x [B, *input_shape]`` -> logits ``[B, C]``.

    The graph's layers are built by the reference executor (``from_nir``) and turned into the twin by
    :func:`snnkit.models.spiking.rate_twin`, the same code as ``SpikingModel.twin()``.
    """
    from snnkit.export.executor import NIRNetwork

    graph = flatten_graph(graph)
    meta = graph_metadata(graph)
    encoder = meta.get("encoder") or {"name": "direct"}
    check_twin_encoder(encoder)
    if (encoder.get("name") if isinstance(encoder, dict) else encoder) == "frames":
        raise TwinUndefined("the model takes event frames [B, T, ...] with their own time axis: no one-step "
                            "non-spiking twin is defined")
    p = plan(graph)
    if p.has_cycles:
        raise TwinUndefined("the graph is recurrent (it has cycles): no feed-forward non-spiking twin is defined")
    if any(len(srcs) > 1 for srcs in p.inputs.values()) or len(graph.edges) != len(p.order) - 1:
        raise TwinUndefined("the graph branches or merges: the twin is defined for layer chains only")
    net = NIRNetwork(graph, dt=dt)
    return rate_twin(net.modules_by_name().items(), float(meta.get("logit_scale", 1.0))).eval()


def export_onnx(graph: nir.NIRGraph, path: "str | Path", *, probe: np.ndarray | None = None,
                opset: int = 18) -> dict:
    """Write the twin of ``graph`` to ``path`` as ONNX; returns what was checked.

    probe: inputs ``[B, *input_shape]`` to compare ONNX (reference evaluator) with the torch twin; default 8
    uniform random samples. Raises :class:`TwinUndefined` where the twin is not defined.
    """
    import onnx
    from onnx.reference import ReferenceEvaluator

    from snnkit.atomic import atomic_write

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

"""The GPU baseline of a report: each model's non-spiking twin costed on a GPU-class processor, and, where a CUDA
device is present, energy per inference measured from the board's power sensor.

- **Estimated**: the twin (:func:`snnkit.export.onnx_twin.ann_twin`, the network ``snn-export --target onnx``
  writes) runs once per sample; its work is the dense multiply-accumulates of every weighted layer
  (:func:`snnkit.energy.counting.dense_layer_macs`: a GEMM computes zero weights too), costed by every energy
  model whose ``workload`` is ``ann-twin`` (``figures.json``: NVIDIA H100 figures derived from its datasheet,
  with the derivation). Its accuracy is measured on the samples before encoding, its weights stored as dense
  float32 (:func:`snnkit.deploy.base.dense_float32_footprint`).
- **Measured**: :func:`measure_energy` reads the board's total-energy counter through NVML (``nvidia-ml-py``)
  around repeated inferences on the CUDA device and divides by the samples run; without a CUDA device or
  without ``nvidia-ml-py`` it returns ``status: "not measured"`` with the reason, never a number.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from snnkit.deploy.base import TargetResult, dense_float32_footprint
from snnkit.energy import EnergyModel, energy_of
from snnkit.energy.counting import LayerStats, dense_layer_macs
from snnkit.graph import flatten_graph, weighted_input_shapes
from snnkit.graph.kinds import WEIGHTED

TWIN = "gpu-twin"
"""The label of the twin's rows and curves in a report."""

MIN_MEASURE_S = 2.0
"""Seconds of repeated inference a measurement covers at least (NVML's energy counter moves in steps of
milliseconds to tens of milliseconds)."""

IDLE_S = 1.0
"""Seconds the idle board is measured before the inferences (the measured power above idle is reported too)."""


def twin_layers(graph) -> tuple[list[LayerStats], int]:
    """The twin's multiply-accumulates per sample by weighted layer (dense: every weight), and the number of
    those whose weight is non-zero (what a sparsity-aware processor would compute)."""
    flat = flatten_graph(graph)
    shapes = weighted_input_shapes(flat)
    layers = dense_layer_macs(flat, shapes)
    nonzero = 0
    for layer in layers:
        node = flat.nodes[layer.name]
        w = np.asarray(node.weight)
        nonzero += int(round(layer.macs * np.count_nonzero(w) / w.size)) if isinstance(node, WEIGHTED) and w.size else 0
    return layers, nonzero


def twin_energy(graph, n_samples: int, logits: np.ndarray | None, models: list[EnergyModel]) -> dict:
    """Energy of ``n_samples`` inferences of the twin under every ``ann-twin`` model (see the module docstring)."""
    layers, _ = twin_layers(graph)
    n = max(int(n_samples), 1)
    outputs = np.zeros((n, 1, 1), np.float32) if logits is None else np.asarray(logits)[:, None, :]
    result = TargetResult(target=TWIN, outputs=outputs,
                          layers=[LayerStats(name=x.name, kind=x.kind, macs=x.macs * n) for x in layers], wall_s=0.0)
    out = {}
    for m in models:
        if m.workload != "ann-twin":
            continue
        if not m.available:
            out[m.name] = {"available": False, "reason": m.reason}
            continue
        e = energy_of(result, m)
        out[m.name] = {"available": True, "per_sample_j": e.per_sample_j, "per_sample_j_min": e.per_sample_j_min,
                       "total_j": e.total_j, "total_j_min": e.total_j_min, "notes": e.notes,
                       "not_costed": e.not_costed,
                       "terms": {k: {"count": v.count, "pj": v.pj, "joules": v.joules} for k, v in e.terms.items()}}
    return out


def gpu_baseline(graph, raw: np.ndarray | None, labels: np.ndarray | None, models: list[EnergyModel], *,
                 n_samples: int, measure: bool = True, reference_forward: Callable | None = None,
                 encoded: np.ndarray | None = None) -> dict:
    """The GPU column of one model: its twin (accuracy, MACs, energy per ``ann-twin`` model, footprint) and the
    NVML measurements (the twin's and, with ``reference_forward``/``encoded``, the spiking reference's).

    raw: the samples before encoding ``[N, *input_shape]`` (None: the twin's accuracy is not measured);
    n_samples: inferences the energy is given for (per sample figures do not depend on it).
    reference_forward: ``encoded [B, T, ...] torch tensor -> outputs`` of the reference on the CUDA device (the
    reference target's exact differentiable view), measured with :func:`measure_energy`.
    """
    from snnkit.export.onnx_twin import TwinUndefined, ann_twin

    out: dict = {"label": TWIN}
    try:
        twin = ann_twin(graph)
    except TwinUndefined as exc:
        out.update(defined=False, reason=str(exc).splitlines()[0])
        out["measured"] = {"twin": _not_measured("the twin is not defined for this model"),
                           "reference": _measure_reference(reference_forward, encoded, measure)}
        return out
    layers, nonzero = twin_layers(graph)
    logits = None
    accuracy = None
    if raw is not None:
        import torch

        with torch.no_grad():
            logits = twin(torch.as_tensor(np.asarray(raw), dtype=torch.float32)).numpy()
        if labels is not None:
            accuracy = float(np.mean(logits.argmax(axis=1) == np.asarray(labels)))
    macs = sum(x.macs for x in layers)
    out.update(defined=True, accuracy=accuracy, n_samples=None if raw is None else int(len(raw)),
               macs_per_sample=int(macs), nonzero_weight_macs_per_sample=int(nonzero),
               layers=[{"name": x.name, "kind": x.kind, "macs": x.macs} for x in layers],
               energy=twin_energy(graph, n_samples, logits, models),
               footprint=dense_float32_footprint(graph).summary(),
               what="the non-spiking twin (snn-export --target onnx): one step, each spiking layer replaced by its "
                    "rate function, the same weights; evaluated on the samples before encoding")
    if raw is None:
        out["accuracy_note"] = "no raw samples (encoded input given): the twin's accuracy is not measured"
    out["measured"] = {"twin": _measure_twin(twin, raw, measure),
                       "reference": _measure_reference(reference_forward, encoded, measure)}
    return out


# ------------------------------------------------------------------------------------------------ NVML


def _not_measured(reason: str) -> dict:
    return {"status": "not measured", "reason": reason}


def cuda_unavailable_reason() -> str | None:
    """Why energy cannot be measured here (None: a CUDA device and NVML are present)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import pynvml  # noqa: F401  (the nvidia-ml-py distribution)
    except ImportError:
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    return None


def _cannot_measure(measure: bool) -> str | None:
    """Why no measurement is taken (switched off, no CUDA device, no NVML), or None."""
    return "measurement switched off" if not measure else cuda_unavailable_reason()


def _measure_twin(twin, raw, measure: bool) -> dict:
    reason = _cannot_measure(measure)
    if reason:
        return _not_measured(reason)
    if raw is None:
        return _not_measured("no raw samples to run the twin on")
    import torch

    device = torch.device("cuda")
    model = twin.to(device)
    x = torch.as_tensor(np.asarray(raw), dtype=torch.float32, device=device)
    return measure_energy(lambda: model(x), int(x.shape[0]), device=device,
                          what="the non-spiking twin (torch, fp32) on the CUDA device")


def _measure_reference(forward, encoded, measure: bool) -> dict:
    reason = _cannot_measure(measure)
    if reason:
        return _not_measured(reason)
    if forward is None or encoded is None:
        return _not_measured("the reference offers no view to run on the CUDA device")
    import torch

    device = torch.device("cuda")
    x = torch.as_tensor(np.asarray(encoded), dtype=torch.float32, device=device)
    return measure_energy(lambda: forward(x), int(x.shape[0]), device=device,
                          what="the spiking reference (snnkit's torch executor of the NIR graph) on the CUDA device")


def _nvml_handle(nvml, device) -> object:
    """The NVML handle of the torch CUDA ``device`` (by PCI bus id when torch gives it, else by index)."""
    import torch

    index = device.index if getattr(device, "index", None) is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        pci = f"{getattr(props, 'pci_domain_id', 0):08x}:{bus:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
        try:
            return nvml.nvmlDeviceGetHandleByPciBusId(pci)
        except Exception:  # older drivers want the short form; fall back to the index below
            pass
    return nvml.nvmlDeviceGetHandleByIndex(index)


def measure_energy(run: Callable[[], object], n_samples: int, *, device=None, what: str = "",
                   min_seconds: float = MIN_MEASURE_S, idle_seconds: float = IDLE_S, nvml=None,
                   synchronize: Callable[[], None] | None = None) -> dict:
    """Energy per inference of ``run`` (one call = ``n_samples`` inferences) from NVML's total-energy counter.

    The idle board is read over ``idle_seconds``; then ``run`` is called once (warm-up) and repeatedly until
    ``min_seconds`` have passed, each call followed by ``synchronize`` (default: ``torch.cuda.synchronize``).
    Reports the board energy per inference, the part above idle power, the calls and the method. ``nvml``: the
    ``pynvml`` module (default: imported). Returns ``status: "not measured"`` with the NVML error instead of
    raising."""
    if nvml is None:
        import pynvml as nvml
    if synchronize is None:
        import torch

        def synchronize():
            torch.cuda.synchronize(device)

    try:
        nvml.nvmlInit()
    except Exception as exc:
        return _not_measured(f"NVML could not start ({type(exc).__name__}: {str(exc).strip()})")
    try:
        handle = _nvml_handle(nvml, device) if device is not None else nvml.nvmlDeviceGetHandleByIndex(0)
        name = nvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)

        def joules() -> float:
            return nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0  # mJ since the driver loaded

        e0, t0 = joules(), time.perf_counter()
        time.sleep(idle_seconds)
        idle_w = (joules() - e0) / (time.perf_counter() - t0)
        run()
        synchronize()
        calls = 0
        e0, t0 = joules(), time.perf_counter()
        while True:
            run()
            synchronize()
            calls += 1
            if time.perf_counter() - t0 >= min_seconds:
                break
        seconds = time.perf_counter() - t0
        energy = joules() - e0
    except Exception as exc:  # NVMLError_NotSupported (pre-Volta boards), permissions, ...
        return _not_measured(f"NVML: {type(exc).__name__}: {str(exc).strip()}")
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
    inferences = calls * int(n_samples)
    per = energy / inferences if inferences else float("nan")
    above = max(energy - idle_w * seconds, 0.0) / inferences if inferences else float("nan")
    return {"status": "measured", "device": name, "per_sample_j": per, "per_sample_above_idle_j": above,
            "idle_w": idle_w, "mean_w": energy / seconds if seconds else None, "seconds": seconds, "calls": calls,
            "batch": int(n_samples), "what": what,
            "method": (f"NVML total-energy counter of the board (nvmlDeviceGetTotalEnergyConsumption) read before and "
                       f"after {calls} calls of {n_samples} inferences each over {seconds:.2f} s, after one warm-up "
                       f"call, the device synchronised after every call; divided by the inferences. The whole "
                       f"board is measured (idle power {idle_w:.1f} W over {idle_seconds:g} s before; the part "
                       "above idle is given too); host CPU and transfers before the first call are not included.")}


__all__ = ["IDLE_S", "MIN_MEASURE_S", "TWIN", "cuda_unavailable_reason", "gpu_baseline", "measure_energy",
           "twin_energy", "twin_layers"]

"""Quantise a graph for a run on given inputs (shared by the lava and loihi-emu targets; numpy only).

Both targets call :func:`prepare_graph` with the same graph, inputs and options, so they run the same
integers. The input coding is taken, in this order, from the explicit options, the graph's ``encoder``
metadata, or the data: all values in {0, 1} -> spikes; non-negative integers -> event counts; anything
else -> analog, with a range rounded up to a power of two (so that batches of similar data share it).
"""
from __future__ import annotations

import abc
import math
import time

import nir
import numpy as np

from pathlib import Path

from snnkit.deploy.base import DeployError, Differentiable, Exported, Footprint, Target, TargetResult
from snnkit.deploy.cache import BuildCache
from snnkit.deploy.loihi.graph import LoihiGraph
from snnkit.deploy.loihi.quantize import SPIKE_ENCODERS, QuantizeError, quantize
from snnkit.deploy.loihi.results import build_result
from snnkit.graph import flatten_graph
from snnkit.graph.conventions import Resolved, resolve


def infer_input(x: np.ndarray, metadata: dict | None = None) -> tuple[str, float]:
    """(input_mode, input_range) for inputs ``x [B, T, ...]``."""
    x = np.asarray(x, dtype=np.float64)
    enc = (metadata or {}).get("encoder") or {}
    enc_name = enc.get("name") if isinstance(enc, dict) else str(enc)
    peak = float(np.abs(x).max(initial=0.0))
    if enc_name in SPIKE_ENCODERS or (not enc_name and np.all((x == 0) | (x == 1))):
        return "spikes", 1.0
    if enc_name == "direct":
        return "analog", max(1.0, _pow2_ceil(peak))
    if np.all(x >= 0) and np.all(np.mod(x, 1) == 0):
        return "counts", max(1.0, peak)
    return "analog", _pow2_ceil(peak) if peak > 0 else 1.0


def _pow2_ceil(v: float) -> float:
    return 2.0 ** math.ceil(math.log2(v)) if v > 0 else 1.0


def quant_options(**options) -> dict:
    """The quantisation options that were set (None means: quantize's default)."""
    return {k: v for k, v in options.items() if v is not None}


def prepare_graph(graph: nir.NIRGraph | LoihiGraph, x: np.ndarray, *, input_mode: str | None = None,
                  input_range: float | None = None, source: str = "graph", **options) -> LoihiGraph:
    """The :class:`LoihiGraph` a target runs for ``graph`` on inputs ``x`` (one-line DeployError if not)."""
    if isinstance(graph, LoihiGraph):
        return graph
    x = np.asarray(x)
    if x.ndim < 3:
        raise DeployError(f"{source}: input must be [B, T, ...], got shape {tuple(x.shape)}")
    mode, rng = infer_input(x, getattr(graph, "metadata", None))
    if input_mode not in (None, "auto"):
        mode = input_mode
    if input_range is not None:
        rng = float(input_range)
    try:
        return quantize(graph, input_mode=mode, input_range=rng, source=source, **options)
    except (QuantizeError, ValueError) as e:
        raise DeployError(str(e)) from None


def lossy_effect(graph: nir.NIRGraph, lg: LoihiGraph, x: np.ndarray) -> dict:
    """How far the Loihi mapping ``lg`` of ``graph`` departs from the float reference on inputs ``x``: the
    fraction of differing output spike values (a readout: the relative RMS difference of its potentials) and of
    differing predictions (reference time axis)."""
    from snnkit.deploy.base import REFERENCE, get_target
    from snnkit.deploy.loihi.emulator import LoihiEmulatorTarget

    ref = get_target(REFERENCE, device="cpu").run(graph, x)
    emu = LoihiEmulatorTarget(device="cpu").run_quantised(lg, graph, x)
    steps = x.shape[1]
    a, b = ref.aligned_outputs(steps), emu.aligned_outputs(steps)
    out = {"samples": int(x.shape[0]),
           "differing_predictions": float(np.mean(ref.predictions(steps) != emu.predictions(steps)))}
    if lg.layer(lg.output).readout:
        out["output_rel_rmse"] = float(np.sqrt(np.mean((a - b) ** 2) / max(np.mean(a.astype(np.float64) ** 2), 1e-30)))
    else:
        out["differing_output_spikes"] = float(np.mean(a != b))
    return out


def _index_bytes(n: int) -> int:
    """Bytes of the narrowest whole-byte unsigned integer holding ``0 .. n - 1``."""
    return max(1, math.ceil(math.log2(max(n, 2)) / 8))


def loihi_footprint(lg: LoihiGraph) -> Footprint:
    """What a Loihi 2 target stores for ``lg``'s connections.

    Weights: one byte per stored 8-bit mantissa: every weight of a ``Dense`` projection (zeros included), only
    the non-zero ones of a ``Sparse`` projection, the kernel of a ``Conv`` (shared over positions). Exponents:
    one byte per projection (its ``weight_exp``). Indices of ``Sparse`` projections: a CSR layout (a column
    index per stored synapse, a row pointer per destination neuron plus one, each the narrowest whole byte);
    Loihi 2's own synaptic memory encoding is not public, so this index cost is our assumption. Biases: 13-bit
    mantissa plus 3-bit exponent, two bytes per neuron. ``dense_bytes``: every projection stored as Dense or
    Conv (no indices)."""
    weights = indices = dense_weights = stored = total = 0
    for p in lg.projections:
        w = np.asarray(p.weight)
        total += int(w.size)
        dense_weights += int(w.size)
        if p.kind == "sparse":
            nnz = int(np.count_nonzero(w))
            n_dst, n_src = (w.shape[0], int(np.prod(w.shape[1:]))) if w.ndim > 1 else (w.size, 1)
            stored += nnz
            weights += nnz
            indices += nnz * _index_bytes(n_src) + (n_dst + 1) * _index_bytes(nnz + 1)
        else:
            stored += int(w.size)
            weights += int(w.size)
    exponents = len(lg.projections)
    biases = 2 * sum(layer.size for layer in lg.layers)
    parts = {"weights": weights, "indices": indices, "exponents": exponents, "biases": biases}
    kinds = sorted({p.kind for p in lg.projections})
    return Footprint(parts=parts, dense_bytes=dense_weights + exponents + biases, weights_stored=stored,
                     weights_total=total,
                     layout=f"Loihi 2 fixed point ({', '.join(kinds)} projections): 8-bit weight mantissas (Sparse: "
                            "non-zero synapses only, CSR indices assumed), one exponent byte per projection, "
                            "13+3-bit biases")


class QuantisedTarget(Target):
    """What the Loihi targets (``lava``, ``loihi-emu``) share; each specialises only :meth:`execute`.

    Quantise the float graph (cached per graph object, ``snnkit.deploy.cache``), encode the input to the
    graph's integer input, execute, and count from the returned spike rasters (``loihi.results.build_result``).
    The options are ``reset`` and ``if_convention`` (what NIR leaves open, ``snnkit.graph.conventions``) and the
    quantisation options of :func:`snnkit.deploy.loihi.quantize` (None: its default).

    Where the mapping cannot be exact (the quantisation report's ``lossy`` entries), the first quantisation of a
    graph also measures what it costs: the float reference and the bit-exact emulator run on up to
    :data:`LOSSY_PROBE` of the inputs, and every result says in ``info["warnings"]`` by how much they differ.
    """

    LOSSY_PROBE = 64

    def __init__(self, *, input_mode: str | None = None, input_range: float | None = None,
                 input_bits: int | None = None, dt: float | None = None, headroom_bits: int | None = None,
                 sparse_below: float | None = None, reset: str | None = None, if_convention: str = "auto"):
        self.quant_options = quant_options(input_mode=input_mode, input_range=input_range, input_bits=input_bits,
                                           dt=dt, headroom_bits=headroom_bits, sparse_below=sparse_below)
        self.reset = reset
        self.if_convention = if_convention
        self._graphs = BuildCache()

    def resolved(self, graph: nir.NIRGraph) -> Resolved:
        """``graph`` (flattened) with what NIR leaves open answered by this target's options."""
        return resolve(flatten_graph(graph), dt=self.quant_options.get("dt"), reset=self.reset,
                       if_convention=self.if_convention)

    def quantised(self, graph: nir.NIRGraph, x: np.ndarray) -> LoihiGraph:
        """The :class:`LoihiGraph` this target runs for ``graph`` on inputs ``x [B, T, ...]``, cached per graph
        object and per input coding inferred from ``x`` (the only thing of ``x`` the quantisation depends on)."""
        key = infer_input(x, getattr(graph, "metadata", None)) if np.ndim(x) >= 3 else None
        return self._graphs.get(graph, key, lambda: self._quantise(graph, x))

    def _quantise(self, graph: nir.NIRGraph, x: np.ndarray) -> LoihiGraph:
        r = self.resolved(graph)
        lg = prepare_graph(r.graph, x, **self.quant_options)
        lg.report["conventions"] = r.notes
        if lg.report.get("lossy") and np.ndim(x) >= 3:
            lg.report["lossy_effect"] = lossy_effect(r.graph, lg, np.asarray(x)[:self.LOSSY_PROBE])
        return lg

    def differentiable(self, graph: nir.NIRGraph, probe: np.ndarray, *, device: str = "cpu") -> Differentiable:
        """The emulator's differentiable mode on this target's quantised graph: bit-identical forward values,
        straight-through gradients (a model of the target: adaptive attacks only)."""
        from snnkit.deploy.loihi.emulator import LoihiModule

        if probe is None:
            raise DeployError(f"{self.name}: a differentiable view needs probe inputs (its input coding is inferred "
                              "from them)")
        lg = self.quantised(graph, probe)
        module = LoihiModule(lg, device=device)
        return Differentiable(forward=module, delay=lg.delay, exact=False, via="loihi-emu differentiable mode")

    def footprint(self, graph: nir.NIRGraph, probe: np.ndarray | None = None) -> Footprint:
        """The quantised graph's storage (:func:`loihi_footprint`): what this target keeps for ``graph`` run on
        inputs like ``probe`` (None: the default input coding)."""
        if probe is not None and np.ndim(probe) >= 3:
            return loihi_footprint(self.quantised(graph, probe))
        try:
            lg = quantize(self.resolved(graph).graph, **self.quant_options)
        except (QuantizeError, ValueError) as e:
            raise DeployError(str(e)) from None
        return loihi_footprint(lg)

    def export(self, graph: nir.NIRGraph, out_dir: Path, *, source: str = "graph") -> Exported:
        """``OUT/loihi/``: the graph quantised to Loihi 2 fixed point (with its ``export_report.json``), and
        lava-dl's netx HDF5 where the graph fits that format (:func:`snnkit.deploy.loihi.netx.export_netx`)."""
        from snnkit.deploy.loihi.netx import export_netx

        resolved = self.resolved(graph).graph
        try:
            loihi = quantize(resolved, source=source, **self.quant_options)
        except (QuantizeError, ValueError) as e:
            raise DeployError(str(e)) from None
        folder = Path(out_dir) / "loihi"
        out = Exported(files={"lava": str(loihi.save(folder))},
                       warnings=[f"lava: {lossy}" for lossy in loihi.report.get("lossy", [])],
                       details={"quantisation_report": str(folder / "export_report.json"),
                                "delay_steps": int(loihi.delay)})
        netx_path, netx_notes = export_netx(resolved, loihi, folder / "model_netx.h5", source=source,
                                            **self.quant_options)
        out.notes += [f"netx: {n}" for n in netx_notes]
        if netx_path is not None:
            out.files["netx"] = str(netx_path)
        else:
            out.details["netx_not_written"] = netx_notes[0].removeprefix("not written: ")
        return out

    def verify_export(self, graph: nir.NIRGraph, exported: Exported, x: np.ndarray, labels: np.ndarray | None = None,
                      *, check: dict | None = None, source: str = "graph") -> Exported:
        """The netx check (:func:`snnkit.deploy.loihi.netx_check.verify_netx`): the exported netx file loaded by
        lava-dl's netx on Lava (when the Lava environment has lava-dl) and ``loihi-emu`` on the same parameters,
        compared bit for bit; its accuracy on the probe beside the lava target's and the reference's, and what
        each difference from the lava target's integers costs. Details go under ``"netx"``."""
        from snnkit.deploy.loihi.netx_check import verify_netx

        lava_lg = LoihiGraph.load(exported.files["lava"])
        details, notes, warnings = verify_netx(
            self.resolved(graph).graph, self.quant_options, lava_lg, exported.files.get("netx"), x, labels,
            reason=exported.details.get("netx_not_written"), source=source,
            reference_accuracy=(check or {}).get("reference_accuracy"), python=self._lava_python())
        return Exported(details={"netx": details}, notes=notes, warnings=warnings)

    def _lava_python(self):
        """The Lava interpreter for the netx check (None: the one the lava target finds)."""
        return None

    def run(self, graph: nir.NIRGraph, x: np.ndarray, *, record: bool = False, counts: bool = True) -> TargetResult:
        t0 = time.perf_counter()
        lg = self.quantised(graph, x)
        return self.run_quantised(lg, graph, x, record=record, counts=counts, build_s=time.perf_counter() - t0)

    def run_quantised(self, lg: LoihiGraph, graph: nir.NIRGraph, x: np.ndarray, *, record: bool = False,
                      counts: bool = True, build_s: float = 0.0) -> TargetResult:
        """Run an already quantised graph (``graph`` is its float source, used for counting)."""
        x = np.asarray(x)
        try:
            xi, clip_info = lg.input.encode(x)
        except ValueError as e:
            raise DeployError(f"{self.name}: {e}") from None
        rasters, wall_s, overhead_s, info = self.execute(lg, x, xi)
        return build_result(self.name, graph, lg, rasters, x, wall_s=wall_s, build_s=build_s + overhead_s,
                            record=record, counts=counts, info={**info, **clip_info})

    @abc.abstractmethod
    def execute(self, lg: LoihiGraph, x: np.ndarray, xi: np.ndarray):
        """Run ``lg`` on the float input ``x`` / its integer encoding ``xi`` (both ``[B, T, ...]``).

        Returns ``(rasters, wall_s, overhead_s, info)``: every layer's spikes ``[B, T', ...]`` by name, the
        seconds of the run proper, seconds of set-up to add to the build time, and target-specific details.
        """

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

from snnkit.deploy.base import DeployError, Target, TargetResult
from snnkit.deploy.cache import BuildCache, quantised_graph
from snnkit.deploy.loihi.quantize import SPIKE_ENCODERS, QuantizeError, quantize
from snnkit.deploy.loihi.graph import LoihiGraph
from snnkit.deploy.loihi.results import build_result


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


class QuantisedTarget(Target):
    """What the Loihi targets (``lava``, ``loihi-emu``) share; each specialises only :meth:`execute`.

    Quantise the float graph (cached per graph object, ``snnkit.deploy.cache``), encode the input to the
    graph's integer input, execute, and count from the returned spike rasters (``loihi.results.build_result``).
    The options are the quantisation options of :func:`snnkit.deploy.loihi.quantize` (None: its default).
    """

    def __init__(self, *, input_mode: str | None = None, input_range: float | None = None,
                 input_bits: int | None = None, dt: float | None = None, headroom_bits: int | None = None,
                 sparse_below: float | None = None):
        self.quant_options = quant_options(input_mode=input_mode, input_range=input_range, input_bits=input_bits,
                                           dt=dt, headroom_bits=headroom_bits, sparse_below=sparse_below)
        self._graphs = BuildCache()

    def quantised(self, graph: nir.NIRGraph, x: np.ndarray) -> LoihiGraph:
        """The :class:`LoihiGraph` this target runs for ``graph`` on inputs ``x [B, T, ...]`` (cached)."""
        return quantised_graph(self._graphs, graph, x, self.quant_options)

    def run(self, graph: nir.NIRGraph, x: np.ndarray, *, record: bool = False) -> TargetResult:
        t0 = time.perf_counter()
        lg = self.quantised(graph, x)
        return self.run_quantised(lg, graph, x, record=record, build_s=time.perf_counter() - t0)

    def run_quantised(self, lg: LoihiGraph, graph: nir.NIRGraph, x: np.ndarray, *, record: bool = False,
                      build_s: float = 0.0) -> TargetResult:
        """Run an already quantised graph (``graph`` is its float source, used for counting)."""
        x = np.asarray(x)
        try:
            xi, clip_info = lg.input.encode(x)
        except ValueError as e:
            raise DeployError(f"{self.name}: {e}") from None
        rasters, wall_s, overhead_s, info = self.execute(lg, x, xi)
        return build_result(self.name, graph, lg, rasters, x, wall_s=wall_s, build_s=build_s + overhead_s,
                            record=record, info={**info, **clip_info})

    @abc.abstractmethod
    def execute(self, lg: LoihiGraph, x: np.ndarray, xi: np.ndarray):
        """Run ``lg`` on the float input ``x`` / its integer encoding ``xi`` (both ``[B, T, ...]``).

        Returns ``(rasters, wall_s, overhead_s, info)``: every layer's spikes ``[B, T', ...]`` by name, the
        seconds of the run proper, seconds of set-up to add to the build time, and target-specific details.
        """

"""Turn the per-layer spike rasters of a Loihi run (Lava or emulator) into a :class:`TargetResult`.

Host side, numpy. Counting follows docs/semantics.md through ``snnkit.energy.counting``: activity of
every spiking layer and of the input comes from the rasters; a connection node whose output feeds a weighted
node (a pooling or Flatten before a Conv/Affine) gets its activity by applying it, in numpy, to the rasters.
Counts cover the target's own time axis (``T + delay`` steps per sample) and the graph's own nodes: relay
neurons inserted for skip connections are not among them (the quantisation report lists them). A readout
layer's raster holds its integer potential; outputs and records give it in the graph's units.
"""
from __future__ import annotations

import nir
import numpy as np

from snnkit.deploy.base import TargetResult
from snnkit.deploy.loihi.graph import LoihiGraph
from snnkit.energy.counting import Activity, ActivityAccumulator, layer_stats
from snnkit.graph import predecessors, weighted_input_shapes
from snnkit.graph.kinds import NEURONS, PORTS, WEIGHTED
from snnkit.graph.ops import apply_node

_CHUNK = 64


def _activities(graph: nir.NIRGraph, lg: LoihiGraph, rasters: dict[str, np.ndarray],
                x: np.ndarray) -> dict[str, Activity]:
    nodes = graph.nodes
    preds = predecessors(graph)
    activity = {lg.input.name: Activity.from_output(x)}
    for layer in lg.layers:
        r = rasters[layer.name]
        if layer.readout:  # potentials, not events
            activity[layer.name] = Activity(events=(r != 0).sum(axis=(0, 1)).reshape(layer.shape), analog=True)
        else:
            activity[layer.name] = Activity(events=r.sum(axis=(0, 1), dtype=np.int64).reshape(layer.shape),
                                            analog=False)
    needed = {p for n, node in nodes.items() if isinstance(node, WEIGHTED) for p in preds[n]
              if p not in activity and not isinstance(nodes[p], NEURONS)}
    if not needed:
        return activity
    known = {lg.input.name: (x, lg.input.shape)}
    for layer in lg.layers:
        known[layer.name] = (rasters[layer.name], layer.shape)
    acc = ActivityAccumulator()
    b = x.shape[0]
    for start in range(0, b, _CHUNK):
        cache: dict[str, np.ndarray] = {}

        def value(n: str) -> np.ndarray:
            if n in cache:
                return cache[n]
            if n in known:
                arr, shape = known[n]
                a = arr[start:start + _CHUNK].astype(np.float64)
                y = a.reshape(a.shape[0], a.shape[1], *shape)
            else:
                ins = [value(p) for p in preds[n]]
                t = max(i.shape[1] for i in ins)
                total = None
                for i in ins:
                    i = np.pad(i, [(0, 0), (0, t - i.shape[1])] + [(0, 0)] * (i.ndim - 2))
                    total = i if total is None else total + i.reshape(total.shape)
                bb, tt = total.shape[:2]
                node = nodes[n]
                flat = total.reshape(bb * tt, *total.shape[2:])
                out = flat if isinstance(node, PORTS) else apply_node(node, flat)
                y = out.reshape(bb, tt, *out.shape[1:])
            cache[n] = y
            return y

        for n in needed:
            acc.add(n, value(n))
    activity.update(acc.activity())
    return activity


def build_result(target: str, graph: nir.NIRGraph, lg: LoihiGraph, rasters: dict[str, np.ndarray],
                 x: np.ndarray, *, wall_s: float, build_s: float, record: bool, counts: bool = True,
                 info: dict | None = None) -> TargetResult:
    """The result record from rasters ``name -> [B, T + delay, n]`` of every layer (spikes 0/1; a readout's
    integer potential); ``counts=False`` leaves its ``layers`` empty."""
    b, t = np.shape(x)[:2]
    t_out = lg.steps_out(t)
    layers = layer_stats(graph, _activities(graph, lg, rasters, np.asarray(x, dtype=np.float64)), b, t_out,
                         weighted_input_shapes(graph)) if counts else []
    out_layer = lg.layer(lg.output)
    outputs = graph_units(out_layer, rasters[lg.output]).reshape(b, t_out, -1)
    records = {}
    if record:
        for layer in lg.layers:
            records[layer.name] = graph_units(layer, rasters[layer.name]).reshape(b, t_out, *layer.shape)
    res_info = {"quantisation": {"input": lg.report.get("input"), "lossy": lg.report.get("lossy", []),
                                 "overflow_risk": lg.report.get("overflow_risk", []),
                                 "relays": lg.report.get("relays", [])},
                "output_layer": out_layer.name, "warnings": warnings(lg)}
    res_info.update(info or {})
    return TargetResult(target=target, outputs=outputs, layers=layers, wall_s=wall_s, build_s=build_s,
                        delay=lg.delay, records=records, info=res_info)


def graph_units(layer, raster: np.ndarray) -> np.ndarray:
    """A layer's raster as the graph's output: spikes as they are, a readout's integer potential in the float
    units of the graph (float32)."""
    if layer.readout:
        return (raster.astype(np.float64) * layer.v_unit()).astype(np.float32)
    return raster.astype(np.float32)


def warnings(lg: LoihiGraph) -> list[str]:
    """What a user must know about a run of ``lg``: the conventions chosen for the graph, every mapping that is
    not exact, and what those cost as measured when the graph was quantised."""
    out = list(lg.report.get("conventions", []))
    lossy = lg.report.get("lossy", [])
    out += [f"not exact on Loihi: {entry}" for entry in lossy]
    effect = lg.report.get("lossy_effect")
    if effect and "differing_output_spikes" in effect:
        out.append(f"measured on the first {effect['samples']} inputs: {100 * effect['differing_output_spikes']:.1f} % "
                   f"of output spike values and {100 * effect['differing_predictions']:.1f} % of predictions differ "
                   "from the float reference")
    elif effect:
        out.append(f"measured on the first {effect['samples']} inputs: the output potentials differ from the float "
                   f"reference by {100 * effect['output_rel_rmse']:.2f} % (relative RMS) and "
                   f"{100 * effect['differing_predictions']:.1f} % of predictions differ")
    return out

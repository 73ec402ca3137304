"""Float NIR graph (snnkit semantics, docs/semantics.md) -> :class:`LoihiGraph` in Loihi 2 fixed point.

Numpy only. The mapping, per spiking layer (details and reasons in docs/loihi.md):

- Each neuron ``i`` has its own float-to-integer scale: its threshold ``theta_i`` becomes the layer's single
  integer threshold ``vth`` (Lava's LIF has one threshold per process), so incoming weights and the bias are
  expressed in threshold units first (``W~ = A g_i / theta_i``, ``g`` the input gain of the neuron model).
- ``vth`` and each projection's weight exponent are chosen together to minimise the relative weight error
  of the 8-bit mantissas, under a cap that keeps the worst-case input inside the 24-bit state
  (``headroom_bits`` to spare). Mixed-sign mantissas are even (Lava's Dense drops their lowest bit).
- ``dv = round(4096 dt / tau_mem)``; ``du = round(4096 dt / tau_syn) - 1`` (Lava adds 1 to du) for CubaLIF,
  ``du = 4095`` (current emptied every step) for LIF and IF; IF has ``dv = 0``. Per neuron: a layer whose
  neurons' decays differ runs as one Lava process per group of equal ``(du, dv)``.
- The bias (``v_leak`` and connection biases) becomes ``bias_mant << bias_exp`` in v units.
- LI / CubaLI readouts are the same neurons without a threshold (their float potential is the unit, ``theta = 1``);
  they never fire and their potential is recorded.
- A layer fed from sources at different depths (a skip connection) gets the shorter paths delayed
  (``Projection.delay``) so that all its inputs arrive together, as in the reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import nir
import numpy as np

from snnkit.deploy.loihi import nirops
from snnkit.deploy.loihi.graph import (ACT_SHIFT, BIAS_EXP_MAX, BIAS_MANT_MAX, DECAY_UNITY, STATE_MAX, VTH_MAX,
                                       InputSpec, LoihiGraph, NeuronLayer, Projection)
from snnkit.graph import DEFAULT_DT, DeployError, flatten_graph, infer_shapes, predecessors, successors
from snnkit.graph.kinds import CONNECTIONS, PORTS, SPIKING

SPIKE_ENCODERS = {"poisson", "latency", "rate", "spikes", "frames"}  # frames: snnkit.data's 0/1 event frames
READOUT_NODES = (nir.LI, nir.CubaLI)  # non-spiking layers Loihi runs as LIF neurons that never fire
LAYER_NODES = (*SPIKING, *READOUT_NODES)
CUBA_KINDS = ("CubaLIF", "CubaLI")
EXP_RANGE = (-8, 7)  # Loihi 2 weight exponent range used here


class QuantizeError(ValueError):
    """The graph cannot be mapped to Loihi 2 (one line: which node and why)."""


@dataclass
class _Incoming:
    """One projection before quantisation: float weights in threshold units per input unit."""

    src: str
    nodes: list[str]
    w: np.ndarray  # dense [n_dst, n_src] or conv [O, Cg, kh, kw]
    conv: nirops.ConvChain | None
    q: float  # input integers per input unit (1 for spikes and layer outputs)
    x_max: float  # largest input magnitude, in input units
    recurrent: bool
    delay: int = 0  # steps the source is held back (a skip connection's shorter path)


def quantize(graph: nir.NIRGraph, *, input_mode: str = "auto", input_range: float | None = None,
             input_bits: int = 8, dt: float | None = None, headroom_bits: int = 1,
             sparse_below: float = 0.1, weight_exp_range: tuple[int, int] = EXP_RANGE,
             source: str = "graph") -> LoihiGraph:
    """Quantise a float NIR graph for Loihi 2.

    input_mode: ``"spikes"``, ``"counts"`` (non-negative integer event counts per step), ``"analog"`` (real
        values, e.g. the direct encoder), or ``"auto"``: analog for the ``direct`` encoder in the graph's
        metadata, spikes otherwise.
    input_range: largest input magnitude (analog: maps to the largest graded integer; counts: the largest
        count expected). Defaults to 1.0.
    input_bits: graded input magnitude bits (analog and counts).
    dt: time step in seconds; default ``graph.metadata["dt"]`` or 1e-4.
    headroom_bits: bits kept free above the worst-case input in the 24-bit state.
    sparse_below: a dense projection whose non-zero fraction is below this becomes a Lava ``Sparse``.
    weight_exp_range: allowed weight exponents (Loihi 2: -8..7). ``(0, 0)`` gives graphs that fit lava-dl's
        netx format. Conv projections never get negative exponents (Lava's Conv cannot apply them).
    source: a name for messages (the file the graph came from).

    Raises :class:`QuantizeError` (a ValueError) with one line naming the node when the graph uses something
    Loihi 2 cannot run.
    """
    meta = dict(getattr(graph, "metadata", None) or {})
    dt, exp_range = _check_options(meta, dt, weight_exp_range, source)
    st = _structure(graph, source)
    spec = _input_spec(st.in_name, st.shapes[st.in_name], input_mode, input_range, input_bits, meta)
    x_max_in = 1.0 if spec.mode == "spikes" else (float(input_range) if input_range is not None else 1.0)
    layers: list[NeuronLayer] = []
    projections: list[Projection] = []
    report_layers = []
    notes: list[str] = []
    for n in st.order:
        nparams = _neuron_params(n, st.nodes[n], st.shapes[n], dt)
        incoming, bias_f, layer_notes, lossy = _incoming(n, st, nparams, spec, x_max_in, source, exp_range)
        layer, projs, rep = _quantize_layer(n, nparams, st.shapes[n], st.depth[n], incoming, bias_f, spec,
                                            headroom_bits, sparse_below, exp_range)
        layer.reset, reset_lossy = _reset(n, st.nodes[n], meta)
        rep["reset"] = layer.reset
        rep["lossy"] += lossy + reset_lossy
        notes += layer_notes
        layers.append(layer)
        projections.extend(projs)
        report_layers.append(rep)
    report = {
        "source": source,
        "target": "loihi2",
        "dt": dt,
        "delay_steps": st.depth[st.out_src],
        "input": {"mode": spec.mode, "scale": spec.scale, "max_int": spec.max_int,
                  "message_bits": spec.message_bits},
        "layers": report_layers,
        "notes": notes,
        "lossy": sorted({f"{r['name']}: {m}" for r in report_layers for m in r["lossy"]}),
        "overflow_risk": [r["name"] for r in report_layers if r["headroom"]["overflow_risk"]],
    }
    lg = LoihiGraph(input=spec, layers=layers, projections=projections, output=st.out_src, dt=dt, report=report)
    report["relays"] = lg.relays()
    notes += _relay_notes(lg)
    return lg


def _relay_notes(lg: LoihiGraph) -> list[str]:
    """One line per delayed source of a skip connection: what the Lava network inserts for it."""
    out = []
    for r in lg.report["relays"]:
        if r["source"] == lg.input.name:
            out.append(f"skip connection: the input is fed again {r['steps']} step(s) later (a delayed copy of the "
                       f"input stream)")
        else:
            out.append(f"skip connection: {r['steps']} relay layer(s) after {r['source']!r} ({r['neurons']} relay "
                       f"neurons, not counted in the graph's operations)")
    return out


def _check_options(meta: dict, dt: float | None, weight_exp_range, source: str) -> tuple[float, tuple[int, int]]:
    """The step length (s) and the weight exponent range, checked."""
    dt = float(dt if dt is not None else meta.get("dt", DEFAULT_DT))
    if not dt > 0:
        raise QuantizeError(f"{source}: dt must be > 0, got {dt}")
    lo_e, hi_e = (int(v) for v in weight_exp_range)
    if not EXP_RANGE[0] <= lo_e <= hi_e <= EXP_RANGE[1] or hi_e < 0:
        raise QuantizeError(f"weight_exp_range must lie in {EXP_RANGE} and include a value >= 0, got "
                            f"{weight_exp_range}")
    return dt, (lo_e, hi_e)


# --- structure ------------------------------------------------------------------------------------------

@dataclass
class _Structure:
    """What runs where: the flat graph's nodes, its Input and the spiking layer feeding its Output, every
    spiking layer with its shape, the connection region feeding it, its depth (synapse stages from the input,
    one step of delay each) and the order layers are built in."""

    nodes: dict[str, nir.NIRNode]
    in_name: str
    out_src: str
    node_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    shapes: dict[str, tuple[int, ...]]
    regions: dict[str, nirops.Region]
    depth: dict[str, int]
    order: list[str]


def _structure(graph: nir.NIRGraph, source: str) -> _Structure:
    """Check that the graph can run on Loihi 2 and find its structure (one-line QuantizeError if not)."""
    try:
        flat = flatten_graph(graph)
    except (ValueError, DeployError) as e:
        raise QuantizeError(f"{source}: {e}") from None
    nodes = dict(flat.nodes)
    preds = predecessors(flat)
    top = set(graph.nodes)
    inputs = [n for n, v in nodes.items() if isinstance(v, nir.Input) and n in top]
    outputs = [n for n, v in nodes.items() if isinstance(v, nir.Output) and n in top]
    if len(inputs) != 1 or len(outputs) != 1:
        raise QuantizeError(f"{source}: needs exactly one Input and one Output node "
                            f"(found {len(inputs)} and {len(outputs)})")
    in_name, out_name = inputs[0], outputs[0]
    for n, v in nodes.items():
        if not isinstance(v, (*PORTS, *LAYER_NODES, *CONNECTIONS)):
            why = {"I": "non-spiking integrator", "Delay": "synaptic delay", "Threshold": "bare threshold"}
            kind = type(v).__name__
            raise QuantizeError(f"{source}: node {n!r} ({kind}, {why.get(kind, 'node type')}) is not supported "
                                f"on Loihi 2 by snnkit (neuron layers: LIF, IF, CubaLIF; readouts: LI, CubaLI)")
    layers = [n for n, v in nodes.items() if isinstance(v, LAYER_NODES)]
    if not layers:
        raise QuantizeError(f"{source}: the graph has no neuron layer (LIF, IF, CubaLIF, LI, CubaLI)")
    _check_readouts(nodes, successors(flat), out_name, source)
    out_src = preds[out_name][0] if len(preds[out_name]) == 1 else None
    if out_src is None or out_src not in layers:
        raise QuantizeError(f"{source}: the Output node must be fed by a spiking layer or an LI/CubaLI readout "
                            f"(nothing else leaves Loihi)")
    try:
        node_shapes = infer_shapes(flat, in_name)
    except (ValueError, DeployError) as e:
        raise QuantizeError(f"{source}: {e}") from None
    missing = [n for n in layers if n not in node_shapes]
    if missing:
        raise QuantizeError(f"{source}: layer {missing[0]!r} is not reachable from the input")
    regions = {}
    for n in layers:
        try:
            regions[n] = nirops.region_into(n, nodes, preds, lambda m: m == in_name or m in layers)
        except ValueError as e:
            raise QuantizeError(f"{source}: {e}") from None
        if not regions[n].sources:
            raise QuantizeError(f"{source}: layer {n!r} has no input")
    depth = _depths(layers, regions, in_name, source)
    return _Structure(nodes=nodes, in_name=in_name, out_src=out_src, node_shapes=node_shapes,
                      shapes={n: node_shapes[n][1] for n in [in_name, *layers]}, regions=regions, depth=depth,
                      order=sorted(layers, key=lambda n: (depth[n], layers.index(n))))


def _check_readouts(nodes: dict, succ: dict[str, list[str]], out_name: str, source: str) -> None:
    """A readout (LI, CubaLI) may only feed the Output node: only spikes leave a Loihi neuron."""
    for n, v in nodes.items():
        if isinstance(v, READOUT_NODES) and succ.get(n) != [out_name]:
            raise QuantizeError(f"{source}: readout {n!r} ({type(v).__name__}) must feed the Output node alone: its "
                                f"potential cannot drive other layers on Loihi (only spikes leave a neuron)")


# --- float projections ----------------------------------------------------------------------------------

def _incoming(n: str, st: _Structure, nparams: dict, spec: InputSpec, x_max_in: float, source: str,
              exp_range: tuple[int, int] = EXP_RANGE) -> tuple[list[_Incoming], np.ndarray, list[str], list[str]]:
    """Layer ``n``'s projections as float weights in threshold units (a convolution kept as one where it can
    be), its bias in threshold units, notes, and what of it Loihi cannot do exactly."""
    nodes, region, shape, in_name = st.nodes, st.regions[n], st.shapes[n], st.in_name
    notes: list[str] = []
    conv = nirops.as_conv_chain(region, nodes, st.node_shapes)
    if conv is not None and tuple(conv.out_shape) != tuple(shape):
        conv = None
    if conv is not None and _decays_vary_within_channels(nparams, shape):
        # each group of equal decays is a Lava process of its own; a convolution cannot be split between
        # processes inside a channel, so this stage becomes a Sparse/Dense with the same connections
        conv = None
        notes.append(f"{n}: decays differ within a channel: its convolution is mapped to Sparse/Dense")
    if conv is not None and region.sources[0] == in_name and spec.mode == "analog" and exp_range[0] < 0:
        # Analog input needs a negative weight exponent (a floor shift of the summed input), which
        # Lava's Conv cannot apply: this stage becomes a Sparse/Dense with the same connections (unless
        # negative exponents are excluded, as for netx: then it stays a Conv with coarser weights).
        conv = None
        notes.append(f"{n}: convolution of the analog input mapped to Sparse/Dense (Lava's Conv ignores "
                     f"weight_exp)")
    try:
        if conv is not None:
            maps = None
            const = np.broadcast_to(conv.bias[:, None, None], shape).reshape(-1)
        else:
            maps, const = nirops.linear_maps(region, nodes, st.node_shapes, shape)
    except ValueError as e:
        raise QuantizeError(f"{source}: layer {n!r}: {e}") from None
    row = nparams["gain"] / nparams["theta"]  # per neuron: threshold units per input current unit
    incoming: list[_Incoming] = []
    if conv is not None:
        rc = row.reshape(shape)
        per_channel = rc.reshape(rc.shape[0], -1)
        if np.ptp(per_channel, axis=1).max(initial=0) <= 1e-12 * np.abs(per_channel).max(initial=1):
            src = region.sources[0]
            w = conv.weight * per_channel[:, :1, None, None]
            incoming.append(_Incoming(src, list(region.order), w, conv, *_in_scale(src, in_name, spec, x_max_in),
                                      recurrent=False, delay=_delay(st, src, n)))
        else:  # per-position scales cannot live in a shared kernel: use the exact dense matrix
            maps, const = nirops.linear_maps(region, nodes, st.node_shapes, shape)
            conv = None
    if conv is None:
        for src, a in maps.items():
            w = a * row[:, None]
            incoming.append(_Incoming(src, _region_nodes_from(region, src, nodes), w, None,
                                      *_in_scale(src, in_name, spec, x_max_in), recurrent=(src == n),
                                      delay=_delay(st, src, n)))
    bias_f = (nparams["bias_v"] + nparams["bias_in"] * const) / nparams["theta"]
    if n in region.sources:
        ff_nodes = {m for s_ in region.sources if s_ != n for m in _region_nodes_from(region, s_, nodes)}
        rec_only = [m for m in _region_nodes_from(region, n, nodes) if m not in ff_nodes]
        if any(np.any(np.asarray(getattr(nodes[m], "bias", 0.0) if getattr(nodes[m], "bias", None) is not None
                                 else 0.0) != 0) for m in rec_only):
            notes.append(f"{n}: the recurrent connection's bias is a constant of the neuron on Loihi, so it "
                         f"also acts at t = 0 (the reference adds it from t = 1)")
    lossy = []
    if nparams["kind"] == "CubaLIF" and np.any(const != 0):
        lossy.append("CubaLIF with a connection bias: Lava's LIF adds a bias to v, not to the synaptic current, so "
                     "it acts at once and again after every reset instead of charging the current; spikes differ "
                     "over the whole run")
    if nparams["kind"] == "CubaLI" and np.any(const != 0):
        lossy.append("CubaLI with a connection bias: Lava's LIF adds a bias to v, not to the synaptic current, so "
                     "it acts at once instead of charging the current; the potential differs while the current "
                     "would charge (about tau_syn / dt steps)")
    return incoming, bias_f, notes, lossy


def _decays_vary_within_channels(nparams: dict, shape) -> bool:
    """Whether a 3-D layer's neurons in one channel have different ``(du, dv)``."""
    if len(shape) != 3:
        return False
    keys = (np.asarray(nparams["du"]) * DECAY_UNITY + np.asarray(nparams["dv"])).reshape(shape[0], -1)
    return bool(np.any(keys != keys[:, :1]))


def _reset(n: str, node: nir.NIRNode, meta: dict) -> tuple[str, list[str]]:
    """Layer ``n``'s reset mode on Loihi and what of it cannot be done exactly (a reset to ``v_reset != 0``)."""
    reset_meta = meta.get("reset", {})
    reset = reset_meta.get(n) if isinstance(reset_meta, dict) else reset_meta
    reset = reset or (node.metadata or {}).get("reset") or "zero"
    lossy = []
    if reset == "zero" and np.any(np.asarray(node.v_reset if getattr(node, "v_reset", None) is not None else 0.0) != 0):
        lossy.append("v_reset != 0 is not available on Loihi 2: runs with reset to zero")
    return reset, lossy


def _region_nodes_from(region: nirops.Region, src: str, nodes) -> list[str]:
    """Region nodes on some path from ``src`` to the target (for reporting and counting)."""
    reach = {src}
    out = []
    for n in region.order:
        if any(p in reach for p in region.feeds[n]):
            reach.add(n)
            if not isinstance(nodes[n], PORTS):
                out.append(n)
    return out


def _depths(layers: list[str], regions: dict, in_name: str, source: str) -> dict[str, int]:
    """Each layer's depth: one more than its deepest feed-forward source (shallower sources are delayed to
    match, :func:`_delay`). Recurrence between different layers is refused."""
    depth = {in_name: 0}
    pending = set(layers)
    while pending:
        progressed = False
        for n in sorted(pending):
            ff = [s for s in regions[n].sources if s != n]
            if not ff:
                raise QuantizeError(f"{source}: layer {n!r} is fed only by itself")
            if all(s in depth for s in ff):
                depth[n] = max(depth[s] for s in ff) + 1
                pending.discard(n)
                progressed = True
        if not progressed:
            raise QuantizeError(f"{source}: recurrence between different layers ({sorted(pending)}) is not "
                                f"supported (only a layer's connection to itself)")
    return depth


def _delay(st: _Structure, src: str, dst: str) -> int:
    """Steps by which the projection ``src -> dst`` must be held back so that it arrives with ``dst``'s deepest
    input (0 for the deepest sources and for a layer's connection to itself)."""
    return 0 if src == dst else st.depth[dst] - 1 - st.depth[src]


def _input_spec(name, shape, mode, rng, bits, meta) -> InputSpec:
    if mode == "auto":
        enc = meta.get("encoder") or {}
        enc_name = enc.get("name") if isinstance(enc, dict) else str(enc)
        mode = "analog" if enc_name == "direct" else "spikes"
    if not 1 <= int(bits) <= 16:
        raise QuantizeError(f"input_bits must be in 1..16, got {bits}")
    bits = int(bits)
    if mode == "spikes":
        return InputSpec(name=name, shape=tuple(shape), mode="spikes", scale=1.0, max_int=1, message_bits=0)
    if mode == "counts":
        return InputSpec(name=name, shape=tuple(shape), mode="counts", scale=1.0, max_int=2 ** bits - 1,
                         message_bits=bits)
    if mode == "analog":
        r = 1.0 if rng is None else float(rng)
        if not r > 0:
            raise QuantizeError(f"input_range must be > 0, got {rng}")
        max_int = 2 ** bits - 1
        return InputSpec(name=name, shape=tuple(shape), mode="analog", scale=max_int / r, max_int=max_int,
                         message_bits=bits + 1)
    raise QuantizeError(f"unknown input mode {mode!r} (spikes, counts, analog, auto)")


def _in_scale(src: str, in_name: str, spec: InputSpec, x_max_in: float) -> tuple[float, float]:
    """(integers per input unit, largest input magnitude in input units) of a projection's source."""
    if src != in_name:
        return 1.0, 1.0
    if spec.mode == "counts":
        return 1.0, min(float(spec.max_int), max(1.0, x_max_in))
    return spec.scale, x_max_in if spec.mode == "analog" else 1.0


# --- neuron parameters ----------------------------------------------------------------------------------

def _neuron_params(name: str, node, shape, dt: float) -> dict:
    """Per neuron (flat arrays): threshold ``theta`` (1 for readouts: their potential is the unit), input gain,
    decays ``alpha``/``beta`` and Lava's ``du``/``dv``, and the bias terms (``bias_v`` per step, ``bias_in`` per
    unit of a connection bias)."""
    def arr(v, default=0.0):
        v = default if v is None else v
        return np.broadcast_to(np.asarray(v, dtype=np.float64), shape).reshape(-1).copy()

    kind = type(node).__name__
    r = arr(node.r, 1.0)
    theta = np.ones_like(r) if kind in ("LI", "CubaLI") else arr(node.v_threshold)
    if np.any(~(theta > 0)):
        raise QuantizeError(f"layer {name!r}: thresholds must be > 0 on Loihi (found {theta.min():g})")
    if kind == "IF":
        p = dict(theta=theta, gain=r, beta=np.ones_like(theta), alpha=np.zeros_like(theta),
                 bias_v=np.zeros_like(theta), bias_in=r)
    elif kind in ("LIF", "LI"):
        beta = 1.0 - dt / arr(node.tau)
        p = dict(theta=theta, gain=(1 - beta) * r, beta=beta, alpha=np.zeros_like(theta),
                 bias_v=(1 - beta) * arr(node.v_leak), bias_in=(1 - beta) * r)
    else:  # CubaLIF, CubaLI
        alpha = 1.0 - dt / arr(node.tau_syn)
        beta = 1.0 - dt / arr(node.tau_mem)
        w_in = arr(getattr(node, "w_in", 1.0), 1.0)
        p = dict(theta=theta, gain=(1 - alpha) * w_in * (1 - beta) * r, beta=beta, alpha=alpha,
                 bias_v=(1 - beta) * arr(node.v_leak), bias_in=(1 - beta) * r * w_in)
    du, dv = decays(kind, p["alpha"], p["beta"])
    return dict(kind=kind, du=np.broadcast_to(du, r.shape), dv=np.broadcast_to(dv, r.shape), **p)


def decays(kind: str, alpha, beta):
    """Lava's (du, dv) for float decays ``alpha`` (synaptic) and ``beta`` (membrane): ints for scalars, int
    arrays for per-neuron arrays."""
    alpha, beta = np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    dv = np.zeros(beta.shape) if kind == "IF" else np.clip(np.rint(DECAY_UNITY * (1.0 - beta)), 0, DECAY_UNITY - 1)
    du = (np.clip(np.rint(DECAY_UNITY * (1.0 - alpha)) - 1, 0, DECAY_UNITY - 1) if kind in CUBA_KINDS
          else np.full(alpha.shape, DECAY_UNITY - 1.0))
    if du.ndim == 0:
        return int(du), int(dv)
    return du.astype(np.int32), dv.astype(np.int32)


def _compact(a: np.ndarray, shape: tuple[int, ...], dtype):
    """One value when every neuron has it (as Lava's process takes it), else the array in the layer's shape."""
    a = np.asarray(a).reshape(-1)
    if np.all(a == a[0]):
        return dtype(a[0])
    return a.reshape(shape).astype(np.int32 if dtype is int else np.float64)


# --- the per-layer search -------------------------------------------------------------------------------

def canonical_mantissas(w: np.ndarray) -> np.ndarray:
    """Round to Lava Dense's 8-bit weights: [0, 255] or [-255, 0] for one sign, even values in [-256, 254]
    for mixed signs (Lava drops the lowest bit of mixed-sign weights)."""
    r = np.rint(w)
    if np.all(r >= 0):
        return np.clip(r, 0, 255).astype(np.int32)
    if np.all(r <= 0):
        return np.clip(r, -255, 0).astype(np.int32)
    return (2 * np.clip(np.rint(w / 2.0), -128, 127)).astype(np.int32)


def _mant_limit(w: np.ndarray) -> float:
    mixed = np.any(w > 0) and np.any(w < 0)
    return 254.0 if mixed else 255.0


def _sample(w: np.ndarray, limit: int = 20_000) -> np.ndarray:
    flat = w.reshape(-1)
    if flat.size <= limit:
        return flat
    step = flat.size // limit + 1
    return np.concatenate([flat[::step], flat[np.argsort(np.abs(flat))[-64:]]])


def _fit(w: np.ndarray, q: float, V: int, exps: tuple[int, int]) -> tuple[int, np.ndarray]:
    """Smallest exponent in ``exps`` whose mantissas fit without clipping (or the largest), and them."""
    e = int(_exponents(float(np.abs(w).max(initial=0.0)), _mant_limit(w), q, np.array([V]), exps)[0])
    return e, canonical_mantissas(w * V / (q * 2.0 ** e))


def _exponents(m: float, lim: float, q: float, Vs: np.ndarray, exps: tuple[int, int]) -> np.ndarray:
    """Per candidate threshold ``V``: the smallest exponent in ``exps`` at which the largest weight ``m``
    fits the mantissa limit ``lim``."""
    if m == 0:
        return np.zeros(len(Vs), dtype=np.int64)
    e = np.ceil(np.log2(Vs * m / (q * lim)) - 1e-12).astype(np.int64)
    e = np.clip(e, *exps)
    over = np.rint(m * Vs / (q * 2.0 ** e)) > lim
    return np.clip(e + over, *exps)


def _rel_err(w: np.ndarray, mant: np.ndarray, q: float, V: int, e: int) -> tuple[float, float]:
    """(sum of squared errors, sum of squares) of weights ``w`` (threshold units) vs their mantissas."""
    w_hat = mant.astype(np.float64) * q * 2.0 ** e / V
    return float(np.sum((w - w_hat) ** 2)), float(np.sum(w ** 2))


def _sq_errors(inc: _Incoming, Vs: np.ndarray, exps: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float]:
    """For every candidate threshold in ``Vs``: squared mantissa error of (a sample of) the weights, the
    exponents, and the weights' sum of squares."""
    s = _sample(inc.w)
    m = float(np.abs(s).max(initial=0.0))
    es = _exponents(m, _mant_limit(s), inc.q, Vs, exps)
    se = np.zeros(len(Vs))
    if m == 0:
        return se, es, 0.0
    scale = Vs / (inc.q * 2.0 ** es)
    rows = max(1, 4_000_000 // max(s.size, 1))
    for i in range(0, len(Vs), rows):
        r = s[None, :] * scale[i:i + rows, None]
        ri = np.rint(r)
        mixed = np.any(ri < 0, axis=1) & np.any(ri > 0, axis=1)
        mant = np.where(mixed[:, None], 2 * np.clip(np.rint(r / 2), -128, 127), np.clip(ri, -255, 255))
        se[i:i + rows] = np.sum((s[None, :] - mant / scale[i:i + rows, None]) ** 2, axis=1)
    return se, es, float(np.sum(s ** 2))


def _search(incoming: list[_Incoming], v_cap: int, exp_range: tuple[int, int]
            ) -> tuple[int, list[int], list[np.ndarray], float]:
    """Choose the integer threshold V and each projection's exponent: least relative weight error.

    Exponents >= 0 first; negative ones (Dense/Sparse only: a floor shift of the summed input) are tried
    when the headroom cap leaves mantissas under-filled."""
    ranges = [(max(0, exp_range[0]), exp_range[1])] * len(incoming)

    def candidates(rngs) -> np.ndarray:
        """V that fill some projection's mantissas at some exponent, down to 3/4 of full (64 per exponent)."""
        cands = {v_cap}
        for inc, rg in zip(incoming, rngs):
            m = float(np.abs(inc.w).max(initial=0.0))
            if m == 0:
                continue
            lim = _mant_limit(inc.w)
            for e in range(rg[0], rg[1] + 1):
                full = int(math.floor(lim * inc.q * 2.0 ** e / m))
                lo = max(1, (3 * full) // 4)
                if full < 1 or lo > v_cap:
                    continue
                hi = min(full, v_cap)
                cands.update(range(lo, hi + 1) if hi - lo < 64 else np.linspace(lo, hi, 64).astype(int).tolist())
        return np.array(sorted(cands), dtype=np.float64)

    def score(rngs) -> list[tuple]:
        Vs = candidates(rngs)
        se = np.zeros(len(Vs))
        ss = 0.0
        exps = []
        for inc, rg in zip(incoming, rngs):
            a, es, b = _sq_errors(inc, Vs, rg)
            se, ss = se + a, ss + b
            exps.append(es)
        err = se / ss if ss > 0 else se
        return [(int(V), float(err[j]), [int(es[j]) for es in exps], rngs) for j, V in enumerate(Vs)]

    scored = score(ranges)
    # Under-filled mantissas (V capped by headroom): let Dense/Sparse use negative exponents as well.
    err0 = min(s[1] for s in scored)
    V0 = min(s[0] for s in scored if s[1] == err0)
    if exp_range[0] < 0 and any(inc.conv is None and 0 < np.abs(_fit(inc.w, inc.q, V0, rg)[1]).max(initial=0) < 128
                                for inc, rg in zip(incoming, ranges)):
        neg = [exp_range if inc.conv is None else rg for inc, rg in zip(incoming, ranges)]
        scored += score(neg)
    # Within 5 % (or 1e-3 rms) of the least error, prefer a threshold of at least 64 (so that v's rounding
    # toward zero stays below 1/4096 of the threshold per step), then small exponents (exponent 0 fits
    # lava-dl's netx format), then the smaller threshold (more headroom).
    err_min = min(s[1] for s in scored)
    ok = [s for s in scored if s[1] <= err_min * 1.05 + 1e-6]
    good = min(v_cap, 64)
    V, err, _, rngs = min(ok, key=lambda s: (s[0] < good, max((abs(e) for e in s[2]), default=0), s[0]))
    exps, mants = [], []
    for inc, rg in zip(incoming, rngs):
        e, m = _fit(inc.w, inc.q, V, rg)
        exps.append(e)
        mants.append(m)
    return V, exps, mants, err


def _bias(bias_int: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """13-bit mantissa and 3-bit exponent per neuron; returns (mant, exp, number clipped)."""
    mag = np.abs(bias_int).astype(np.float64)
    e = np.zeros(bias_int.shape, dtype=np.int64)
    need = mag > BIAS_MANT_MAX
    e[need] = np.ceil(np.log2(mag[need] / BIAS_MANT_MAX)).astype(np.int64)
    e = np.clip(e, 0, BIAS_EXP_MAX)
    mant = np.rint(bias_int / 2.0 ** e)
    clipped = int(np.sum(np.abs(mant) > BIAS_MANT_MAX))
    mant = np.clip(mant, -BIAS_MANT_MAX - 1, BIAS_MANT_MAX)
    return mant.astype(np.int32), e.astype(np.int32), clipped


SCALE_RANGE = (2.0 ** -40, 2.0 ** 40)
"""Largest weight or bias of a layer, in units of its threshold, that the quantisation takes: far beyond what
8-bit mantissas with exponents -8..7 over a 17-bit threshold carry either way, and short of float overflow."""


def _check_scale(layer: str, what: str, largest: float) -> None:
    if largest and not SCALE_RANGE[0] <= largest <= SCALE_RANGE[1]:
        raise QuantizeError(f"layer {layer!r}: its {what} reach {largest:.3g} times its threshold, outside the "
                            f"2^-40 .. 2^40 that Loihi's fixed point can approach (rescale weights or thresholds)")


def _quantize_layer(name, p, shape, depth, incoming: list[_Incoming], bias_f, spec: InputSpec, headroom_bits,
                    sparse_below, exp_range: tuple[int, int]):
    """One layer's integers (:class:`NeuronLayer`), its projections and its report."""
    kind = p["kind"]
    lossy: list[str] = []
    for inc in incoming:
        _check_scale(name, f"weights from {inc.src!r}", float(np.abs(inc.w).max(initial=0.0)))
    _check_scale(name, "bias", float(np.abs(bias_f).max(initial=0.0)))
    alpha_q = (DECAY_UNITY - p["du"] - 1) / DECAY_UNITY
    beta_q = 1.0 - p["dv"] / DECAY_UNITY
    pos, neg = _worst_input(incoming, shape)
    v_cap, u_worst, state_worst = _threshold_cap(p, alpha_q, beta_q, pos, neg, bias_f, headroom_bits)
    V, exps, mants, w_err = _search(incoming, v_cap, exp_range)

    bias_int = np.rint(bias_f * (1 << ACT_SHIFT) * V)
    bias_mant, bias_exp, bias_clipped = _bias(bias_int)
    bias_q = bias_mant.astype(np.float64) * 2.0 ** bias_exp / ((1 << ACT_SHIFT) * V)

    layer = NeuronLayer(name=name, kind=kind, shape=tuple(shape), depth=depth, du=_compact(p["du"], shape, int),
                        dv=_compact(p["dv"], shape, int), vth=int(V), bias_mant=bias_mant.reshape(shape),
                        bias_exp=bias_exp.reshape(shape), du_f=_compact(1.0 - p["alpha"], shape, float),
                        dv_f=_compact(1.0 - p["beta"], shape, float), bias_f=bias_f.reshape(shape))
    projs, proj_reports = [], []
    for inc, e, mant in zip(incoming, exps, mants):
        proj, proj_rep = _projection(inc, e, mant, V, name, spec, sparse_below)
        projs.append(proj)
        proj_reports.append(proj_rep)
    threshold_v = (1 << ACT_SHIFT) * V
    peak = threshold_v * state_worst
    groups = len(layer.groups())
    rep = {
        "name": name, "kind": kind, "shape": list(shape), "neurons": int(np.prod(shape)), "depth": depth,
        "vth": int(V), "vth_cap": v_cap, "du": _values(p["du"]), "dv": _values(p["dv"]), "decay_groups": groups,
        "threshold_float": [float(p["theta"].min()), float(p["theta"].max())],
        "decay": _decay_report(kind, p["alpha"], p["beta"], alpha_q, beta_q),
        "weights_rel_rmse": math.sqrt(w_err),
        "projections": proj_reports,
        "bias": {"max_abs_err_thr": float(np.abs(bias_f - bias_q).max(initial=0.0)), "clipped": bias_clipped,
                 "nonzero": int(np.count_nonzero(bias_mant))},
        "headroom": {
            "state_max": STATE_MAX - 1,
            "threshold_lsb": threshold_v,
            "worst_input_thr": u_worst,
            "worst_state_lsb": peak,
            "bits": math.log2((STATE_MAX - 1) / peak) if peak > 0 else float("inf"),
            "overflow_risk": bool(peak >= STATE_MAX - 1),
        },
        "lossy": lossy,
    }
    if layer.readout:
        rep["readout"] = {"potential_per_lsb": layer.v_unit()}
    if bias_clipped:
        lossy.append(f"{bias_clipped} bias values exceed 13-bit mantissa << 7 and were clipped")
    return layer, projs, rep


def _values(a: np.ndarray):
    """A per-neuron integer field for the report: the value, or the sorted distinct values."""
    distinct = sorted({int(v) for v in np.asarray(a).reshape(-1)})
    return distinct[0] if len(distinct) == 1 else distinct


def _decay_report(kind: str, alpha, beta, alpha_q, beta_q) -> dict:
    """Float and quantised decays with their largest relative error (a value, or [min, max] over the neurons)."""
    def span(a):
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        return float(a[0]) if np.all(a == a[0]) else [float(a.min()), float(a.max())]

    def rel(q, f):
        return float(np.max(np.where(f != 0, np.abs(q - f) / np.where(f != 0, f, 1.0), np.abs(q)), initial=0.0))

    if kind == "IF":
        beta, beta_q = np.ones_like(beta), np.ones_like(beta)
    cuba = kind in CUBA_KINDS
    return {"beta": span(beta), "beta_q": span(beta_q), "beta_rel_err": rel(beta_q, beta),
            "alpha": span(alpha) if cuba else 0.0, "alpha_q": span(alpha_q) if cuba else 0.0,
            "alpha_rel_err": rel(alpha_q, alpha) if cuba else 0.0}


def _worst_input(incoming: list[_Incoming], shape) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, the largest positive and negative input of one step in threshold units (every input of one
    sign active at its maximum)."""
    n = int(np.prod(shape))
    pos = np.zeros(n)
    neg = np.zeros(n)
    for inc in incoming:
        wp, wn = np.maximum(inc.w, 0), np.maximum(-inc.w, 0)
        if inc.conv is None:
            pos += wp.sum(axis=1) * inc.x_max
            neg += wn.sum(axis=1) * inc.x_max
        else:
            per_c = np.stack([wp.reshape(wp.shape[0], -1).sum(1), wn.reshape(wn.shape[0], -1).sum(1)])
            pos += np.broadcast_to(per_c[0][:, None], (shape[0], n // shape[0])).reshape(-1) * inc.x_max
            neg += np.broadcast_to(per_c[1][:, None], (shape[0], n // shape[0])).reshape(-1) * inc.x_max
    return pos, neg


def _threshold_cap(p: dict, alpha_q, beta_q, pos, neg, bias_f, headroom_bits) -> tuple[int, float, float]:
    """The largest integer threshold the layer's state allows, the worst input current and the worst state (both
    in threshold units).

    Hard caps: ``u`` must not wrap for the worst-case input (with ``headroom_bits`` to spare), biases must fit
    their 13-bit mantissa << 7. Soft cap (never below 256): ``v`` should not saturate, under sustained inhibition
    and negative bias for a spiking layer, under either sign for a readout (whose ``v`` is never reset).
    """
    leak_u = np.maximum(1.0 - alpha_q, 1.0 / DECAY_UNITY)
    u_worst = float((np.maximum(pos, neg) / leak_u).max(initial=0.0))
    one = float(1 << ACT_SHIFT)
    u_cap = (STATE_MAX - 1) / (one * 2.0 ** headroom_bits * max(u_worst, 1.0))
    b_max = float(np.abs(bias_f).max(initial=0.0))
    bias_cap = BIAS_MANT_MAX * 2.0 ** BIAS_EXP_MAX / (one * b_max) if b_max > 0 else np.inf
    leaky = np.asarray(beta_q) < 1.0
    readout = p["kind"] in ("LI", "CubaLI")
    state_worst = (1.0 + u_worst) if not readout else np.inf
    if p["kind"] == "IF" or not np.all(leaky):
        sat_cap = np.inf
    else:
        drive = np.maximum(pos, neg) if readout else neg
        bias = np.abs(bias_f) if readout else np.maximum(-bias_f, 0)
        v_low = (float((drive / leak_u).max(initial=0.0)) + float(bias.max(initial=0.0))) / (1 - np.max(beta_q))
        sat_cap = max((STATE_MAX - 1) / (one * max(v_low, 1.0)), 256.0)
        if readout:
            state_worst = v_low
    v_cap = int(max(32, min(2 ** 16, VTH_MAX, math.floor(min(u_cap, bias_cap, sat_cap)))))
    return v_cap, u_worst, state_worst


def _projection(inc: _Incoming, e: int, mant: np.ndarray, V: int, dst: str, spec: InputSpec, sparse_below: float
                ) -> tuple[Projection, dict]:
    """One incoming projection's Lava process (Dense, Sparse or Conv) and its report."""
    if inc.conv is not None:
        pkind = "conv"
    else:
        density = float(np.count_nonzero(mant)) / max(mant.size, 1)
        pkind = "sparse" if density < sparse_below and mant.size > 1024 else "dense"
    message_bits = spec.message_bits if inc.src == spec.name else 0
    pname = "+".join(inc.nodes) if inc.nodes else f"{inc.src}->{dst}"
    kw = {}
    if inc.conv is not None:
        c = inc.conv
        kw = dict(stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups, in_shape=c.in_shape,
                  out_shape=tuple(c.out_shape))
    # float weights per input unit (floating_pt feeds float inputs and spikes unscaled)
    proj = Projection(name=pname, nodes=list(inc.nodes), src=inc.src, dst=dst, kind=pkind, weight=mant,
                      weight_exp=int(e), weight_f=inc.w * inc.q, recurrent=inc.recurrent, message_bits=message_bits,
                      delay=inc.delay, **kw)
    se, ss = _rel_err(inc.w, mant, inc.q, V, e)
    w_hat = mant.astype(np.float64) * inc.q * 2.0 ** e / V
    lim = _mant_limit(inc.w)
    rep = {
        "name": pname, "source": inc.src, "kind": pkind, "recurrent": inc.recurrent, "delay": inc.delay,
        "weights": int(mant.size), "weight_exp": int(e),
        "mantissa_range": [int(mant.min(initial=0)), int(mant.max(initial=0))],
        "sign_mode": "mixed" if lim == 254.0 else ("inhibitory" if np.all(inc.w <= 0) else "excitatory"),
        "weight_rel_rmse": math.sqrt(se / ss) if ss > 0 else 0.0,
        "weight_max_abs_err_thr": float(np.abs(inc.w - w_hat).max(initial=0.0)),
        "nonzero_float": int(np.count_nonzero(inc.w)),
        "became_zero": int(np.count_nonzero((inc.w != 0) & (mant == 0))),
        "clipped": int(np.count_nonzero(np.abs(inc.w * V / (inc.q * 2.0 ** e)) > lim + 1)),
    }
    return proj, rep

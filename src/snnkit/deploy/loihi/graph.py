"""The quantised Loihi 2 graph: what the Lava worker builds and the emulator runs (numpy only).

A :class:`LoihiGraph` is a list of neuron layers (Lava ``LIF`` processes, torch layout ``(C, H, W)`` or
``(N,)``) and of projections between them (Lava ``Dense``, ``Sparse`` or ``Conv`` processes). Every number
in it is an integer of the width Loihi 2 stores (see docs/loihi.md); the ``*_f`` fields hold the same network
in floating point for Lava's ``floating_pt`` models. A layer's neurons may have different decays: Lava holds
``du`` and ``dv`` per process, so such a layer runs as one process per group of equal decays
(:meth:`NeuronLayer.groups`). A readout layer (LI, CubaLI) never fires; its potential is its output.

Time: a layer at ``depth`` k (k synapse stages from the input) receives the input of reference step ``t`` at
target step ``t + k``; its state is reset to zero when that first input arrives, so its raster is zero on
target steps ``< k``. The output layer's depth is the graph's ``delay``. A projection with ``delay`` m > 0
(a skip connection from a shallower source) delivers the source's output ``m`` steps later, so that every
input of a layer arrives in the step its depth says: relay layers on Lava (:func:`relay_chains`), a delayed
copy of the input stream when the source is the input.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

GRAPH_FILE = "loihi_graph.json"
PARAMS_FILE = "loihi_params.npz"
REPORT_FILE = "export_report.json"
FORMAT_VERSION = 1

# Loihi 2 widths (lava-nc 0.10.0, proc/lif/models.py and proc/dense/models.py)
STATE_BITS = 24
STATE_MAX = 2 ** (STATE_BITS - 1)  # u wraps, v saturates at +-(STATE_MAX - 1)
DECAY_UNITY = 4096  # du, dv are 12-bit fractions of this
ACT_SHIFT = 6  # synaptic input and threshold are shifted left by 6 bits
VTH_MAX = 2 ** 17 - 1
BIAS_MANT_MAX = 2 ** 12 - 1  # 13-bit signed
BIAS_EXP_MAX = 7  # 3-bit unsigned


@dataclass
class InputSpec:
    """How float inputs ``[B, T, *shape]`` become the integers the first synapse stage receives.

    mode: ``"spikes"`` (0/1, binary messages), ``"counts"`` (non-negative integers, graded messages) or
        ``"analog"`` (real values, graded messages ``round(x * scale)``).
    scale: integers per input unit (1 for spikes and counts).
    max_int: inputs are clipped to ``[-max_int, max_int]`` (``[0, max_int]`` for counts) after scaling.
    message_bits: Lava's ``num_message_bits`` for the first stage (0 for binary spikes).
    """

    name: str
    shape: tuple[int, ...]
    mode: str
    scale: float = 1.0
    max_int: int = 1
    message_bits: int = 0

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        """Float input ``[B, T, *shape]`` -> int32 of the same shape, and what was clipped."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[2:] != tuple(self.shape):
            raise ValueError(f"input has shape {x.shape[2:]} per step, the graph expects {tuple(self.shape)}")
        if self.mode == "spikes":
            q = (x != 0).astype(np.int32)
            bad = int(np.sum((x != 0) & (x != 1)))
            return q, {"non_binary_values": bad}
        q = np.rint(x * self.scale)
        lo = 0 if self.mode == "counts" else -self.max_int
        clipped = int(np.sum((q < lo) | (q > self.max_int)))
        return np.clip(q, lo, self.max_int).astype(np.int32), {"clipped_values": clipped}


READOUTS = ("LI", "CubaLI")  # layer kinds that never fire: their potential is recorded and is their output


@dataclass
class NeuronLayer:
    """One layer of Lava LIF neurons (one process per group of equal decays, :meth:`groups`).

    kind: the NIR neuron (``LIF``, ``IF``, ``CubaLIF``; ``LI``, ``CubaLI`` for readouts, which never fire and
        whose potential ``v`` is recorded every step: :attr:`readout`).
    du, dv: 12-bit decays (Lava fixed_pt: ``u *= (4096 - du - 1) / 4096``, ``v *= (4096 - dv) / 4096``); an int,
        or an int array of shape ``shape`` when the neurons' decays differ.
    vth: threshold mantissa; a neuron fires when ``v > vth << 6``. For a readout it sets the scale only: the
        float potential is ``v / (vth << 6)`` (:meth:`v_unit`).
    bias_mant, bias_exp: per neuron, shape ``shape``; bias added to v every step is
        ``bias_mant << bias_exp``.
    du_f, dv_f, bias_f: the float network (threshold 1) for Lava's floating_pt models (``du_f``, ``dv_f``: a
        float, or an array of shape ``shape``).
    reset: ``"zero"`` (Lava's LIF: ``v = 0`` after a spike) or ``"subtract"`` (``v -= vth << 6``: snnkit's
        ``LIFSubtractReset`` process, ``snnkit.deploy.lava.procs.subtract``).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    depth: int
    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray
    bias_exp: np.ndarray
    du_f: float
    dv_f: float
    bias_f: np.ndarray
    reset: str = "zero"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def readout(self) -> bool:
        """Whether the layer is a non-spiking readout (its output is its potential)."""
        return self.kind in READOUTS

    def v_unit(self) -> float:
        """Float units per integer of ``v``: one threshold is ``vth << 6`` (a readout's potential in its NIR units)."""
        return 1.0 / (int(self.vth) << ACT_SHIFT)

    def per_neuron(self, name: str) -> np.ndarray:
        """A decay field (``du``, ``dv``, ``du_f``, ``dv_f``) as one value per neuron, flat in torch order."""
        return np.broadcast_to(np.asarray(getattr(self, name)), self.shape).reshape(-1)

    def groups(self, fixed: bool = True) -> list[np.ndarray]:
        """Neuron indices (flat, torch order) that share their decays, ``(du, dv)`` (``fixed``) or ``(du_f, dv_f)``:
        one Lava process each, since Lava holds the decays per process. One group when they are uniform."""
        keys = ("du", "dv") if fixed else ("du_f", "dv_f")
        per = np.stack([self.per_neuron(k).astype(np.float64) for k in keys], axis=1)
        _, inverse = np.unique(per, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        return [np.flatnonzero(inverse == g) for g in range(int(inverse.max(initial=0)) + 1)]

    def bias_int(self) -> np.ndarray:
        """The integer bias per neuron (int64), as Lava's fixed-point LIF applies it."""
        m = self.bias_mant.astype(np.int64)
        e = self.bias_exp.astype(np.int64)
        return np.where(e >= 0, m << np.maximum(e, 0), m >> np.maximum(-e, 0))


@dataclass
class Projection:
    """One Lava connection process from ``src`` (a layer or the input) to ``dst`` (a layer).

    kind: ``"dense"`` / ``"sparse"`` (weight ``[n_dst, n_src]``, torch flatten order) or ``"conv"`` (weight
        ``[C_out, C_in/groups, kH, kW]``, torch's cross-correlation layout).
    weight: 8-bit mantissas (int32), already in the form Lava's Dense keeps (mixed signs: even values).
    weight_exp: the accumulated input is shifted by it (Dense/Sparse); for Conv, whose Lava model ignores
        ``weight_exp``, it is >= 0 and folded into the weights handed to Lava.
    weight_f: the float weights (threshold units per input unit) for floating_pt.
    num_weight_bits: Lava's ``num_weight_bits`` for Dense/Sparse (8 unless a graph read from a netx file, whose
        loader chooses it): on the first step the mantissas are truncated to that many bits (one fewer
        significant bit for mixed signs).
    delay: steps by which the source's output is held back before this stage (on top of the stage's own step),
        so that a skip connection's contribution arrives with the longer path's (0 for every other projection).
    """

    name: str
    nodes: list[str]
    src: str
    dst: str
    kind: str
    weight: np.ndarray
    weight_exp: int
    weight_f: np.ndarray
    recurrent: bool = False
    message_bits: int = 0
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    num_weight_bits: int = 8
    delay: int = 0

    def effective_weight(self) -> np.ndarray:
        """The integer weights Lava's fixed-point model multiplies spikes with (int64).

        Conv: ``mantissa << weight_exp`` (its model ignores ``weight_exp``, so the exponent is folded in).
        Dense/Sparse: the mantissas after what their model does on the first step: clip to 8 bits for the
        sign mode found in the matrix, then truncate to ``num_weight_bits`` (``8 - num_weight_bits`` low bits
        dropped, one more for mixed signs: with the default 8, mixed-sign weights lose their lowest bit; the
        exponent is applied to the accumulated sum).
        """
        w = self.weight.astype(np.int64)
        if self.kind == "conv":
            if self.weight_exp < 0:
                raise ValueError(f"projection {self.name}: Lava's Conv cannot apply a negative weight_exp")
            return w << self.weight_exp
        drop = 8 - int(self.num_weight_bits)
        mixed = w.size > 0 and w.min() < 0 < w.max()
        drop += int(mixed)
        if drop < 0:  # Lava shifts by a negative count, which numpy defines as zeroing every weight
            return np.zeros_like(w)
        if mixed:
            return (np.clip(w, -256, 255) >> drop) << drop
        if w.size == 0 or w.min() >= 0:
            return (np.clip(w, 0, 255) >> drop) << drop
        return -((np.clip(-w, 0, 255) >> drop) << drop)


_ARRAY_FIELDS = {"NeuronLayer": ("bias_mant", "bias_exp", "bias_f"), "Projection": ("weight", "weight_f")}
_PER_NEURON_FIELDS = ("du", "dv", "du_f", "dv_f")  # a number, or an array when the neurons differ


@dataclass
class LoihiGraph:
    """A NIR graph quantised for Loihi 2 (see the module docstring for time alignment)."""

    input: InputSpec
    layers: list[NeuronLayer]
    projections: list[Projection]
    output: str
    dt: float
    report: dict = field(default_factory=dict)

    @property
    def delay(self) -> int:
        """Steps by which outputs lag the reference semantics (the output layer's depth)."""
        return self.layer(self.output).depth

    def layer(self, name: str) -> NeuronLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def into(self, name: str) -> list[Projection]:
        """Projections whose destination is layer ``name``."""
        return [p for p in self.projections if p.dst == name]

    def source_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.input.shape) if name == self.input.name else tuple(self.layer(name).shape)

    def steps_out(self, timesteps: int) -> int:
        """Steps a target runs per sample: the input's ``T`` plus the pipeline delay."""
        return int(timesteps) + self.delay

    def relays(self) -> list[dict]:
        """What the skip connections insert (see :func:`relay_chains`): per delayed source, its relay layers
        and their neurons (a delayed copy of the input stream needs no neurons)."""
        chains = relay_chains(self)
        return [{"source": src, "steps": steps,
                 "neurons": 0 if src == self.input.name else steps * int(np.prod(self.source_shape(src)))}
                for src, steps in sorted(chains.items())]

    def lava_processes(self) -> int:
        """How many Lava processes the lava target builds for this graph (input streams, one process per decay
        group, a recorder per spiking layer, one connection per projection and destination group, relays with
        their connections): what a run's time grows with."""
        groups = {layer.name: len(layer.groups()) for layer in self.layers}
        relays = sum(steps for src, steps in relay_chains(self).items() if src != self.input.name)
        inputs = 1 + len({p.delay for p in self.projections if p.src == self.input.name and p.delay})
        recorders = sum(not layer.readout for layer in self.layers)
        return inputs + sum(groups.values()) + recorders + sum(groups[p.dst] for p in self.projections) + 2 * relays

    # --- files -------------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``loihi_graph.json``, ``loihi_params.npz`` and ``export_report.json`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        meta = {"format": FORMAT_VERSION, "input": asdict(self.input), "output": self.output, "dt": self.dt,
                "layers": [], "projections": []}
        for i, layer in enumerate(self.layers):
            meta["layers"].append(_to_json(layer, f"layer{i}", arrays))
        for i, proj in enumerate(self.projections):
            meta["projections"].append(_to_json(proj, f"proj{i}", arrays))
        _atomic_write(d / GRAPH_FILE, json.dumps(meta, indent=1).encode())
        _atomic_npz(d / PARAMS_FILE, arrays)
        _atomic_write(d / REPORT_FILE, json.dumps(self.report, indent=2, default=_json_default).encode())
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "LoihiGraph":
        d = Path(directory)
        try:
            meta = json.loads((d / GRAPH_FILE).read_text())
            arrays = dict(np.load(d / PARAMS_FILE))
        except (OSError, ValueError) as e:
            raise ValueError(f"{d}: not a saved Loihi graph ({e})") from None
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{d / GRAPH_FILE}: unsupported format {meta.get('format')!r}")
        report = {}
        if (d / REPORT_FILE).exists():
            report = json.loads((d / REPORT_FILE).read_text())
        inp = meta["input"]
        inp["shape"] = tuple(inp["shape"])
        return cls(input=InputSpec(**inp),
                   layers=[_from_json(NeuronLayer, m, arrays) for m in meta["layers"]],
                   projections=[_from_json(Projection, m, arrays) for m in meta["projections"]],
                   output=meta["output"], dt=float(meta["dt"]), report=report)


def relay_chains(lg: "LoihiGraph") -> dict[str, int]:
    """Source name -> the longest delay any projection asks of it: that many relay layers follow a layer source
    (each a copy of it one step later: IF neurons, threshold 0, identity weights 1, reset to zero, so a relay
    fires exactly when its input spiked), and one chain serves every shorter delay; an input source is fed
    again as a copy of the input stream that many steps later (graded values cannot pass through neurons)."""
    chains: dict[str, int] = {}
    for p in lg.projections:
        if p.delay > 0:
            chains[p.src] = max(chains.get(p.src, 0), int(p.delay))
    return chains


def _to_json(obj, key: str, arrays: dict[str, np.ndarray]) -> dict:
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if f.name in _ARRAY_FIELDS[type(obj).__name__] or isinstance(v, np.ndarray):
            arrays[f"{key}/{f.name}"] = np.asarray(v)
            out[f.name] = f"{key}/{f.name}"
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        else:
            out[f.name] = v
    return out


def _from_json(cls, meta: dict, arrays: dict[str, np.ndarray]):
    kw = {}
    for f in fields(cls):
        if f.name not in meta:
            continue
        v = meta[f.name]
        if f.name in _ARRAY_FIELDS[cls.__name__] or (f.name in _PER_NEURON_FIELDS and isinstance(v, str)):
            v = arrays[v]
        elif isinstance(v, list) and f.name != "nodes":
            v = tuple(v)
        kw[f.name] = v
    return cls(**kw)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

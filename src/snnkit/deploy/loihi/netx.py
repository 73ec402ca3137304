"""Write a :class:`LoihiGraph` as a lava-dl ``netx`` HDF5 file, for users of Loihi 2 hardware.

The layout is the one ``lava.lib.dl.netx.hdf5.Network`` reads (lava-dl 0.6): a group ``layer`` with one
subgroup per layer, ``"0"``, ``"1"``, ... in order. Each has a ``type`` (``input``, ``flatten``, ``dense``,
``dense_rec``, ``conv``), a ``shape`` (torch order ``(C, H, W)`` or ``(N,)``), for synapse layers the integer
weights the Lava process multiplies with (``weight``, ``weight_rec``; conv kernels ``[O, C, kH, kW]`` as torch
cross-correlates, netx flips them), ``stride``/``padding``/``dilation`` (``(H, W)``), ``groups``, an optional
``bias`` (netx applies it as ``bias << 6``; dense: per neuron; conv: per channel, or per neuron in Lava's
``(W, H, C)`` order when it varies within a channel) and a ``neuron`` group (``type = "CUBA"``,
``iDecay = du + 1``, ``vDecay = dv``, ``vThMant = vth``, ``refDelay``, ``gradedSpike``). snnkit adds
attributes netx ignores: the input coding (``input_*``, ``dt``) and every layer's and projection's name.

netx stores effective integer weights and re-derives mantissa and exponent itself
(:mod:`snnkit.deploy.loihi.netx_read` reads a file back into what netx runs), and it only builds sequential
networks of reset-to-zero neurons; :func:`netx_fit` says why a graph does not fit. Biases that are not a
multiple of 64 are rounded, and bias mantissas are clipped to Loihi's 13 bits (both reported). Importing
netx needs lava-dl, so this file is written with h5py only.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from snnkit.atomic import write_bytes
from snnkit.deploy.loihi.graph import LoihiGraph

NETX_BIAS_SHIFT = 6
BIAS_MANT_RANGE = (-4096, 4095)  # Loihi 2's 13-bit bias mantissa


def _chain(lg: LoihiGraph):
    """Layers in depth order with their feed-forward and recurrent projection (or reasons they are not a chain)."""
    reasons = []
    layers = sorted(lg.layers, key=lambda l: l.depth)
    chain = []
    prev = lg.input.name
    for i, layer in enumerate(layers):
        if layer.depth != i + 1:
            reasons.append(f"layer {layer.name!r}: more than one layer at depth {layer.depth} (netx is sequential)")
            break
        ins = lg.into(layer.name)
        ff = [p for p in ins if not p.recurrent]
        rec = [p for p in ins if p.recurrent]
        if len(ff) != 1 or ff[0].src != prev:
            reasons.append(f"layer {layer.name!r}: not fed by exactly the previous layer (netx is sequential)")
            break
        if len(rec) > 1:
            reasons.append(f"layer {layer.name!r}: more than one recurrent projection")
        chain.append((layer, ff[0], rec[0] if rec else None))
        prev = layer.name
    if not reasons and layers and layers[-1].name != lg.output:
        reasons.append("the output is not the last layer")
    return chain, reasons


def netx_fit(lg: LoihiGraph) -> list[str]:
    """Why ``lg`` cannot be written as a netx file (an empty list: it can)."""
    chain, reasons = _chain(lg)
    for layer, ff, rec in chain:
        for p in (ff, rec):
            if p is None:
                continue
            if p.weight_exp != 0:
                reasons.append(f"projection {p.name!r}: weight exponent {p.weight_exp} (netx stores 8-bit "
                               f"effective weights; quantize with weight_exp_range=(0, 0))")
            if p.kind == "conv" and p.recurrent:
                reasons.append(f"projection {p.name!r}: recurrent convolution")
            if p.kind != "conv" and not np.any(p.effective_weight()):
                reasons.append(f"projection {p.name!r}: all weights are zero (netx cannot encode that matrix)")
        if ff.kind == "conv" and len(lg.source_shape(ff.src)) != 3:
            reasons.append(f"projection {ff.name!r}: convolution of a flat layer")
        if ff.kind != "conv" and len(layer.shape) == 3:
            reasons.append(f"layer {layer.name!r}: dense projection into a 3-D layer")
        if layer.reset == "subtract":
            reasons.append(f"layer {layer.name!r}: reset by subtraction, which netx's CUBA neuron cannot express "
                           "(Loihi 2 hardware needs a microcode neuron for it; the lava target runs snnkit's "
                           "LIFSubtractReset)")
        if layer.readout:
            reasons.append(f"layer {layer.name!r}: a non-spiking {layer.kind} readout (netx's blocks spike; the "
                           "lava target records the potential with snnkit's LIFReadout)")
        if len(layer.groups()) > 1:
            reasons.append(f"layer {layer.name!r}: decays differ between its neurons (a netx block has one du and "
                           "dv; the lava target runs one process per group)")
    return reasons


def _neuron_group(g, layer) -> None:
    n = g.create_group("neuron")
    n.create_dataset("type", (1,), "S10", [b"CUBA"])
    n.create_dataset("iDecay", data=np.int64(layer.du + 1))
    n.create_dataset("vDecay", data=np.int64(layer.dv))
    n.create_dataset("vThMant", data=np.int64(layer.vth))
    n.create_dataset("refDelay", data=np.int64(1))
    n.create_dataset("gradedSpike", data=np.bool_(False))


def _bias(g, layer, notes: list[str]) -> None:
    b = layer.bias_int().reshape(-1)
    if not np.any(b):
        return
    q = np.rint(b / 2 ** NETX_BIAS_SHIFT).astype(np.int64)
    err = int(np.abs(q * 2 ** NETX_BIAS_SHIFT - b).max())
    if err:
        notes.append(f"layer {layer.name!r}: netx applies bias << 6, so biases are rounded to multiples of 64 "
                     f"(largest change {err} of threshold {layer.vth << 6})")
    clipped = int(np.count_nonzero((q < BIAS_MANT_RANGE[0]) | (q > BIAS_MANT_RANGE[1])))
    if clipped:
        notes.append(f"layer {layer.name!r}: {clipped} biases exceed Loihi's 13-bit mantissa at netx's exponent 6 "
                     "and were clipped")
        q = np.clip(q, *BIAS_MANT_RANGE)
    if len(layer.shape) == 3:  # netx's conv blocks take one bias per channel, or one per neuron in (W, H, C)
        per_c = q.reshape(layer.shape[0], -1)
        if np.all(per_c == per_c[:, :1]):
            q = per_c[:, 0].copy()
        else:
            q = q.reshape(layer.shape).transpose(2, 1, 0).copy()
    g.create_dataset("bias", data=q)


def write_netx(lg: LoihiGraph, path: str | os.PathLike) -> list[str]:
    """Write ``lg`` as a netx HDF5 file at ``path`` (atomically); returns notes on what was rounded.

    Raises ValueError (one line) when the graph does not fit the format (see :func:`netx_fit`).
    """
    import h5py

    reasons = netx_fit(lg)
    if reasons:
        raise ValueError(f"{path}: the graph does not fit lava-dl's netx format: {reasons[0]}")
    chain, _ = _chain(lg)
    notes: list[str] = []
    path = Path(path)
    buf = io.BytesIO()  # built in memory, written atomically: a failed write leaves nothing behind
    with h5py.File(buf, "w") as f:
        f.attrs["generator"] = "snnkit.deploy.loihi.netx"
        f.attrs["input_name"] = lg.input.name
        f.attrs["input_mode"] = lg.input.mode
        f.attrs["input_message_bits"] = int(lg.input.message_bits)
        f.attrs["input_scale"] = float(lg.input.scale)
        f.attrs["input_max_int"] = int(lg.input.max_int)
        f.attrs["dt"] = float(lg.dt)
        root = f.create_group("layer")
        idx = 0

        def group(kind: str, shape) -> "h5py.Group":
            nonlocal idx
            g = root.create_group(str(idx))
            g.create_dataset("type", (1,), "S10", [kind.encode()])
            if shape is not None:
                g.create_dataset("shape", data=np.asarray(shape, dtype=np.int64))
            idx += 1
            return g

        group("input", lg.input.shape)
        prev_shape = tuple(lg.input.shape)
        for layer, ff, rec in chain:
            if ff.kind == "conv":
                g = group("conv", layer.shape)
                g.create_dataset("weight", data=ff.effective_weight().astype(np.int64))
                g.create_dataset("stride", data=np.asarray(ff.stride, dtype=np.int64))
                g.create_dataset("padding", data=np.asarray(ff.padding, dtype=np.int64))
                g.create_dataset("dilation", data=np.asarray(ff.dilation, dtype=np.int64))
                g.create_dataset("groups", data=np.int64(ff.groups))
            else:
                if len(prev_shape) == 3:
                    group("flatten", None)
                g = group("dense_rec" if rec is not None else "dense", (layer.size,))
                g.create_dataset("weight", data=ff.effective_weight().astype(np.int64))
                if rec is not None:
                    g.create_dataset("weight_rec", data=rec.effective_weight().astype(np.int64))
            g.attrs["name"] = layer.name
            g.attrs["kind"] = layer.kind
            g.attrs["projection"] = ff.name
            if rec is not None:
                g.attrs["projection_rec"] = rec.name
            _bias(g, layer, notes)
            _neuron_group(g, layer)
            prev_shape = tuple(layer.shape)
    write_bytes(path, buf.getvalue())
    if lg.input.message_bits:
        notes.append(f"graded input: create netx's Network with input_message_bits={lg.input.message_bits}")
    return notes


def export_netx(graph, loihi: LoihiGraph, path: str | os.PathLike, *, source: str = "graph", **options
                ) -> tuple[Path | None, list[str]]:
    """Write lava-dl's netx HDF5 for ``graph`` where it fits that format (for Loihi 2 hardware users).

    graph: the float graph as the target resolved it; loihi: its quantisation for the lava target; options:
    the target's quantisation options. netx stores 8-bit effective weights with no per-layer weight exponent,
    so when that quantisation chose exponents other than 0, the netx file is quantised again, with the same
    options and exponent 0 (said in the notes). Returns the file written (None when the graph does not fit)
    and notes. :func:`snnkit.deploy.loihi.netx_check.verify_netx` checks the file and measures what it costs.
    """
    from snnkit.deploy.loihi.quantize import quantize

    notes: list[str] = []
    if netx_fit(loihi):
        alt = quantize(graph, source=source, **{**options, "weight_exp_range": (0, 0)})
        if netx_fit(alt):
            return None, [f"not written: {netx_fit(alt)[0]}"]
        notes.append("quantised separately with weight exponent 0 (netx has no per-layer weight exponent); the "
                     "loihi/ parameters keep the finer exponents the lava target runs")
        loihi = alt
    notes += write_netx(loihi, path)
    return Path(path), notes

"""Read a lava-dl netx HDF5 file back into the :class:`LoihiGraph` that lava-dl's netx runs on Lava (numpy only).

``lava.lib.dl.netx.hdf5.Network`` (lava-dl 0.6.0, read from its source, not copied) does not hand Lava the
integers in the file unchanged. Per block:

- **dense / dense_rec**: the stored effective weights are re-encoded for Loihi's synapse: a shift ``s`` is
  chosen from the extreme weights (netx's sign classes: all negative ``-256 / min``; all non-negative
  ``255 / max``; otherwise, negatives and zeros included, ``min(127 / max, -128 / min)`` and one more bit;
  ``s = floor(log2(scale))``); the mantissas become ``w << s`` with ``weight_exp = -s``, and
  ``num_weight_bits`` counts the bits they use (their common trailing zeros are dropped). A recurrent block
  shares one encoding between its forward and recurrent matrices. Lava's Dense then clips each matrix to 8
  bits for the sign mode it finds (negatives and zeros: inhibitory), truncates it to ``num_weight_bits`` on
  the first step, and floor-shifts every accumulated sum by ``weight_exp``. Usually that is exact (the
  shifted weights keep their trailing zeros); a matrix with no positive weight whose most negative weight is
  a power of two is not: ``-256`` clips to ``-255`` and the truncation then rounds it.
- **conv**: the kernel goes to Lava's Conv as it is (flipped into Lava's layout), no exponent.
- **neurons** (``CUBA``): ``du = iDecay - 1``, ``dv = vDecay``, ``vth = vThMant``, ``bias_mant = bias`` with
  ``bias_exp = 6``; a bias is one value per neuron (dense), per channel or per neuron (conv, in Lava's
  ``(W, H, C)`` order).
- **time**: block ``k`` (counting from 1) is a ``LIFReset`` with ``reset_offset = r + k`` for the
  ``reset_offset = r`` given to ``Network``; snnkit's layers reset at ``1 + depth``, so netx runs snnkit's
  time alignment with ``Network(..., reset_offset=1)``.

:func:`read_netx` returns the graph those steps produce, so that ``loihi-emu`` runs exactly the integers
netx gives Lava, and notes where they differ from the file's. Files with what snnkit never writes (synaptic
delays, graded output spikes, input neurons, Sigma-Delta or resonate-and-fire neurons) are refused in one line.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from snnkit.deploy.loihi.graph import ACT_SHIFT, DECAY_UNITY, InputSpec, LoihiGraph, NeuronLayer, Projection

NETX_BIAS_EXP = 6  # netx gives every CUBA neuron bias_exp = 6


class NetxReadError(ValueError):
    """A netx file snnkit cannot read back: one line naming the file and the problem."""


def netx_synapse(weight: np.ndarray) -> tuple[np.ndarray, int, int]:
    """netx's encoding of effective integer weights for Lava's Dense: ``(mantissas, weight_exp, num_weight_bits)``.

    A :class:`Projection` with these three runs what netx hands Lava (its ``effective_weight`` applies the
    clip and truncation Lava's Dense does on the first step).
    """
    w = np.asarray(weight, dtype=np.int64)
    w_max, w_min = int(w.max(initial=0)), int(w.min(initial=0))
    if w_max == 0 and w_min == 0:
        raise ValueError("an all-zero weight matrix (lava-dl's netx cannot encode it)")
    if w_max < 0:  # netx's sign classes; a matrix of negatives and zeros counts as mixed
        signed, scale = 0, -256.0 / w_min
    elif w_min >= 0:
        signed, scale = 0, 255.0 / w_max
    else:
        w = np.clip(w, -256, 254)
        w_max, w_min = int(w.max()), int(w.min())
        signed = 1
        scale = min(127.0 / w_max if w_max > 0 else np.inf, -128.0 / w_min)
    shift = int(np.floor(np.log2(scale))) + signed
    zeros = 8  # the common trailing zero bits of w, at most 8
    while zeros > 0 and np.any(w % (1 << zeros)):
        zeros -= 1
    num_bits = 8 - shift - (zeros - signed)
    return (w << shift).astype(np.int32), -shift, int(num_bits)


def _str(ds) -> str:
    v = ds[()]
    v = v[0] if getattr(v, "shape", ()) else v
    return v.decode("ascii") if isinstance(v, bytes) else str(v)


def _int(g, key: str) -> int:
    return int(np.asarray(g[key][()]).reshape(-1)[0])


def _pair(v) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def read_netx(path: str | os.PathLike, *, input_message_bits: int | None = None) -> LoihiGraph:
    """The :class:`LoihiGraph` lava-dl's netx builds from the file at ``path`` (see the module docstring).

    input_message_bits: what would be given to ``Network(input_message_bits=...)``; default: the file's
        ``input_message_bits`` attribute (snnkit writes it), else 0 (binary input spikes).
    The graph's ``report`` holds ``{"source": path, "netx": {"notes": [...]}}``: where netx's integers differ
    from the file's.
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise NetxReadError(f"{path}: not a netx HDF5 file ({e})") from None
    with f:
        try:
            return _read(f, path, input_message_bits)
        except NetxReadError:
            raise
        except (KeyError, ValueError, TypeError) as e:
            raise NetxReadError(f"{path}: {e}") from None


def _read(f, path: Path, input_message_bits: int | None) -> LoihiGraph:
    if "layer" not in f:
        raise NetxReadError(f"{path}: no 'layer' group (not a netx network file)")
    attrs = f.attrs
    groups = [f["layer"][k] for k in sorted(f["layer"], key=int)]
    bits = int(attrs.get("input_message_bits", 0) if input_message_bits is None else input_message_bits)
    mode = str(attrs.get("input_mode", "analog" if bits else "spikes"))
    in_name = str(attrs.get("input_name", "input"))
    if not groups or _str(groups[0]["type"]) != "input":
        raise NetxReadError(f"{path}: the first layer is not an input layer")
    if "neuron" in groups[0]:
        raise NetxReadError(f"{path}: an input layer with neurons is not supported (snnkit writes none)")
    in_shape = tuple(int(v) for v in groups[0]["shape"][()])
    spec = InputSpec(name=in_name, shape=in_shape, mode=mode, scale=float(attrs.get("input_scale", 1.0)),
                     max_int=int(attrs.get("input_max_int", 2 ** max(bits - 1, 0) - 1 if bits else 1)),
                     message_bits=bits)
    layers: list[NeuronLayer] = []
    projections: list[Projection] = []
    notes: list[str] = []
    prev, prev_shape = in_name, in_shape
    for i, g in enumerate(groups[1:], start=1):
        kind = _str(g["type"])
        if kind == "flatten":
            continue
        if kind not in ("dense", "dense_rec", "conv"):
            raise NetxReadError(f"{path}: layer {i}: type {kind!r} is not supported (input, flatten, dense, "
                                "dense_rec, conv)")
        if "delay" in g:
            raise NetxReadError(f"{path}: layer {i}: synaptic delays are not supported")
        depth = len(layers) + 1
        name = str(g.attrs.get("name", f"layer{depth}"))
        shape = tuple(int(v) for v in g["shape"][()])
        if kind != "conv":
            shape = (int(np.prod(shape)),)
        vth, du, dv = _neuron(g, path, i)
        bias = _bias(g, shape, path, i)
        msg_bits = bits if depth == 1 else 0
        pname = str(g.attrs.get("projection", f"{prev}->{name}"))
        if kind == "conv":
            w = g["weight"][()].astype(np.int64)
            w = w.reshape(w.shape[:4])
            proj = Projection(name=pname, nodes=[], src=prev, dst=name, kind="conv", weight=w.astype(np.int32),
                              weight_exp=0, weight_f=_float_weight(w, 0, vth, spec, depth),
                              message_bits=msg_bits, stride=_pair(g["stride"][()]),
                              padding=_pair(g["padding"][()]), dilation=_pair(g["dilation"][()]),
                              groups=_int(g, "groups"), in_shape=tuple(prev_shape), out_shape=shape)
            projs = [proj]
        else:
            w = g["weight"][()].astype(np.int64).reshape(shape[0], -1)
            rec = kind == "dense_rec"
            both = np.hstack([w, g["weight_rec"][()].astype(np.int64).reshape(shape[0], -1)]) if rec else w
            try:
                mant, exp, nbits = netx_synapse(both)
            except ValueError as e:
                raise NetxReadError(f"{path}: layer {i}: {e}") from None
            n_in = w.shape[1]
            projs = [Projection(name=pname, nodes=[], src=prev, dst=name, kind="dense", weight=mant[:, :n_in],
                                weight_exp=exp, weight_f=_float_weight(mant[:, :n_in], exp, vth, spec, depth),
                                message_bits=msg_bits, num_weight_bits=nbits)]
            if rec:
                projs.append(Projection(name=str(g.attrs.get("projection_rec", f"{name}->{name}")), nodes=[],
                                        src=name, dst=name, kind="dense", weight=mant[:, n_in:], weight_exp=exp,
                                        weight_f=_float_weight(mant[:, n_in:], exp, vth, spec, 0),
                                        recurrent=True, message_bits=msg_bits, num_weight_bits=nbits))
            _changed(both, projs, notes, name)
        layers.append(NeuronLayer(
            name=name, kind=str(g.attrs.get("kind", "CUBA")), shape=shape, depth=depth, du=du, dv=dv, vth=vth,
            bias_mant=bias.astype(np.int32), bias_exp=np.full(shape, NETX_BIAS_EXP, dtype=np.int32),
            du_f=(du + 1) / DECAY_UNITY, dv_f=dv / DECAY_UNITY,
            bias_f=bias * 2.0 ** NETX_BIAS_EXP / float(vth << ACT_SHIFT)))
        projections += projs
        prev, prev_shape = name, shape
    if not layers:
        raise NetxReadError(f"{path}: no synapse layers")
    return LoihiGraph(input=spec, layers=layers, projections=projections, output=layers[-1].name,
                      dt=float(attrs.get("dt", 1e-4)), report={"source": str(path), "netx": {"notes": notes}})


def _neuron(g, path: Path, i: int) -> tuple[int, int, int]:
    if "neuron" not in g:
        raise NetxReadError(f"{path}: layer {i}: no neuron group")
    n = g["neuron"]
    ntype = _str(n["type"])
    if ntype not in ("CUBA", "LOIHI"):
        raise NetxReadError(f"{path}: layer {i}: neuron type {ntype!r} is not supported (CUBA)")
    if "messageBits" in n and _int(n, "messageBits"):
        raise NetxReadError(f"{path}: layer {i}: graded output spikes are not supported")
    return _int(n, "vThMant"), _int(n, "iDecay") - 1, _int(n, "vDecay")


def _bias(g, shape: tuple[int, ...], path: Path, i: int) -> np.ndarray:
    """The per-neuron bias mantissa netx gives Lava, in torch layout ``shape``."""
    if "bias" not in g:
        return np.zeros(shape, dtype=np.int64)
    b = g["bias"][()].astype(np.int64)
    if len(shape) == 1:
        return np.broadcast_to(b.reshape(-1) if b.size > 1 else b.reshape(()), shape).copy()
    c, h, w = shape
    if b.shape == (w, h, c):  # per neuron, Lava's (W, H, C)
        return b.transpose(2, 1, 0).copy()
    if b.shape == (c,):  # per channel
        return np.broadcast_to(b[:, None, None], shape).copy()
    raise NetxReadError(f"{path}: layer {i}: bias of shape {b.shape} does not fit a layer of shape (W, H, C) = "
                        f"{(w, h, c)}")


def _changed(stored: np.ndarray, projs: list[Projection], notes: list[str], name: str) -> None:
    """Note where the weights Lava runs from netx's encoding differ from the ``stored`` ones."""
    exp = projs[0].weight_exp
    got = np.hstack([p.effective_weight() for p in projs]).astype(np.float64) * 2.0 ** exp
    diff = int(np.count_nonzero(got != stored))
    if diff:
        notes.append(f"layer {name!r}: netx's re-encoding of the weights (weight_exp {exp}) changes {diff} of "
                     f"{stored.size} weights (largest change {float(np.abs(got - stored).max()):g})")


def _float_weight(mant: np.ndarray, exp: int, vth: int, spec: InputSpec, depth: int) -> np.ndarray:
    """Threshold units per input unit (for Lava's floating_pt models; not used by netx)."""
    scale = spec.scale if depth == 1 else 1.0
    return mant.astype(np.float64) * 2.0 ** exp / (vth * scale)

"""Build and run Lava processes for a :class:`LoihiGraph` (imported only by the Lava worker: needs lava).

Layout: Lava's Conv works on ``(W, H, C)`` arrays with a true convolution and kernels ``(C_out, kW, kH, C_in)``;
snnkit (and NIR, and torch) use ``(C, H, W)`` with a cross-correlation. Every 3-D layer is built in Lava's
layout; its spikes reach Dense/Sparse inputs and the recorders through ``transpose([2, 1, 0]).flatten()``
(torch's flatten order) and Conv kernels are flipped and transposed.

Samples: ``B`` samples of ``T`` steps run back to back in one Lava run, each in a slot of ``P = T + delay``
steps. A layer at depth ``k`` is a ``LIFReset`` (``LIFSubtractReset`` for reset by subtraction,
``snnkit.deploy.lava.procs.subtract``) that zeroes ``u`` and ``v`` at slot step ``k`` (Lava step
``j P + k + 1``), when the sample's first input reaches it. A recurrent projection's buffer still holds the
previous slot's last spikes at that moment, so the run pauses just before each such step and zeroes it
(``Var.set``; recurrent graphs only).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.io.source import RingBuffer
from lava.proc.lif.process import LIFReset
from lava.proc.sparse.process import Sparse
from scipy.sparse import csr_matrix

from snnkit.deploy.lava.procs.recorder import RasterRecorder
from snnkit.deploy.lava.procs.subtract import LIFSubtractReset
from snnkit.deploy.loihi.graph import LoihiGraph, Projection

TAGS = ("fixed_pt", "floating_pt")


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Lava's shape for a torch-layout shape: ``(C, H, W) -> (W, H, C)``, anything else flattened."""
    if len(shape) == 3:
        return (shape[2], shape[1], shape[0])
    return (int(np.prod(shape)),)


def to_lava(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-neuron array in torch layout ``shape`` -> Lava layout."""
    a = np.asarray(a).reshape(shape)
    return a.transpose(2, 1, 0).copy() if len(shape) == 3 else a.reshape(-1).copy()


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch ``[O, C, kH, kW]`` cross-correlation kernel -> Lava ``[O, kW, kH, C]`` convolution kernel."""
    return np.ascontiguousarray(np.flip(w, axis=(2, 3)).transpose(0, 3, 2, 1))


class LavaNetwork:
    """The Lava processes of one run: ``B`` samples ``x [B, T, *input_shape]`` streamed through ``lg``.

    tag: ``"fixed_pt"`` (bit-accurate models; ``x`` holds the input integers) or ``"floating_pt"`` (float
    models with the ``*_f`` parameters; ``x`` holds the float input).
    workdir: where the recorders' files go.
    """

    def __init__(self, lg: LoihiGraph, x: np.ndarray, tag: str, workdir: Path):
        self._stream(lg, x, tag, workdir)
        self.neurons = {}
        for layer in lg.layers:
            shape = tuple(layer.shape)
            common = dict(shape=lava_shape(shape), reset_interval=self.period,
                          reset_offset=(1 + layer.depth) % self.period, name=f"lif:{layer.name}")
            lif = LIFSubtractReset if layer.reset == "subtract" else LIFReset
            if self.fixed:
                proc = lif(du=int(layer.du), dv=int(layer.dv), vth=int(layer.vth),
                           bias_mant=to_lava(layer.bias_mant, shape).astype(np.int32),
                           bias_exp=to_lava(layer.bias_exp, shape).astype(np.int32), **common)
            else:
                proc = lif(du=float(layer.du_f), dv=float(layer.dv_f), vth=1.0,
                           bias_mant=to_lava(layer.bias_f, shape).astype(np.float64), bias_exp=0, **common)
            self.neurons[layer.name] = proc
            self.out_ports[layer.name] = (proc.s_out, shape)

        self.synapses = []
        self.recurrent = []  # (process, depth) whose buffers are zeroed at each slot's reset step
        for p in lg.projections:
            proc = self._projection(p)
            self.synapses.append(proc)
            src_port, src_shape = self.out_ports[p.src]
            dst = self.neurons[p.dst]
            if p.kind == "conv":
                src_port.connect(proc.s_in)
                proc.a_out.connect(dst.a_in)
            else:
                _flat(src_port, src_shape).connect(proc.s_in)
                dst_shape = tuple(lg.layer(p.dst).shape)
                out = proc.a_out
                if len(dst_shape) == 3:
                    out = out.reshape(dst_shape).transpose([2, 1, 0])
                out.connect(dst.a_in)
            if p.recurrent:
                self.recurrent.append((proc, lg.layer(p.dst).depth))
        self._record()

    def _stream(self, lg: LoihiGraph, x: np.ndarray, tag: str, workdir: Path) -> None:
        """The run's bookkeeping and its input: ``B`` samples in slots of ``P = T + delay`` steps in a
        ``RingBuffer`` (``self.source``; its port is ``self.out_ports[input name]``)."""
        if tag not in TAGS:
            raise ValueError(f"unknown Lava tag {tag!r} ({', '.join(TAGS)})")
        self.lg = lg
        self.tag = tag
        self.fixed = tag == "fixed_pt"
        b, t = x.shape[:2]
        self.batch, self.timesteps = b, t
        self.period = lg.steps_out(t)
        self.total = b * self.period
        self.workdir = Path(workdir)
        self.cfg = Loihi2SimCfg(select_tag=tag)
        self._started = False

        stream = np.zeros((b, self.period, *x.shape[2:]), dtype=np.int32 if self.fixed else np.float64)
        stream[:, :t] = x
        stream = stream.reshape(self.total, *x.shape[2:])
        in_shape = tuple(lg.input.shape)
        data = (stream.transpose(3, 2, 1, 0) if len(in_shape) == 3 else stream.reshape(self.total, -1).T)
        self.source = RingBuffer(data=np.ascontiguousarray(data))
        self.out_ports = {lg.input.name: (self.source.s_out, in_shape)}

    def _record(self) -> None:
        """A recorder on every layer's spikes (``self.out_ports``), writing into ``workdir``."""
        self.files = {}
        self.recorders = []
        for i, layer in enumerate(self.lg.layers):
            path = self.workdir / f"raster_{i}.u8"
            np.memmap(path, dtype=np.uint8, mode="w+", shape=(self.total, layer.size)).flush()
            rec = RasterRecorder(n=layer.size, steps=self.total, path=str(path))
            _flat(*self.out_ports[layer.name]).connect(rec.a_in)
            self.files[layer.name] = path
            self.recorders.append(rec)

    def _projection(self, p: Projection):
        if p.kind == "conv":
            cin = p.in_shape[0]
            kw = dict(input_shape=lava_shape(tuple(p.in_shape)), padding=(p.padding[1], p.padding[0]),
                      stride=(p.stride[1], p.stride[0]), dilation=(p.dilation[1], p.dilation[0]),
                      groups=int(p.groups), num_message_bits=int(p.message_bits), name=f"conv:{p.name}")
            if cin % int(p.groups):
                raise ValueError(f"projection {p.name}: {cin} input channels, groups={p.groups}")
            if self.fixed:
                return Conv(weight=conv_kernel(p.effective_weight()).astype(np.int32), **kw)
            return Conv(weight=conv_kernel(p.weight_f).astype(np.float64), **kw)
        if self.fixed:
            w = p.weight.astype(np.int32)
            kw = dict(weight_exp=int(p.weight_exp), num_weight_bits=int(p.num_weight_bits),
                      num_message_bits=int(p.message_bits))
        else:
            w = p.weight_f.astype(np.float64)
            kw = dict(num_message_bits=int(p.message_bits))
        if p.kind == "sparse":
            return Sparse(weights=csr_matrix(w), name=f"sparse:{p.name}", **kw)
        return Dense(weights=w, name=f"dense:{p.name}", **kw)

    # --- running -----------------------------------------------------------------------------------------
    def stops(self) -> list[int]:
        """Lava step counts after which to pause (recurrent buffers are zeroed there), ending with the total."""
        points = {self.total}
        for _, depth in self.recurrent:
            points.update(j * self.period + depth for j in range(self.batch))
        return sorted(s for s in points if 0 < s <= self.total)

    def run(self) -> None:
        """Run all samples; call :meth:`stop` afterwards in every case."""
        done = 0
        for s in self.stops():
            if s > done:
                self._started = True
                self.source.run(condition=RunSteps(num_steps=s - done), run_cfg=self.cfg)
                done = s
            for proc, depth in self.recurrent:
                if s < self.total and s % self.period == depth % self.period:
                    zero = np.zeros(proc.a_buff.shape, dtype=np.int32 if self.fixed else np.float64)
                    proc.a_buff.set(zero)

    def stop(self) -> None:
        """Stop Lava's runtime if it was started (an error while stopping is printed, not raised, so that it
        does not hide the error that led here; a runtime that does not stop is killed by the host's timeout)."""
        if self._started:
            self._started = False
            try:
                self.source.stop()
            except Exception as e:  # noqa: BLE001
                print(f"lava: stopping the runtime failed: {type(e).__name__}: {e}", file=sys.stderr)

    def rasters(self) -> dict[str, np.ndarray]:
        """Layer name -> spikes ``[B, T + delay, n]`` (uint8), zero before each layer's depth."""
        out = {}
        for layer in self.lg.layers:
            r = np.array(np.memmap(self.files[layer.name], dtype=np.uint8, mode="r",
                                   shape=(self.total, layer.size)))
            r = r.reshape(self.batch, self.period, layer.size)
            r[:, :layer.depth] = 0
            out[layer.name] = r
        return out


def _flat(port, shape: tuple[int, ...]):
    """A port of Lava layout ``shape`` as a flat vector in torch's flatten order."""
    return port.transpose([2, 1, 0]).flatten() if len(shape) == 3 else port

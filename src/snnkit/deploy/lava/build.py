"""Build and run Lava processes for a :class:`LoihiGraph` (imported only by the Lava worker: needs lava).

Layout: Lava's Conv works on ``(W, H, C)`` arrays with a true convolution and kernels ``(C_out, kW, kH, C_in)``;
snnkit (and NIR, and torch) use ``(C, H, W)`` with a cross-correlation. Every 3-D layer is built in Lava's
layout; its spikes reach Dense/Sparse inputs and the recorders through ``transpose([2, 1, 0]).flatten()``
(torch's flatten order) and Conv kernels are flipped and transposed.

Samples: ``B`` samples of ``T`` steps run back to back in one Lava run, each in a slot of ``P = T + delay``
steps. A layer at depth ``k`` is a ``LIFReset`` (``LIFSubtractReset`` for reset by subtraction,
``snnkit.deploy.lava.procs.subtract``; ``LIFReadout`` for an LI/CubaLI readout, ``procs.readout``) that zeroes
``u`` and ``v`` at slot step ``k`` (Lava step ``j P + k + 1``), when the sample's first input reaches it; what
arrives earlier (the previous sample's last spikes, through relays too) is discarded by that reset. A recurrent
projection's buffer still holds the previous slot's last spikes at that moment, so the run pauses just before
each such step and zeroes it (``Var.set``; recurrent graphs only).
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
from lava.utils.weightutils import determine_sign_mode
from scipy.sparse import csr_matrix

from snnkit.deploy.lava.procs.readout import LIFReadout
from snnkit.deploy.lava.procs.recorder import RasterRecorder
from snnkit.deploy.lava.procs.subtract import LIFSubtractReset
from snnkit.deploy.loihi.graph import ACT_SHIFT, LoihiGraph, Projection, relay_chains

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

    A layer is one process per group of equal decays (:meth:`NeuronLayer.groups`; Lava holds ``du``/``dv`` per
    process). Lava 0.10 cannot concatenate ports, so every group process has the layer's full shape: its
    incoming connections carry only its own neurons' rows (output channels for a Conv) and keep the sign mode
    of the whole matrix, its other neurons get no input and no bias and never fire, and every consumer of the
    layer receives the groups' spikes summed at its input port (each neuron fires in one group only).
    A projection with a ``delay`` reads a relay chain of its layer source, or a delayed copy of the input.
    """

    def __init__(self, lg: LoihiGraph, x: np.ndarray, tag: str, workdir: Path):
        self._stream(lg, x, tag, workdir)
        self.neurons = []  # every neuron process (relays included)
        self.groups: dict[str, list] = {}  # layer name -> [(process, member mask)]
        for layer in lg.layers:
            self._layer(layer)
        self.synapses = []
        self.recurrent = []  # (process, depth) whose buffers are zeroed at each slot's reset step
        self._relays()
        for p in lg.projections:
            self._connect(p)
        self._record()

    def _lif(self, cls, shape, depth: int, name: str, **params):
        """One neuron process of torch-layout ``shape`` at ``depth`` (reset when its sample's input arrives)."""
        proc = cls(shape=lava_shape(shape), reset_interval=self.period, reset_offset=(1 + depth) % self.period,
                   name=name, **params)
        self.neurons.append(proc)
        return proc

    def _layer(self, layer) -> None:
        """The layer's processes, one per group of equal decays, each with the layer's full shape."""
        shape = tuple(layer.shape)
        cls = LIFReadout if layer.readout else LIFSubtractReset if layer.reset == "subtract" else LIFReset
        members = []
        for g, idx in enumerate(layer.groups(self.fixed)):
            mask = np.zeros(layer.size, dtype=bool)
            mask[idx] = True
            i = int(idx[0])
            if self.fixed:
                bias = np.where(mask, layer.bias_mant.reshape(-1), 0)  # the other neurons: no bias
                params = dict(du=int(layer.per_neuron("du")[i]), dv=int(layer.per_neuron("dv")[i]),
                              vth=int(layer.vth), bias_exp=to_lava(layer.bias_exp, shape).astype(np.int32),
                              bias_mant=to_lava(bias, shape).astype(np.int32))
            else:
                bias = np.where(mask, layer.bias_f.reshape(-1), 0.0)
                params = dict(du=float(layer.per_neuron("du_f")[i]), dv=float(layer.per_neuron("dv_f")[i]),
                              vth=1.0, bias_mant=to_lava(bias, shape).astype(np.float64), bias_exp=0)
            if layer.readout:
                path = self.workdir / f"trace_{len(self.neurons)}.f8"
                np.memmap(path, dtype=np.float64, mode="w+", shape=(self.total, layer.size)).flush()
                self.traces.setdefault(layer.name, []).append(path)
                params.update(steps=self.total, path=str(path))
            members.append((self._lif(cls, shape, layer.depth, f"lif:{layer.name}:{g}", **params), mask))
        self.groups[layer.name] = members
        self.out_ports[layer.name] = ([proc.s_out for proc, _ in members], shape)

    def _relays(self) -> None:
        """For each delayed source (:func:`relay_chains`): relay layers after a layer (IF neurons, threshold 0,
        identity weights: each fires exactly when its input spiked, one step later), or a copy of the input
        stream that many steps later. ``self.out_ports[(source, k)]``: the source ``k`` steps later."""
        for src, steps in relay_chains(self.lg).items():
            if src == self.lg.input.name:
                for k in sorted({p.delay for p in self.lg.projections if p.src == src and p.delay}):
                    self.sources.append(self._source(k))
                    self.out_ports[(src, k)] = ([self.sources[-1].s_out], tuple(self.lg.input.shape))
                continue
            ports, shape = self.out_ports[src]
            n = int(np.prod(shape))
            depth = self.lg.layer(src).depth
            for k in range(1, steps + 1):
                params = (dict(du=4095, dv=0, vth=0, bias_mant=0, bias_exp=0) if self.fixed
                          else dict(du=1.0, dv=0.0, vth=0.5, bias_mant=0.0, bias_exp=0))
                relay = self._lif(LIFReset, shape, depth + k, f"relay:{src}:{k}", **params)
                eye = csr_matrix(np.eye(n, dtype=np.int32 if self.fixed else np.float64))
                conn = Sparse(weights=eye, name=f"relay:{src}:{k}")
                self.synapses.append(conn)
                self._wire(ports, shape, conn, "sparse", relay, shape)
                ports = [relay.s_out]
                self.out_ports[(src, k)] = (ports, shape)

    def _connect(self, p: Projection) -> None:
        """``p`` as one connection process per group of its destination, fed by every port of its source."""
        src_ports, src_shape = self.out_ports[(p.src, p.delay) if p.delay else p.src]
        dst_shape = tuple(self.lg.layer(p.dst).shape)
        members = self.groups[p.dst]
        for proc, mask in members:
            conn = self._projection(p, None if len(members) == 1 else mask)
            self.synapses.append(conn)
            self._wire(src_ports, src_shape, conn, p.kind, proc, dst_shape)
            if p.recurrent:
                self.recurrent.append((conn, self.lg.layer(p.dst).depth))

    @staticmethod
    def _wire(src_ports: list, src_shape, conn, kind: str, dst, dst_shape) -> None:
        """Connect every source port to ``conn`` (their spikes add up there) and ``conn`` to ``dst``, in the
        layouts each side expects."""
        for port in src_ports:
            (port if kind == "conv" else _flat(port, src_shape)).connect(conn.s_in)
        out = conn.a_out
        if kind != "conv" and len(dst_shape) == 3:
            out = out.reshape(dst_shape).transpose([2, 1, 0])
        out.connect(dst.a_in)

    def _source(self, delay: int) -> RingBuffer:
        """A ring buffer of the input stream with every sample ``delay`` steps later in its slot."""
        data = np.zeros_like(self.stream)
        data[:, delay:] = self.stream[:, :self.period - delay]
        data = data.reshape(self.total, *self.stream.shape[2:])
        shaped = data.transpose(3, 2, 1, 0) if len(self.lg.input.shape) == 3 else data.reshape(self.total, -1).T
        return RingBuffer(data=np.ascontiguousarray(shaped))

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
        self.traces: dict[str, list[Path]] = {}  # readout name -> one potential file per group

        self.stream = np.zeros((b, self.period, *x.shape[2:]), dtype=np.int32 if self.fixed else np.float64)
        self.stream[:, :t] = x
        self.source = self._source(0)
        self.sources = [self.source]  # the input stream, then its delayed copies
        self.out_ports = {lg.input.name: ([self.source.s_out], tuple(lg.input.shape))}

    def _record(self) -> None:
        """A recorder on every spiking layer (all its ports), writing into ``workdir``."""
        self.files = {}
        self.recorders = []
        for i, layer in enumerate(self.lg.layers):
            if layer.readout:
                continue
            path = self.workdir / f"raster_{i}.u8"
            np.memmap(path, dtype=np.uint8, mode="w+", shape=(self.total, layer.size)).flush()
            rec = RasterRecorder(n=layer.size, steps=self.total, path=str(path))
            ports, shape = self.out_ports[layer.name]
            for port in ports:
                _flat(port, shape).connect(rec.a_in)
            self.files[layer.name] = path
            self.recorders.append(rec)

    def _projection(self, p: Projection, rows: np.ndarray | None = None):
        """``p``'s Lava process; with ``rows`` (a member mask of the destination) only those neurons' weights,
        in the sign mode of the whole matrix."""
        if p.kind == "conv":
            cin = p.in_shape[0]
            kw = dict(input_shape=lava_shape(tuple(p.in_shape)), padding=(p.padding[1], p.padding[0]),
                      stride=(p.stride[1], p.stride[0]), dilation=(p.dilation[1], p.dilation[0]),
                      groups=int(p.groups), num_message_bits=int(p.message_bits), name=f"conv:{p.name}")
            if cin % int(p.groups):
                raise ValueError(f"projection {p.name}: {cin} input channels, groups={p.groups}")
            w = p.effective_weight() if self.fixed else p.weight_f
            if rows is not None:  # whole output channels (the quantiser keeps Conv only then)
                w = w * rows.reshape(p.out_shape[0], -1)[:, 0].reshape(-1, 1, 1, 1)
            return Conv(weight=conv_kernel(w).astype(np.int32 if self.fixed else np.float64), **kw)
        if self.fixed:
            w = p.weight.astype(np.int32)
            kw = dict(weight_exp=int(p.weight_exp), num_weight_bits=int(p.num_weight_bits),
                      num_message_bits=int(p.message_bits))
            if rows is not None:
                kw["sign_mode"] = determine_sign_mode(w)
        else:
            w = p.weight_f.astype(np.float64)
            kw = dict(num_message_bits=int(p.message_bits))
        if rows is not None:
            w = w * rows[:, None].astype(w.dtype)
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
        """Layer name -> spikes ``[B, T + delay, n]`` (uint8), or a readout's potential (fixed_pt: int32;
        floating_pt: float64 in the same units, ``vth << 6`` per unit), zero before each layer's depth."""
        out = {}
        for layer in self.lg.layers:
            if layer.readout:
                r = self._potential(layer)
            else:
                r = np.array(np.memmap(self.files[layer.name], dtype=np.uint8, mode="r",
                                       shape=(self.total, layer.size)))
            r = r.reshape(self.batch, self.period, layer.size)
            r[:, :layer.depth] = 0
            out[layer.name] = r
        return out

    def _potential(self, layer) -> np.ndarray:
        """A readout's ``v`` ``[steps, n]`` in torch order: its groups' traces added (each holds only its own
        neurons; the others stay at zero)."""
        total = np.zeros((self.total, layer.size))
        for path in self.traces[layer.name]:
            v = np.array(np.memmap(path, dtype=np.float64, mode="r", shape=(self.total, layer.size)))
            if len(layer.shape) == 3:
                v = v.reshape(self.total, *lava_shape(tuple(layer.shape))).transpose(0, 3, 2, 1)
            total += v.reshape(self.total, -1)
        if self.fixed:
            return np.rint(total).astype(np.int32)
        return total * (int(layer.vth) << ACT_SHIFT)

    def scratch_files(self) -> list[Path]:
        """The files the run's recorders and readouts wrote (the worker removes them)."""
        return [*self.files.values(), *(p for paths in self.traces.values() for p in paths)]


def _flat(port, shape: tuple[int, ...]):
    """A port of Lava layout ``shape`` as a flat vector in torch's flatten order."""
    return port.transpose([2, 1, 0]).flatten() if len(shape) == 3 else port

"""Bit-exact, batched torch emulation of Lava's fixed-point Loihi 2 models (``--target loihi-emu``).

It runs a :class:`~snnkit.deploy.loihi.graph.LoihiGraph` exactly as the Lava target does (lava-nc 0.10.0,
``Loihi2SimCfg(select_tag="fixed_pt")``, see docs/loihi.md), but for a whole batch at once, on CPU or GPU:

- integers are held in float64 tensors (every value stays far below 2**53, so sums, products by powers of
  two, ``floor``/``trunc`` and wrap-arounds are exact on any device and no TF32 path is involved);
- each synapse stage (Dense/Sparse/Conv) delivers on the next step, as Lava's do; Dense applies its weight
  exponent to the accumulated sum (floor shift), Conv wraps to 24 bits, every message is an int32;
- the LIF step is Lava's: current ``u`` decays toward zero and wraps at 24 bits, voltage ``v`` decays toward
  zero and saturates, fire when ``v > vth << 6``, reset ``v`` to 0 (or subtract ``vth << 6``: a layer with
  ``reset == "subtract"``, as snnkit's Lava process ``LIFSubtractReset`` does). Decays may differ per neuron
  (Lava runs such a layer as one process per group of equal decays); a readout layer never fires and
  returns its ``v`` (snnkit's ``LIFReadout``);
- a projection with a ``delay`` (a skip connection) reads its source that many steps earlier (Lava: relay
  layers, or a delayed copy of the input stream).

Feed-forward layers are computed one after the other over all steps (one matmul/convolution per projection
over every step the source is active, time-major tensors); a layer's state is then scanned step by step, in a
compiled loop on the CPU (``snnkit/nn/native/loihi_scan.h``; torch otherwise), or in autograd for a layer with a
recurrent projection in differentiable mode. On the CPU a batch runs in cache-sized chunks of samples.

``differentiable=True`` keeps every forward value bit-identical and adds straight-through gradients: the
rounding, shifts, wraps and saturation pass the gradient of their real-valued counterpart, and the spike
passes the arctan surrogate of :mod:`snnkit.nn.surrogate` (width set by the threshold; another surrogate per
layer on request). A feed-forward layer's gradient is computed in one reverse pass over its steps
(:class:`_ScanFn`), the gradient autograd would take through them (tested). This is the model adaptive attacks differentiate. Given a :class:`FloatPath`, every
synapse stage's messages and every layer's bias pass instead the gradient of the path's real-valued
counterparts, which may depend on parameters: quantisation-aware training (:mod:`snnkit.train.qat`)
differentiates the float model's weights that way, through this forward.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from snnkit.graph import DeployError
from snnkit.deploy.cache import BuildCache
from snnkit.deploy.loihi.graph import ACT_SHIFT, DECAY_UNITY, STATE_MAX, LoihiGraph, NeuronLayer, Projection
from snnkit.deploy.loihi.prepare import QuantisedTarget
from snnkit.nn.layers import time_invariant
from snnkit.nn.native import POOL, loihi_backward as native_reverse, loihi_forward as native_scan, loihi_gradient
from snnkit.nn.surrogate import ATan, Surrogate

_TWO23 = float(STATE_MAX)
_VMAX = _TWO23 - 1  # v saturates at +-(2**23 - 1)


def _wrap(x: torch.Tensor, bits: int, bound: float = math.inf) -> torch.Tensor:
    """Two's-complement wrap of integer-valued ``x`` to ``bits`` bits (gradient 1).

    ``bound``: a proven bound on ``|x|``; when it fits, the wrap is the identity and is skipped.
    """
    half = 2.0 ** (bits - 1)
    if bound < half:
        return x
    return torch.remainder(x + half, 2.0 * half) - half


def _ste(linear: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``exact`` in the forward pass, the gradient of ``linear`` in the backward pass."""
    if not linear.requires_grad:
        return exact
    return linear + (exact - linear).detach()


def _decay(x: torch.Tensor, keep: "float | torch.Tensor") -> torch.Tensor:
    """``sign(x * m) * (|x * m| >> 12)`` for ``keep = m / 4096``: multiply by ``keep``, rounding toward zero
    (exact: ``|x * m| < 2**35`` and dividing by 4096 only moves the binary point)."""
    lin = x * keep
    return _ste(lin, torch.trunc(lin))


def _conv2d_exact(x: torch.Tensor, w: torch.Tensor, stride, padding, dilation, groups: int) -> torch.Tensor:
    """torch's conv2d, computed so that integer inputs give exact integer sums.

    On the CPU ``conv2d`` accumulates products in order (direct or im2col + GEMM), which is exact for
    integers below the dtype's mantissa; cuDNN may pick Winograd/FFT algorithms, so on GPUs the
    convolution is an explicit im2col + matrix product instead.
    """
    if x.device.type == "cpu":
        return F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return conv2d_im2col(x, w, stride, padding, dilation, groups)


def conv2d_im2col(x: torch.Tensor, w: torch.Tensor, stride, padding, dilation, groups: int) -> torch.Tensor:
    """``conv2d`` as unfold + batched matrix product (exact for integers on any device)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # [N, C*kh*kw, L]
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    length = cols.shape[-1]
    cols = cols.reshape(n, groups, cg * kh * kw, length).permute(1, 0, 3, 2).reshape(groups, n * length, -1)
    wg = w.reshape(groups, o // groups, cg * kh * kw)
    y = torch.bmm(cols, wg.transpose(1, 2))  # [G, N*L, O/G]
    return y.reshape(groups, n, length, o // groups).permute(1, 0, 3, 2).reshape(n, o, ho, wo)


class _NoTF32:
    """Disable TF32 (and reduced-precision float32 matmuls) while the emulator runs; restore afterwards."""

    def __enter__(self):
        self._prec = torch.get_float32_matmul_precision()
        self._mm = torch.backends.cuda.matmul.allow_tf32
        self._cudnn = torch.backends.cudnn.allow_tf32
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        torch.set_float32_matmul_precision(self._prec)
        torch.backends.cuda.matmul.allow_tf32 = self._mm
        torch.backends.cudnn.allow_tf32 = self._cudnn
        return False


def _spike(h: torch.Tensor, thr: float, surrogate: "float | Surrogate") -> torch.Tensor:
    """Fire where ``h > thr`` (0/1 in h's dtype), differentiable: the gradient of ``surrogate`` (a float:
    :class:`snnkit.nn.surrogate.ATan` of that sharpness) on the scaled potential ``(h - thr) / thr``, so its width
    is set by the threshold."""
    surrogate = surrogate if isinstance(surrogate, Surrogate) else ATan(alpha=surrogate)
    return surrogate.spike((h - thr) / thr)


class FloatPath:
    """Real-valued counterparts of a :class:`LoihiGraph`'s integer quantities, for straight-through gradients.

    In differentiable mode an emulator given a float path computes every message and bias exactly as without it,
    and passes the gradient of :meth:`message` and :meth:`bias` instead (``exact + (float - float.detach())``).
    Both are in the emulator's integer units, so the gradient has the scale of the integers it stands for.
    """

    def message(self, p: Projection, x: torch.Tensor) -> torch.Tensor:
        """The real value of projection ``p``'s message (before ``<< 6``) for source outputs ``x [N, *src_shape]``
        (the integers the projection receives): ``[N, n_dst]``."""
        raise NotImplementedError

    def bias(self, layer: NeuronLayer) -> torch.Tensor:
        """The real value of ``layer``'s bias, in v units (threshold ``vth << 6``): ``[layer.size]``."""
        raise NotImplementedError


@dataclass
class _LayerPlan:
    """What one layer's fixed-point step needs, worked out once per emulator.

    keep_u, keep_v: the fraction of ``u`` / ``v`` a decay keeps, ``(4096 - du - 1) / 4096`` and ``(4096 - dv) / 4096``
    (a number when uniform, else a per-neuron tensor ``[n]``); keep_u_n, keep_v_n: the same as ``[n]`` float64 tensors
    for the compiled scan (None: emptied / no leak); empty_u: ``u`` is emptied every step (LIF, IF);
    no_leak: ``v`` does not decay (IF); thr: the firing threshold ``vth << 6``; feeds / recurrent: ``(index,
    projection)`` of the feed-forward and recurrent stages into the layer.

    Proven bounds (inf: no bound) let wraps and clips that cannot trigger be skipped: b_a on ``|a|`` (the summed
    messages), b_act on ``|a << 6|``, b_u on ``|u|`` before its 24-bit wrap, b_cur32 on it before its 32-bit wrap,
    b_v on ``|v|`` before its clip. A leaky state driven by inputs of at
    most ``b`` stays below ``b / (1 - keep)``; ``u`` after its wrap and ``v`` after its clip (or below its bound)
    never exceed ``2**23`` and ``2**23 - 1``.
    """

    layer: NeuronLayer
    keep_u: "float | torch.Tensor"
    keep_v: "float | torch.Tensor"
    keep_u_n: "torch.Tensor | None"
    keep_v_n: "torch.Tensor | None"
    empty_u: bool
    no_leak: bool
    thr: float
    feeds: list
    recurrent: list
    b_a: float
    b_act: float
    b_u: float
    b_cur32: float
    b_v: float


class LoihiEmulator:
    """The fixed-point network of a :class:`LoihiGraph` as batched torch operations.

    device: where tensors live (``"cpu"``, ``"cuda"``...).
    differentiable: straight-through gradients (see the module docstring); forward values are unchanged.
    surrogate_alpha: sharpness of the arctan surrogate, in units of the threshold.
    surrogates: layer name -> the surrogate its spikes use instead (on the potential in threshold units).
    float_path: a :class:`FloatPath` whose messages and biases the gradients follow (differentiable mode).
    spike_dtype: the dtype of the spike rasters (0/1): float64 in differentiable mode, else float32 by default;
        ``torch.uint8`` when they are only read back (a quarter of the memory).
    """

    CHUNK_BYTES = 4 << 20
    """Bytes of one ``[T + delay, chunk, n]`` float64 tensor of the widest layer, at most (CPU; :meth:`chunk_size`)."""

    def __init__(self, lg: LoihiGraph, device: str | torch.device = "cpu", differentiable: bool = False,
                 surrogate_alpha: float = 2.0, *, surrogates: dict[str, Surrogate] | None = None,
                 float_path: FloatPath | None = None, spike_dtype: torch.dtype | None = None):
        self.lg = lg
        self.device = torch.device(device)
        self.differentiable = differentiable
        self.surrogate_alpha = float(surrogate_alpha)
        self.surrogates = dict(surrogates or {})
        self.float_path = float_path if differentiable else None
        if differentiable and spike_dtype not in (None, torch.float64):
            raise ValueError("a differentiable emulator's spikes are float64")
        self.spike_dtype = spike_dtype or (torch.float64 if differentiable else torch.float32)
        dd = dict(device=self.device, dtype=torch.float64)
        self._w = {}
        self._acc_bound: dict[int, float] = {}  # bound on |sum of weights x inputs| before any shift
        self._msg_bound: dict[int, float] = {}  # bound on |message| as the neuron receives it
        for i, p in enumerate(lg.projections):
            w = p.effective_weight().astype(np.float64)
            # float32 sums are exact while every partial sum stays below 2**24 in magnitude
            x_max = float(lg.input.max_int) if p.src == lg.input.name else 1.0
            bound = float(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max(initial=0.0) * x_max)
            dtype = torch.float32 if bound < 2.0 ** 24 else torch.float64
            self._w[i] = torch.as_tensor(w, device=self.device, dtype=dtype)
            self._acc_bound[i] = bound
            if p.kind == "conv":
                self._msg_bound[i] = min(bound, 2.0 ** 23)
            else:
                self._msg_bound[i] = min(bound * 2.0 ** max(int(p.weight_exp), 0), 2.0 ** 31)
        self._bias = {layer.name: torch.as_tensor(layer.bias_int().reshape(-1).astype(np.float64), **dd)
                      for layer in lg.layers}
        self._plans = {layer.name: self._plan(layer) for layer in lg.layers}
        self.overflow: dict[str, dict[str, int]] = {}
        """Per layer, over the last :meth:`run`: ``u_wraps`` (current wrapped around at 24 bits) and
        ``v_saturations`` (voltage clipped), counted over samples, neurons and steps."""

    def _keep(self, layer: NeuronLayer, name: str, offset: int) -> "float | torch.Tensor":
        """``(4096 - (field + offset)) / 4096``: what of the state a decay keeps, per neuron (a number when
        uniform)."""
        keep = (DECAY_UNITY - (layer.per_neuron(name).astype(np.float64) + offset)) / DECAY_UNITY
        if np.all(keep == keep[0]):
            return float(keep[0])
        return torch.as_tensor(keep, device=self.device, dtype=torch.float64)

    def _plan(self, layer: NeuronLayer) -> _LayerPlan:
        """The layer's constants and proven bounds (see :class:`_LayerPlan`)."""
        into = [(i, p) for i, p in enumerate(self.lg.projections) if p.dst == layer.name]
        b_bias = float(self._bias[layer.name].abs().max()) if layer.size else 0.0
        b_a = sum(self._msg_bound[i] for i, _ in into)
        b_act = b_a * (1 << ACT_SHIFT)
        r_u = float(np.max(DECAY_UNITY - layer.per_neuron("du") - 1)) / DECAY_UNITY
        r_v = float(np.max(DECAY_UNITY - layer.per_neuron("dv"))) / DECAY_UNITY
        b_u = b_act / (1 - r_u) if r_u < 1 else math.inf
        b_uw = min(b_u, _TWO23)  # |u| after its wrap
        no_leak = bool(np.all(layer.per_neuron("dv") == 0))
        keep_u, keep_v = self._keep(layer, "du", 1), self._keep(layer, "dv", 0)
        per_neuron = lambda k: torch.as_tensor(k, dtype=torch.float64).expand(layer.size).contiguous()  # noqa: E731
        return _LayerPlan(
            layer=layer, keep_u=keep_u, keep_v=keep_v, keep_u_n=None if r_u == 0 else per_neuron(keep_u).cpu(),
            keep_v_n=None if no_leak else per_neuron(keep_v).cpu(), empty_u=r_u == 0,
            no_leak=no_leak, thr=float(int(layer.vth) << ACT_SHIFT),
            feeds=[(i, p) for i, p in into if not p.recurrent], recurrent=[(i, p) for i, p in into if p.recurrent],
            b_a=b_a, b_act=b_act, b_u=b_u, b_cur32=min(b_u, _TWO23 + b_act),
            b_v=(b_uw + b_bias) / (1 - r_v) if r_v < 1 else math.inf)

    # --- inputs ------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Float input ``[B, T, *shape]`` -> the integers Lava receives (float64), straight-through."""
        spec = self.lg.input
        x = x.to(device=self.device, dtype=torch.float64)
        if spec.mode == "spikes":
            return _ste(x, (x != 0).to(torch.float64))
        lin = x * spec.scale
        lo = 0.0 if spec.mode == "counts" else -float(spec.max_int)
        return _ste(lin, torch.clamp(torch.round(lin), lo, float(spec.max_int)))

    # --- one synapse stage -------------------------------------------------------------------------------
    def _project(self, i: int, p: Projection, x: torch.Tensor) -> torch.Tensor:
        """Lava's message for inputs ``x [N, *src_shape]`` (integer-valued): ``[N, n_dst]``; with a float path,
        its gradient is the path's."""
        if self.float_path is None:
            return self._message(i, p, x)
        with torch.no_grad():
            exact = self._message(i, p, x)
        return _ste(self.float_path.message(p, x).to(torch.float64), exact)

    def _message(self, i: int, p: Projection, x: torch.Tensor) -> torch.Tensor:
        w = self._w[i]
        n = x.shape[0]
        x = x.to(w.dtype)
        bound = self._acc_bound[i]
        if p.kind == "conv":
            y = _conv2d_exact(x, w, tuple(p.stride), tuple(p.padding), tuple(p.dilation), int(p.groups))
            return _wrap(y.to(torch.float64), 24, bound).reshape(n, -1)
        acc = (x.reshape(n, -1) @ w.T).to(torch.float64)
        if p.message_bits > 0:
            acc = _wrap(acc, 32, bound)  # graded messages: Lava's int32 dot product
        e = int(p.weight_exp)
        if e > 0:
            acc = acc * float(2 ** e)
        elif e < 0:
            lin = acc * 2.0 ** e
            acc = _ste(lin, torch.floor(lin))
        return _wrap(acc, 32, bound * 2.0 ** max(e, 0))

    # --- the run -----------------------------------------------------------------------------------------
    def run(self, x: torch.Tensor, *, encoded: bool = False) -> dict[str, torch.Tensor]:
        """Run a batch; returns layer name -> spikes ``[B, T + delay, n]`` (0/1, :attr:`spike_dtype`), for a
        readout its potential ``v`` (integers, float64).

        x: ``[B, T, *input_shape]`` float input (or Lava's integers when ``encoded``). Each sample starts from
        zero state; layer at depth k is zero before step k (see ``LoihiGraph``). The rasters are views of
        time-major tensors (``r.transpose(0, 1)`` is contiguous). On the CPU the batch runs in chunks of
        :meth:`chunk_size` samples.
        """
        chunk = self.chunk_size(x.shape[0], x.shape[1])
        self.overflow = {}
        with _NoTF32(), torch.set_grad_enabled(self.differentiable and torch.is_grad_enabled()):
            parts = [self._run(x[i:i + chunk], encoded) for i in range(0, max(x.shape[0], 1), chunk)]
        if len(parts) == 1:
            return {name: r.transpose(0, 1) for name, r in parts[0].items()}
        return {name: torch.cat([p[name] for p in parts], dim=1).transpose(0, 1) for name in parts[0]}

    def chunk_size(self, batch: int, timesteps: int) -> int:
        """Samples per pass on the CPU: as many as keep the widest layer's ``[T + delay, chunk, n]`` float64
        tensors under :attr:`CHUNK_BYTES`. Every step's operations then work on cache-sized tensors, and no
        tensor is so large that the allocator maps fresh pages for it on every call (each costs a page fault),
        so samples per second do not fall as the batch grows. The whole batch on other devices."""
        if self.device.type != "cpu":
            return max(batch, 1)
        widest = max([layer.size for layer in self.lg.layers] + [int(np.prod(self.lg.input.shape))])
        per_sample = self.lg.steps_out(timesteps) * widest * 8
        return max(1, min(batch, self.CHUNK_BYTES // per_sample))

    def _run(self, x: torch.Tensor, encoded: bool) -> dict[str, torch.Tensor]:
        """One chunk: layer name -> time-major raster ``[T + delay, B, n]``."""
        lg = self.lg
        steps = x.shape[1]
        if time_invariant(x):  # one frame repeated (the direct code): encode it once, keep it a stride-0 view
            x = x[:, :1]
        xi = x.to(device=self.device, dtype=torch.float64) if encoded else self.encode(x)
        xi = xi.expand(xi.shape[0], steps, *xi.shape[2:])
        t_out = lg.steps_out(steps)
        # time-major rasters [steps, B, ...], row = target step: the input's T steps, a layer's T + delay
        rasters: dict[str, torch.Tensor] = {lg.input.name: xi.transpose(0, 1)}
        for layer in sorted(lg.layers, key=lambda l: l.depth):
            plan = self._plans[layer.name]
            rasters[layer.name] = self._layer(plan, self._drive(plan, rasters, t_out))
        del rasters[lg.input.name]
        return rasters

    def _drive(self, plan: _LayerPlan, rasters: dict[str, torch.Tensor], t_out: int) -> torch.Tensor:
        """The summed feed-forward messages the layer receives on its steps ``k .. t_out - 1`` (k: its depth),
        ``[t_out - k, B, n]``.

        Step ``tau`` receives what the source sent on step ``tau - 1 - delay``. A source is zero by construction
        outside its rows (a layer before its depth, the input after its T steps), and zero sends nothing, so
        only the source's own steps are projected; a source that repeats one frame (a stride-0 view over time,
        the direct code's input) is projected once and its message repeated.
        """
        k, n = plan.layer.depth, plan.layer.size
        b = rasters[self.lg.input.name].shape[1]
        total = None
        for i, p in plan.feeds:
            src = rasters[p.src]
            first = 0 if p.src == self.lg.input.name else self.lg.layer(p.src).depth
            lag = 1 + int(p.delay)
            lo, hi = max(k, first + lag), min(t_out, src.shape[0] + lag)
            if hi <= lo:
                continue
            if time_invariant(src.transpose(0, 1)):
                msg = self._project(i, p, src[0].reshape(b, *self.lg.source_shape(p.src))).expand(hi - lo, b, n)
            else:
                x = src[lo - lag:hi - lag].reshape(-1, *self.lg.source_shape(p.src))
                msg = self._project(i, p, x).reshape(hi - lo, b, n)
            if (lo, hi) != (k, t_out):
                msg = F.pad(msg, (0, 0, 0, 0, lo - k, t_out - hi))
            total = msg if total is None else total + msg
        if total is None:
            total = torch.zeros((t_out - k, b, n), device=self.device, dtype=torch.float64)
        return total

    def _layer(self, plan: _LayerPlan, drive: torch.Tensor) -> torch.Tensor:
        """The layer's raster ``[t_out, B, n]`` (zero before its depth) for its feed-forward ``drive``."""
        layer = plan.layer
        bias = self._bias[layer.name]
        if self.float_path is not None:
            bias = _ste(self.float_path.bias(layer).to(torch.float64), bias)
        if not self.differentiable:
            return self._scan(plan, drive, bias)[0]
        surrogate = self.surrogates.get(layer.name, self.surrogate_alpha)
        surrogate = surrogate if isinstance(surrogate, Surrogate) else ATan(alpha=surrogate)
        if plan.recurrent:  # the spikes feed back: autograd through the stepped form
            return self._scan(plan, drive, bias, surrogate)[0]
        return _ScanFn.apply(drive, bias, self, plan, surrogate)

    def _currents(self, plan: _LayerPlan, a: torch.Tensor, u: "torch.Tensor | None") -> tuple[torch.Tensor, int]:
        """Lava's current ``u`` from the summed messages ``a`` (any shape ending in ``n``) and the previous
        ``u`` (None: emptied every step): ``(u, number of 24-bit wraps)``. Elementwise, so ``a`` may hold one
        step or, for an emptied ``u``, all steps at once."""
        act = _wrap(_wrap(a, 32, plan.b_a) * float(1 << ACT_SHIFT), 32, plan.b_act)
        cur = act if u is None else _wrap(_decay(u, plan.keep_u) + act, 32, plan.b_cur32)
        if plan.b_u < _TWO23 or not cur.numel():
            return cur, 0
        lo, hi = torch.aminmax(cur.detach())  # one pass; the wrap itself only where it happens
        if float(lo) > -_TWO23 and float(hi) <= _TWO23:
            return cur, 0
        over, under = cur > _TWO23, cur <= -_TWO23
        return (torch.where(over, cur - 2 * _TWO23, torch.where(under, cur + 2 * _TWO23, cur)),
                int((over | under).sum()))

    def _scan(self, plan: _LayerPlan, drive: torch.Tensor, bias: torch.Tensor,
              surrogate: Surrogate | None = None) -> tuple[torch.Tensor, "torch.Tensor | None"]:
        """Lava's fixed-point LIF over the layer's steps ``k .. t_out - 1`` (state reset to zero at step k).

        drive: feed-forward messages ``[t_out - k, B, n]``; bias: ``[n]`` (v units); surrogate: None for the exact
        run, else spikes that pass its gradient, with autograd through every step (a recurrent layer in
        differentiable mode). Returns the raster ``[t_out, B, n]`` (spikes, or a readout's potential) and the
        exact run's potentials before the reset ``[t_out - k, B, n]`` (None with a surrogate). Counts wraps and
        clips into :attr:`overflow`.
        """
        if surrogate is not None:
            raster, hs, wraps, sats = self._steps(plan, drive, bias, surrogate, clip=plan.b_v > _VMAX)
        else:
            # v's clip changes nothing until some |h| exceeds 2**23 - 1 without it: run without, check once, and
            # run again with the per-step clip on the rare batch where it triggers
            raster, hs, wraps, sats = self._steps(plan, drive, bias, None, clip=False)
            if plan.b_v > _VMAX and hs.numel():
                lo, hi = torch.aminmax(hs)
                if float(lo) < -_VMAX or float(hi) > _VMAX:
                    raster, hs, wraps, sats = self._steps(plan, drive, bias, None, clip=True)
        counts = self.overflow.setdefault(plan.layer.name, {"u_wraps": 0, "v_saturations": 0})
        counts["u_wraps"] += wraps
        counts["v_saturations"] += sats
        return raster, hs

    def _steps(self, plan: _LayerPlan, drive: torch.Tensor, bias: torch.Tensor, surrogate: Surrogate | None,
               clip: bool) -> tuple[torch.Tensor, "torch.Tensor | None", int, int]:
        """The step loop of :meth:`_scan` (v clipped every step when ``clip``): ``(raster, potentials, u wraps,
        v clips)``. The exact run writes each step's potential into one ``[t_out - k, B, n]`` tensor and takes
        the spikes from it at the end (``h > thr``); a feed-forward layer whose ``u`` is emptied every step runs
        in the compiled loop of ``snnkit/nn/native/loihi_scan.h`` when it is available (CPU), the same arithmetic.
        With a surrogate every operation stays in autograd."""
        layer = plan.layer
        k = layer.depth
        steps, b, n = drive.shape
        dd = dict(device=self.device, dtype=torch.float64)
        exact = surrogate is None
        hs = torch.empty((steps, b, n), **dd) if exact else None
        wraps = sats = 0
        inputs = None
        if plan.empty_u and not plan.recurrent:  # u depends on this step's messages only: all steps at once
            inputs, wraps = self._currents(plan, drive, None)
            inputs = inputs.add_(bias)  # a new tensor: ``a << 6`` is one
            # the compiled loop (CPU), which clips wherever the bound does not rule it out: a comparison is free there
            reset = 2 if layer.readout else int(layer.reset == "subtract")
            native = native_scan(inputs, plan.keep_v_n, plan.thr, reset, plan.b_v > _VMAX, _VMAX) if exact else None
            if native is not None:
                hs, sats = native
                return self._raster(plan, hs), hs, wraps, sats
        u = None if plan.empty_u else torch.zeros((b, n), **dd)
        v = torch.zeros((b, n), **dd)
        s = torch.zeros((b, n), device=self.device, dtype=torch.bool if exact else torch.float64)
        spikes = []
        for step in range(steps):
            if inputs is not None:
                j = inputs[step]
            else:
                a = drive[step]
                for i, p in plan.recurrent:
                    a = a + self._project(i, p, s)
                cur, wrapped = self._currents(plan, a, u)
                wraps += wrapped
                u = None if plan.empty_u else cur
                j = cur + bias
            # with the clip, |v| <= 2**23 - 1, |u| <= 2**23 and |bias| < 2**20: h never reaches Lava's 32-bit wrap
            dec = v if plan.no_leak else _decay(v, plan.keep_v)
            h = torch.add(dec, j, out=hs[step]) if exact else dec + j
            if clip and h.numel():
                lo, hi = torch.aminmax(h.detach())
                if float(lo) < -_VMAX or float(hi) > _VMAX:
                    sats += int((h.abs() > _VMAX).sum())
                    h = h.clamp_(-_VMAX, _VMAX) if exact else _ste(h, torch.clamp(h, -_VMAX, _VMAX))
            if layer.readout:  # never fires: v is the output
                v = h
                if not exact:
                    spikes.append(h)
                continue
            if exact:
                s = h > plan.thr
                v = torch.where(s, h - plan.thr, h) if layer.reset == "subtract" else h.masked_fill(s, 0.0)
            else:
                s = _spike(h, plan.thr, surrogate)
                v = h - s.detach() * plan.thr if layer.reset == "subtract" else h * (1 - s.detach())
                spikes.append(s)
        if not exact:
            return torch.cat([torch.zeros((k, b, n), **dd), torch.stack(spikes)]), None, wraps, sats
        return self._raster(plan, hs), hs, wraps, sats

    def _raster(self, plan: _LayerPlan, hs: torch.Tensor) -> torch.Tensor:
        """The raster ``[t_out, B, n]`` from the potentials before the reset ``hs [t_out - k, B, n]``: zero before
        the layer's depth k, then ``h > thr`` (a readout: ``h``)."""
        layer = plan.layer
        steps, b, n = hs.shape
        shape, dtype = (layer.depth + steps, b, n), torch.float64 if layer.readout else self.spike_dtype
        # a reused buffer on the CPU (fresh ones fault their pages in, native.POOL)
        raster = POOL.empty(shape, dtype) if self.device.type == "cpu" else torch.empty(shape, device=self.device,
                                                                                       dtype=dtype)
        raster[:layer.depth].zero_()
        if layer.readout:
            raster[layer.depth:] = hs
        else:
            torch.gt(hs, plan.thr, out=raster[layer.depth:])
        return raster


class _ScanFn(torch.autograd.Function):
    """A feed-forward layer's scan (:meth:`LoihiEmulator._scan`, exact forward) whose backward is the
    straight-through gradient autograd would take through the stepped form, in one reverse pass
    (:func:`_scan_backward`) instead of a graph of every step's operations.

    Inputs: drive ``[t_out - k, B, n]``, bias ``[n]``, the emulator, the layer's plan, its surrogate. Output: the
    raster ``[t_out, B, n]``.
    """

    @staticmethod
    def forward(ctx, drive, bias, emu, plan, surrogate):
        out, hs = emu._scan(plan, drive, bias)
        ctx.save_for_backward(out, hs)
        ctx.plan, ctx.surrogate = plan, surrogate
        return out

    @staticmethod
    def backward(ctx, grad):
        if not any(ctx.needs_input_grad[:2]):
            return None, None, None, None, None
        out, hs = ctx.saved_tensors
        g_drive, g_bias = _scan_backward(ctx.plan, ctx.surrogate, grad, out, hs, ctx.needs_input_grad[1])
        return g_drive, g_bias, None, None, None


def _scan_backward(plan: _LayerPlan, surrogate: Surrogate, grad: torch.Tensor, out: torch.Tensor,
                   hs: "torch.Tensor | None", with_bias: bool) -> tuple[torch.Tensor, "torch.Tensor | None"]:
    """Gradients of a feed-forward layer's scan: ``dL/d drive [t_out - k, B, n]`` and ``dL/d bias [n]`` (None
    unless ``with_bias``), from ``grad = dL/d raster [t_out, B, n]``, the raster and the potentials ``hs``.

    The stepped form's straight-through rules (rounding, wraps and clips pass the gradient unchanged), term for
    term: a spike passes ``grad * surrogate'((h - thr) / thr) / thr`` to ``h`` (a readout: ``grad``); ``h`` reaches
    the next step's ``h`` through ``v`` (times ``1 - s`` for reset to zero, times ``keep_v`` when ``v`` leaks);
    ``u`` collects ``h``'s gradient and, when it is not emptied, the next ``u``'s times ``keep_u``; a message
    reaches ``u`` times ``2**6``; the bias receives every step's ``h`` gradient, summed over the batch.
    """
    layer = plan.layer
    k = layer.depth
    g_out = grad[k:]
    scale = float(1 << ACT_SHIFT)
    if plan.empty_u:  # the compiled pass (CPU), the same products in the same order
        mode = 2 if layer.readout else int(layer.reset == "subtract")
        g_u = loihi_gradient(g_out, hs, plan.keep_v_n, plan.thr, mode, surrogate, scale)
        if g_u is not None:
            return g_u, g_u.sum(dim=(0, 1)) / scale if with_bias else None
    if layer.readout:
        g_fire, through = g_out, None
    else:
        g_fire = g_out * surrogate.derivative((hs - plan.thr) / plan.thr) / plan.thr
        through = None if layer.reset == "subtract" else 1 - out[k:]
    g_h = _reverse(g_fire, through, plan.keep_v_n, None if plan.no_leak else plan.keep_v)
    g_u = g_h if plan.empty_u else _reverse(g_h, None, plan.keep_u_n, plan.keep_u)
    return g_u * scale, g_h.sum(dim=(0, 1)) if with_bias else None


def _reverse(g_in: torch.Tensor, through: "torch.Tensor | None", keep_n: "torch.Tensor | None",
             keep: "float | torch.Tensor | None") -> torch.Tensor:
    """``g[last] = g_in[last]``, ``g[t] = g_in[t] + (g[t + 1] * keep) * through[t]`` over ``[T, B, n]`` (None:
    factor 1; ``keep_n``: keep as ``[n]`` for the compiled loop, which runs it on the CPU when it is available)."""
    native = native_reverse(g_in, through, keep_n)
    if native is not None:
        return native
    g = torch.empty_like(g_in)
    last = g_in.shape[0] - 1
    if last >= 0:
        g[last] = g_in[last]
    for step in reversed(range(last)):
        g_next = g[step + 1] if keep is None else g[step + 1] * keep
        torch.add(g_in[step], g_next if through is None else g_next * through[step], out=g[step])
    return g


def to_numpy(lg: LoihiGraph, rasters: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The emulator's outputs as the Lava worker returns them: spikes as uint8, a readout's potential as int32."""
    return {name: r.to("cpu", torch.int32 if lg.layer(name).readout else torch.uint8).numpy()
            for name, r in rasters.items()}


class LoihiEmulatorTarget(QuantisedTarget):
    """``--target loihi-emu``: the emulator behind the Target interface.

    Options: device (``"cpu"``, ``"cuda"``, ``"auto"``), batch_size (samples per emulator call), and the
    quantisation options of :func:`snnkit.deploy.loihi.quantize` (input_mode, input_range, input_bits, dt,
    headroom_bits, sparse_below; None: its default). Quantised graphs and emulators are cached per graph
    object (``snnkit.deploy.cache``), so repeated runs on one graph (attack queries) quantise it once.
    """

    name = "loihi-emu"

    def __init__(self, device: str = "cpu", batch_size: int = 512, **quantisation):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise DeployError(f"loihi-emu: device {device!r} requested but CUDA is not available")
        super().__init__(**quantisation)
        self.device = device
        self.batch_size = int(batch_size)
        self._emulators = BuildCache()

    def execute(self, lg: LoihiGraph, x: np.ndarray, xi: np.ndarray):
        t0, c0 = time.perf_counter(), time.thread_time()
        emu = self._emulators.get(lg, None, lambda: LoihiEmulator(lg, device=self.device, spike_dtype=torch.uint8))
        chunks: dict[str, list[np.ndarray]] = {}
        overflow: dict[str, dict[str, int]] = {}
        with torch.no_grad():
            for start in range(0, xi.shape[0], self.batch_size):
                xb = torch.from_numpy(xi[start:start + self.batch_size].astype(np.float64))
                out = to_numpy(lg, emu.run(xb, encoded=True))
                for name, r in out.items():
                    chunks.setdefault(name, []).append(r)
                for name, ev in emu.overflow.items():
                    acc = overflow.setdefault(name, {"u_wraps": 0, "v_saturations": 0})
                    for key, val in ev.items():
                        acc[key] += val
        if self.device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        rasters = {name: np.concatenate(c, axis=0) for name, c in chunks.items()}
        info = {"device": str(self.device), "overflow_events": overflow,
                "thread_cpu_s": time.thread_time() - c0}  # this thread's CPU time (the run is one thread on a CPU)
        return rasters, time.perf_counter() - t0, 0.0, info


class LoihiModule(torch.nn.Module):
    """The deployed network as a differentiable torch module (for adaptive attacks on the Loihi model).

    ``forward(x [B, T, *input_shape])`` returns the output layer's spikes ``[B, T + delay, C]`` (a readout's
    potential in its float units); forward values are bit-identical to Lava's fixed-point run, gradients are
    straight-through estimates.
    """

    def __init__(self, lg: LoihiGraph, device: str | torch.device = "cpu", surrogate_alpha: float = 2.0):
        super().__init__()
        self.lg = lg
        self.emulator = LoihiEmulator(lg, device=device, differentiable=True, surrogate_alpha=surrogate_alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lg.layer(self.lg.output)
        y = self.emulator.run(x)[out.name]
        return (y * out.v_unit() if out.readout else y).to(x.dtype)

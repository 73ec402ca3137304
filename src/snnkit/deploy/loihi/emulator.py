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

Feed-forward layers are computed one after the other over all steps (one big matmul/convolution per
projection); a layer with a recurrent projection is stepped.

``differentiable=True`` keeps every forward value bit-identical and adds straight-through gradients: the
rounding, shifts, wraps and saturation pass the gradient of their real-valued counterpart, and the spike
passes the arctan surrogate of :mod:`snnkit.nn.surrogate` (width set by the threshold; another surrogate per
layer on request). This is the model adaptive attacks differentiate. Given a :class:`FloatPath`, every
synapse stage's messages and every layer's bias pass instead the gradient of the path's real-valued
counterparts, which may depend on parameters: quantisation-aware training (:mod:`snnkit.train.qat`)
differentiates the float model's weights that way, through this forward.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from snnkit.graph import DeployError
from snnkit.deploy.cache import BuildCache
from snnkit.deploy.loihi.graph import ACT_SHIFT, DECAY_UNITY, STATE_MAX, LoihiGraph, NeuronLayer, Projection
from snnkit.deploy.loihi.prepare import QuantisedTarget
from snnkit.nn.surrogate import ATan, Surrogate

_TWO31 = 2.0 ** 31
_TWO23 = float(STATE_MAX)


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


def _decay(x: torch.Tensor, keep: int) -> torch.Tensor:
    """``sign(x * keep) * (|x * keep| >> 12)``: multiply by ``keep/4096``, rounding toward zero."""
    lin = x * (keep / DECAY_UNITY)
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


class LoihiEmulator:
    """The fixed-point network of a :class:`LoihiGraph` as batched torch operations.

    device: where tensors live (``"cpu"``, ``"cuda"``...).
    differentiable: straight-through gradients (see the module docstring); forward values are unchanged.
    surrogate_alpha: sharpness of the arctan surrogate, in units of the threshold.
    surrogates: layer name -> the surrogate its spikes use instead (on the potential in threshold units).
    float_path: a :class:`FloatPath` whose messages and biases the gradients follow (differentiable mode).
    """

    def __init__(self, lg: LoihiGraph, device: str | torch.device = "cpu", differentiable: bool = False,
                 surrogate_alpha: float = 2.0, *, surrogates: dict[str, Surrogate] | None = None,
                 float_path: FloatPath | None = None):
        self.lg = lg
        self.device = torch.device(device)
        self.differentiable = differentiable
        self.surrogate_alpha = float(surrogate_alpha)
        self.surrogates = dict(surrogates or {})
        self.float_path = float_path if differentiable else None
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
        self.overflow: dict[str, dict[str, int]] = {}
        """Per layer, over the last :meth:`run`: ``u_wraps`` (current wrapped around at 24 bits) and
        ``v_saturations`` (voltage clipped), counted over neurons and steps."""

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
        """Run a batch; returns layer name -> spikes ``[B, T + delay, n]`` (float64, 0/1), for a readout its
        potential ``v`` (integers, float64).

        x: ``[B, T, *input_shape]`` float input (or Lava's integers when ``encoded``). Each sample starts from
        zero state; layer at depth k is zero before step k (see ``LoihiGraph``).
        """
        with _NoTF32():
            return self._run(x, encoded)

    def _run(self, x: torch.Tensor, encoded: bool) -> dict[str, torch.Tensor]:
        lg = self.lg
        xi = x.to(device=self.device, dtype=torch.float64) if encoded else self.encode(x)
        b, t = xi.shape[:2]
        t_out = lg.steps_out(t)
        pad = torch.zeros((b, t_out - t, *xi.shape[2:]), device=self.device, dtype=torch.float64)
        rasters: dict[str, torch.Tensor] = {lg.input.name: torch.cat([xi, pad], dim=1)}
        for layer in sorted(lg.layers, key=lambda l: l.depth):
            k = layer.depth
            n = layer.size
            a_ff = torch.zeros((b, t_out, n), device=self.device, dtype=torch.float64)
            rec = []
            for i, p in enumerate(lg.projections):
                if p.dst != layer.name:
                    continue
                if p.recurrent:
                    rec.append((i, p))
                    continue
                src = rasters[p.src][:, k - 1 - p.delay:t_out - 1 - p.delay]  # delivered 1 + delay steps later
                shape = lg.source_shape(p.src)
                msg = self._project(i, p, src.reshape(-1, *shape)).reshape(b, t_out - k, n)
                a_ff[:, k:] += msg
            rasters[layer.name] = self._neurons(layer, a_ff, rec, k)
        del rasters[lg.input.name]
        return rasters

    def _keep(self, layer, name: str, offset: int) -> "float | torch.Tensor":
        """``4096 - (field + offset)``: what of the state a decay keeps, per neuron (a number when uniform)."""
        keep = DECAY_UNITY - (layer.per_neuron(name).astype(np.float64) + offset)
        if np.all(keep == keep[0]):
            return float(keep[0])
        return torch.as_tensor(keep, device=self.device, dtype=torch.float64)

    def _neurons(self, layer, a_ff: torch.Tensor, rec: list, k: int) -> torch.Tensor:
        """Lava's fixed-point LIF over steps ``k .. T_out - 1`` (state reset to zero at step k): the spikes, or a
        readout's potential."""
        b, t_out, n = a_ff.shape
        dd = dict(device=self.device, dtype=torch.float64)
        u = torch.zeros((b, n), **dd)
        v = torch.zeros((b, n), **dd)
        keep_u = self._keep(layer, "du", 1)
        keep_v = self._keep(layer, "dv", 0)
        empty_u = bool(np.all(DECAY_UNITY - layer.per_neuron("du") - 1 == 0))  # LIF/IF: u emptied every step
        no_leak = bool(np.all(layer.per_neuron("dv") == 0))
        thr = float(int(layer.vth) << ACT_SHIFT)
        subtract = layer.reset == "subtract"
        bias = self._bias[layer.name]
        b_bias = float(bias.abs().max()) if bias.numel() else 0.0
        if self.float_path is not None:
            bias = _ste(self.float_path.bias(layer).to(torch.float64), bias)
        surrogate = self.surrogates.get(layer.name, self.surrogate_alpha)
        shift = float(1 << ACT_SHIFT)
        vmax = _TWO23 - 1
        # Proven bounds on |a|, |a << 6|, |u| and |v| let wraps and clips that cannot trigger be skipped: a
        # leaky state driven by inputs of at most b stays below b / (1 - keep / 4096).
        b_a = sum(self._msg_bound[i] for i, p in enumerate(self.lg.projections) if p.dst == layer.name)
        b_act = b_a * shift
        r_u = float(np.max(DECAY_UNITY - layer.per_neuron("du") - 1)) / DECAY_UNITY
        r_v = float(np.max(DECAY_UNITY - layer.per_neuron("dv"))) / DECAY_UNITY
        b_u = b_act / (1 - r_u) if r_u < 1 else math.inf
        b_cur = b_u if b_u < _TWO23 else math.inf  # inf: u may wrap; check every step
        b_v = (b_u + b_bias) / (1 - r_v) if r_v < 1 else math.inf
        b_h = b_v if b_v <= vmax else math.inf  # inf: v may saturate; check every step
        out = [torch.zeros((b, n), **dd)] * k
        s = torch.zeros((b, n), **dd)
        wraps = torch.zeros((), device=self.device, dtype=torch.int64)
        sats = torch.zeros((), device=self.device, dtype=torch.int64)
        for tau in range(k, t_out):
            a = a_ff[:, tau]
            for i, p in rec:
                a = a + self._project(i, p, s)
            a = _wrap(a, 32, b_a)
            act = _wrap(a * shift, 32, b_act)
            cur = act if empty_u else _wrap(_decay(u, keep_u) + act, 32, b_cur)
            if b_cur > _TWO23:
                over, under = cur > _TWO23, cur <= -_TWO23
                u = torch.where(over, cur - 2 * _TWO23, torch.where(under, cur + 2 * _TWO23, cur))
                wraps += (over | under).sum()
            else:
                u = cur
            h = _wrap((v if no_leak else _decay(v, keep_v)) + u + bias, 32, b_h)
            if b_h > vmax:
                sats += (h.abs() > vmax).sum()
                h = _ste(h, torch.clamp(h, -vmax, vmax))
            if layer.readout:  # never fires: v is the output
                v = h
                out.append(h)
                continue
            if self.differentiable:
                s = _spike(h, thr, surrogate)
            else:
                s = (h > thr).to(torch.float64)
            v = h - s.detach() * thr if subtract else h * (1 - s.detach())
            out.append(s)
        self.overflow[layer.name] = {"u_wraps": int(wraps), "v_saturations": int(sats)}
        return torch.stack(out, dim=1)


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
        t0 = time.perf_counter()
        emu = self._emulators.get(lg, None, lambda: LoihiEmulator(lg, device=self.device))
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
        info = {"device": str(self.device), "overflow_events": overflow}
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

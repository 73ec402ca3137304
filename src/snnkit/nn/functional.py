"""Pure functional neuron dynamics (docs/semantics.md), time-first: tensors are ``[T, B, ...]``.

Two forms of the same equations:

- ``*_step`` functions advance one step and are differentiated by autograd (used for recurrent graphs, which
  must be stepped, and as the readable reference in the tests);
- ``lif_scan`` runs a whole sequence in one autograd node with a hand-written backward (the fast path for
  feed-forward layers): the membrane update is the only sequential part, so a layer's synaptic input is
  computed for all steps at once before the scan. On the CPU its loops are compiled C kernels
  (:mod:`snnkit.nn.native`, built with the system C compiler; a torch loop otherwise), reached through the
  dispatcher operator ``snnkit::lif_scan`` (C++ CPU and autograd kernels, ``native/scan_op.cpp``, where a C++
  compiler and torch's headers are there: from eager layers and compiled graphs alike) or else through ctypes
  (:class:`_LIFScan`, also the form for learnable parameters).

Both give bit-identical forward values (tests/test_scan_speed_equivalence.py); gradients agree to rounding. The reset is detached from the graph in both (the gradient does not flow
through the "did it spike" decision of the reset), as in snnTorch.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from snnkit.nn import native
from snnkit.nn.surrogate import Surrogate, kernel_form


class LIFState(NamedTuple):
    v: torch.Tensor  # membrane potential after reset, [B, ...]


class CubaState(NamedTuple):
    i: torch.Tensor  # synaptic current, [B, ...]
    v: torch.Tensor  # membrane potential after reset, [B, ...]


def _charge(x, beta, v):
    """``beta * v + x`` as one fused op when possible (the scan and the step must round identically)."""
    return torch.addcmul(x, beta, v) if torch.is_tensor(beta) else x + beta * v


def _reset(h, s, threshold, v_reset, subtract: bool):
    sd = s.detach()
    if subtract:
        return h - sd * threshold
    return torch.where(sd.bool(), v_reset, h)


def lif_step(x: torch.Tensor, state: LIFState, beta, threshold, v_reset, surrogate: Surrogate,
             subtract: bool = False):
    """One LIF (or IF, with ``beta = 1``) step.

    ``x`` is the already scaled drive ``(1-beta)(v_leak + r I)``, shape ``[B, ...]``.
    Returns ``(s, new_state, h)`` with ``h`` the pre-reset membrane potential.
    """
    h = _charge(x, beta, state.v)
    s = surrogate.spike(h - threshold)
    return s, LIFState(_reset(h, s, threshold, v_reset, subtract)), h


def cuba_step(x: torch.Tensor, state: CubaState, alpha, beta, gain, leak, threshold, v_reset,
              surrogate: Surrogate, subtract: bool = False):
    """One CubaLIF step: ``i = alpha i + x``; ``h = beta v + leak + gain * i``; fire; reset.

    ``x`` is the already scaled synaptic drive ``(1-alpha) w_in S``; ``gain = (1-beta) r``,
    ``leak = (1-beta) v_leak``. Returns ``(s, new_state, h)``.
    """
    i = alpha * state.i + x
    h = _charge(leak + gain * i, beta, state.v)
    s = surrogate.spike(h - threshold)
    return s, CubaState(i, _reset(h, s, threshold, v_reset, subtract)), h


class _LIFScan(torch.autograd.Function):
    """Whole-sequence LIF with its own backward. Input ``x [T, B, ...]`` (``[B, T, ...]`` with ``batch_first``; a
    time size of 1 with ``steps``: one drive repeated over ``steps``); outputs spikes (and ``h``) over all steps,
    in x's axis order.

    The forward also evaluates the surrogate derivative at every step and saves it with the spikes (not ``h``),
    so the backward is a single reverse recurrence
    ``dh[t] = grad_s[t] sg[t] + grad_h[t] + beta dh[t+1] (1 - s[t])`` (no ``1 - s`` for subtract). For a repeated
    drive the gradient to it is ``sum_t dh[t]``, accumulated inside the recurrence (no ``[T, B, ...]`` gradient).
    The axis swap of ``batch_first`` happens inside the node (views), so it adds no autograd nodes.
    """

    @staticmethod
    def forward(ctx, x, beta, threshold, v_reset, surrogate, subtract, with_h, batch_first, steps):
        ctx.set_materialize_grads(False)
        need_h = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]  # the beta / threshold gradients use h
        xt = _time_first(x, batch_first, steps)
        s_all, h_all, sg, beta_k = _scan_forward(xt, beta, threshold, v_reset, subtract, surrogate,
                                                 with_h or need_h)
        ctx.save_for_backward(s_all, sg, beta_k, h_all if need_h else None)
        ctx.beta = beta
        ctx.threshold = threshold
        ctx.v_reset = v_reset
        ctx.subtract = subtract
        ctx.batch_first = batch_first
        ctx.repeated = steps is not None
        s_out = _swapped(s_all, batch_first)
        return (s_out, _swapped(h_all, batch_first)) if with_h else s_out

    @staticmethod
    def backward(ctx, grad_s, grad_h=None):
        s_all, sg_all, beta_k, h_all = ctx.saved_tensors
        beta, threshold, v_reset = ctx.beta, ctx.threshold, ctx.v_reset
        need_x, need_beta, need_th = ctx.needs_input_grad[:3]
        if grad_s is None and grad_h is None:
            return (None,) * 9
        grad_s, grad_h = _swapped(grad_s, ctx.batch_first), _swapped(grad_h, ctx.batch_first)
        summed = ctx.repeated and not (need_beta or need_th)  # only the drive's gradient, summed over time
        dh_all = _scan_backward(grad_s, grad_h, sg_all, s_all, beta, beta_k, ctx.subtract, summed)
        gx = None
        if need_x:
            gx = dh_all if summed or not ctx.repeated else dh_all.sum(0, keepdim=True)
            gx = _swapped(gx, ctx.batch_first)
        g_beta = g_th = None
        if need_beta:
            # v[t-1] for every t: zero at t = 0, else the post-reset potential of step t-1.
            prev = torch.zeros_like(h_all)
            if ctx.subtract:
                prev[1:] = h_all[:-1] - s_all[:-1] * threshold
            else:
                prev[1:] = torch.where(s_all[:-1].bool(), v_reset, h_all[:-1])
            g_beta = _reduce_to(dh_all * prev, beta)
        if need_th:
            g = -(grad_s * sg_all) if grad_s is not None else torch.zeros_like(h_all)
            if ctx.subtract:
                # v[t] = h[t] - s[t] * threshold: d/d threshold of the potential carried to t+1.
                carried = torch.zeros_like(h_all)
                carried[:-1] = dh_all[1:] * beta
                g = g - carried * s_all
            g_th = _reduce_to(g, threshold)
        return (gx, g_beta, g_th) + (None,) * 6


def _swapped(t: "torch.Tensor | None", batch_first: bool) -> "torch.Tensor | None":
    """``t`` with its first two axes swapped for ``batch_first`` (a view; the swap is its own inverse)."""
    return t.transpose(0, 1) if batch_first and t is not None else t


def _time_first(x: torch.Tensor, batch_first: bool, steps: "int | None") -> torch.Tensor:
    """``x`` as the scan reads it, ``[T, B, ...]`` (a view): axes swapped for ``batch_first``, and a one-step
    ``x`` expanded over ``steps`` (stride 0: read once per step, never copied)."""
    xt = _swapped(x, batch_first)
    if steps is not None:
        xt = xt.expand(steps, *xt.shape[1:])
    return xt


def _native_params(x: torch.Tensor, beta, threshold, v_reset) -> "list[torch.Tensor] | None":
    """``beta``, ``threshold``, ``v_reset`` in the form the compiled kernels take, or None (use torch).

    All three 0-dim, else all contiguous ``[N]`` (expanded over the neuron shape), in x's dtype. None when the
    kernels are unavailable or could not reproduce the step arithmetic exactly: a float ``beta`` (the step then
    computes ``x + beta * v`` unfused), a parameter with a batch axis, on another device, or one that would
    promote the dtype, and while ``torch.compile`` traces.
    """
    if torch.compiler.is_compiling():
        return None  # never reach ctypes while torch.compile traces (the traced torch loop is used)
    if not torch.is_tensor(beta) or not native.supports(x) or native.load() is None:
        return None
    neuron_shape = x.shape[2:]
    params = []
    for p in (beta, threshold, v_reset):
        if not torch.is_tensor(p):
            p = torch.tensor(p, dtype=x.dtype)
        elif p.requires_grad:
            p = p.detach()
        if p.device != x.device or p.dim() > len(neuron_shape) or (p.dim() > 0 and p.dtype != x.dtype):
            return None
        params.append(p if p.dtype == x.dtype else p.to(x.dtype))
    if all(p.dim() == 0 for p in params):
        return params
    order = native.neuron_order(x)  # per-neuron values laid out like x's neuron block (channels-last...)
    return [p.expand(neuron_shape).permute(*order).reshape(-1).contiguous() for p in params]


def _scan_forward(x, beta, threshold, v_reset, subtract: bool, surrogate: "Surrogate | None" = None,
                  with_h: bool = True):
    """Spikes (x's dtype) and pre-reset potentials over ``x [T, B, ...]``, bit-identical to ``lif_step``.

    Returns ``(s, h, sg, beta_k)``: ``h`` is None unless ``with_h`` (the torch path always returns it);
    ``sg`` the surrogate derivative at every step, None without a ``surrogate``; ``beta_k`` the decay in the
    form the compiled backward takes, or None when the torch path ran.
    """
    params = _native_params(x, beta, threshold, v_reset)
    if params is not None:
        s, h, sg = native.forward(x, *params, subtract, surrogate, with_h)
        if surrogate is not None and kernel_form(surrogate)[0] < 0:
            sg = surrogate.derivative(sg)  # the kernels left u = h - threshold for this surrogate
        return s, h, sg, params[0]
    v = torch.zeros_like(x[0])
    hs, fires = [], []
    for t in range(x.shape[0]):  # the step function's operations, in the same order (traceable by torch.compile)
        h = _charge(x[t], beta, v)
        fire = h > threshold
        v = h - fire.to(h.dtype) * threshold if subtract else torch.where(fire, v_reset, h)
        hs.append(h)
        fires.append(fire)
    h_all = _stack_like(hs, x)
    sg = surrogate.derivative(h_all - threshold) if surrogate is not None else None
    return _stack_like(fires, x).to(h_all.dtype), h_all, sg, None


def _stack_like(steps: "list[torch.Tensor]", x: torch.Tensor) -> torch.Tensor:
    """Stack per-step tensors into ``[T, B, ...]`` stored like ``x`` (batch-major when x is)."""
    if x.dim() >= 2 and not x.is_contiguous() and x.transpose(0, 1).is_contiguous():
        return torch.stack(steps, 1).transpose(0, 1)
    return torch.stack(steps)


def _scan_backward_torch(grad_s, grad_h, sg_all, s_all, beta, subtract: bool) -> torch.Tensor:
    """``dL/dh [T, B, ...]`` by the reverse recurrence, one fused multiply-add per step."""
    if grad_s is None:
        a = grad_h
    else:
        a = grad_s * sg_all if grad_h is None else torch.addcmul(grad_h, grad_s, sg_all)
    carry = torch.as_tensor(beta, dtype=a.dtype, device=a.device)
    if not subtract:
        carry = (1 - s_all) * carry  # d h[t+1] / d h[t] through the (detached) reset
    dh = [a[-1]]
    for t in range(a.shape[0] - 2, -1, -1):
        dh.append(torch.addcmul(a[t], carry if subtract else carry[t], dh[-1]))
    return torch.stack(dh[::-1])


def _scan_backward(grad_s, grad_h, sg_all, s_all, beta, beta_k, subtract: bool, summed: bool) -> torch.Tensor:
    """``dL/dh [T, B, ...]`` by the compiled kernels (``beta_k``: the decay in their form, from
    :func:`_native_params`) or, with ``beta_k`` None, by torch; with ``summed`` its sum over time, ``[1, B, ...]``
    (accumulated inside the kernels' recurrence)."""
    if beta_k is not None:
        return native.backward(grad_s, grad_h, sg_all, s_all, beta_k, subtract, summed=summed)
    dh = _scan_backward_torch(grad_s, grad_h, sg_all, s_all, beta, subtract)
    return dh.sum(0, keepdim=True) if summed else dh


def _reduce_to(grad: torch.Tensor, like) -> torch.Tensor:
    """Sum ``grad [T, B, ...]`` over the axes ``like`` was broadcast along."""
    like = torch.as_tensor(like)
    g = grad.sum(dim=(0, 1))
    while g.dim() > like.dim():
        g = g.sum(0)
    for d, n in enumerate(like.shape):
        if n == 1 and g.shape[d] != 1:
            g = g.sum(d, keepdim=True)
    return g.reshape(like.shape)


def lif_scan(x: torch.Tensor, beta, threshold, v_reset, surrogate: Surrogate, subtract: bool = False,
             with_h: bool = True, batch_first: bool = False, steps: "int | None" = None):
    """LIF over a whole sequence: ``x [T, B, ...]`` is the scaled drive; returns ``(s, h)``, both ``[T, B, ...]``.

    ``beta``, ``threshold`` and ``v_reset`` are floats or tensors broadcastable to ``[B, ...]`` (per neuron or
    scalar); gradients flow to ``x`` and, when they require it, to ``beta`` and ``threshold``. With
    ``with_h=False`` the pre-reset potentials are not kept and ``h`` is None (saves memory and time).
    ``batch_first``: ``x``, ``s`` and ``h`` are ``[B, T, ...]`` (the layers' order). ``steps``: ``x`` holds a
    single step (time size 1), the drive of every one of ``steps`` steps (a time-invariant input); it is read
    once per step without being copied and its gradient is the sum over the steps.

    On the CPU the scan is the operator ``snnkit::lif_scan`` (the C kernels behind C++ CPU and autograd kernels),
    eagerly and under ``torch.compile`` (one opaque node of the graph; traced and unrolled over time it would be
    slower than the kernels). Where that operator does not apply (learnable beta/threshold, a float parameter,
    a surrogate not in the registry, an unusual layout, no C++ compiler) the scan runs as :class:`_LIFScan`;
    under ``torch.compile`` eagerly outside the graph (the kernels), or, where there are no kernels, as the torch
    loop traced into the graph.

    Under autocast (``snn-train --amp bf16``) a reduced-precision drive is cast to float32 first: the membrane
    recurrence accumulates over T steps and runs in float32, like the optimiser; spikes come out in float32 and
    the next layer's autocast casts them back down.
    """
    if x.dtype in (torch.bfloat16, torch.float16) and torch.is_autocast_enabled(x.device.type):
        x = x.float()
    if steps is not None and x.shape[1 if batch_first else 0] != 1:
        raise ValueError(f"lif_scan: steps={steps} repeats one step, but x has {x.shape[1 if batch_first else 0]} "
                         "steps")
    args = (x, beta, threshold, v_reset, surrogate, subtract, with_h, batch_first, steps)
    if torch.compiler.is_compiling():
        if native.build.is_enabled() and _op_applies(x, beta, threshold, v_reset, surrogate) and _op_ready():
            return _op_scan(*args)
        if native.build.is_enabled() and _kernels_ready():
            return _lif_scan_eager(*args)  # the kernels through ctypes, outside the graph
        return _lif_scan(*args)  # no kernels: the torch loop, traced into the graph
    return _lif_scan(*args)


def _lif_scan(x, beta, threshold, v_reset, surrogate, subtract, with_h, batch_first, steps):
    if _op_applies(x, beta, threshold, v_reset, surrogate) and native.build.op_loaded():
        return _op_scan(x, beta, threshold, v_reset, surrogate, subtract, with_h, batch_first, steps)
    needs_grad = torch.is_grad_enabled() and any(
        torch.is_tensor(a) and a.requires_grad for a in (x, beta, threshold))
    if not needs_grad:  # inference: no surrogate derivative, no autograd node
        s, h, _, _ = _scan_forward(_time_first(x, batch_first, steps), beta, threshold, v_reset, subtract, None,
                                   with_h)
        return _swapped(s, batch_first), (_swapped(h, batch_first) if with_h else None)
    out = _LIFScan.apply(x, beta, threshold, v_reset, surrogate, subtract, with_h, batch_first, steps)
    return out if with_h else (out, None)


_lif_scan_eager = torch.compiler.disable(_lif_scan, reason="the LIF scan runs eagerly (compiled C kernels)")


# --- the scan as one operator: snnkit::lif_scan ---------------------------------------------------------------
# Its schema and fake (shapes and strides while torch.compile traces) are here; its CPU and autograd kernels are
# C++ (native/scan_op.cpp, registered by native.build.op_loaded() where a C++ compiler and torch's headers are):
# a call from an eager layer or a compiled graph reaches the kernels without Python.

_OPS = torch.library.Library("snnkit", "DEF")
_OPS.define("lif_scan(Tensor x, Tensor beta, Tensor threshold, Tensor v_reset, bool subtract, int code, float p1, "
            "float p2, bool with_h, bool with_sg, int steps, bool batch_first, int version) "
            "-> (Tensor, Tensor, Tensor)")
_OPS.define("lif_scan_backward(Tensor? grad_s, Tensor? grad_h, Tensor sg, Tensor s, Tensor beta, bool subtract, "
            "bool summed, int version) -> Tensor")
_OP_VERSION = native.build.op_version()  # the kernels' checksum every call passes (native.build.op_version)


@torch.library.register_fake("snnkit::lif_scan")
def _(x, beta, threshold, v_reset, subtract, code, p1, p2, with_h, with_sg, steps, batch_first, version):
    """``(s, h, sg)`` as :func:`lif_scan` returns them for ``x`` (``h`` and ``sg`` empty unless asked for), stored
    with ``native.out_strides``; ``steps`` > 0: ``x`` holds one step, repeated. ``(code, p1, p2)``: the surrogate
    in ``snnkit.nn.surrogate.kernel_form``'s form."""
    xt = _time_first(x, batch_first, steps or None)
    shape, strides = list(xt.shape), list(native.out_strides(xt))
    if batch_first:
        shape[:2], strides[:2] = shape[1::-1], strides[1::-1]
    return tuple(x.new_empty_strided(shape, strides) if wanted else x.new_empty(0)
                 for wanted in (True, with_h, with_sg))


@torch.library.register_fake("snnkit::lif_scan_backward")
def _(grad_s, grad_h, sg, s, beta, subtract, summed, version):
    """``dL/dh`` for the time-first spikes ``s`` (the recurrence of ``_LIFScan.backward``), stored like ``s``;
    with ``summed`` its sum over the steps, ``[1, B, ...]``."""
    if not summed:
        return s.new_empty_strided(s.shape, s.stride())
    return s.new_empty_strided((1, *s.shape[1:]), native.summed_strides(s))


def _op_applies(x: torch.Tensor, beta, threshold, v_reset, surrogate: Surrogate) -> bool:
    """Whether ``snnkit::lif_scan`` computes exactly what :func:`_LIFScan` would on the kernels: a layout the
    kernels read, a built-in surrogate (``snnkit.nn.surrogate.kernel_form``) and constant tensor parameters of
    x's dtype and device, at most per neuron (learnable ones take :class:`_LIFScan`)."""
    return (native.supports(x) and kernel_form(surrogate)[0] >= 0
            and all(torch.is_tensor(p) and not p.requires_grad and p.dtype == x.dtype and p.device == x.device
                    and p.dim() <= x.dim() - 2 for p in (beta, threshold, v_reset)))


@torch.compiler.assume_constant_result
def _kernels_ready() -> bool:
    """Whether the C kernels load here (:func:`snnkit.nn.native.load`), evaluated once when torch.compile traces."""
    return native.load() is not None


@torch.compiler.assume_constant_result
def _op_ready() -> bool:
    """:func:`snnkit.nn.native.build.op_loaded`, evaluated once when torch.compile traces (building and
    registering the operator's kernels then, outside the graph, rather than breaking it)."""
    return native.build.op_loaded()


def _op_scan(x, beta, threshold, v_reset, surrogate, subtract, with_h, batch_first, steps):
    code, p1, p2 = kernel_form(surrogate)
    wants_grad = torch.is_grad_enabled() and x.requires_grad
    s, h, _ = torch.ops.snnkit.lif_scan(x, beta, threshold, v_reset, subtract, code, p1, p2, with_h, wants_grad,
                                        steps or 0, batch_first, _OP_VERSION)
    return s, (h if with_h else None)

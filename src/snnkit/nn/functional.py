"""Pure functional neuron dynamics (docs/semantics.md), time-first: tensors are ``[T, B, ...]``.

Two forms of the same equations:

- ``*_step`` functions advance one step and are differentiated by autograd (used for recurrent graphs, which
  must be stepped, and as the readable reference in the tests);
- ``lif_scan`` runs a whole sequence in one autograd node with a hand-written backward (the fast path for
  feed-forward layers): the membrane update is the only sequential part, so a layer's synaptic input is
  computed for all steps at once before the scan.

Both give identical forward values. The reset is detached from the graph in both (the gradient does not flow
through the "did it spike" decision of the reset), as in snnTorch.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from snnkit.nn.surrogate import Surrogate


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
    """Whole-sequence LIF with its own backward. Inputs ``x [T, B, ...]``; outputs spikes and ``h``."""

    @staticmethod
    def forward(ctx, x, beta, threshold, v_reset, surrogate, subtract):
        ctx.set_materialize_grads(False)
        T = x.shape[0]
        h_all = torch.empty_like(x)
        s_all = torch.empty_like(x)
        v = torch.zeros_like(x[0])
        for t in range(T):
            h = _charge(x[t], beta, v)
            s = h > threshold
            h_all[t] = h
            s_all[t] = s
            if subtract:
                v = h - s * threshold
            else:
                v = torch.where(s, v_reset, h)
        ctx.save_for_backward(h_all, s_all)
        ctx.beta = beta
        ctx.threshold = threshold
        ctx.v_reset = v_reset
        ctx.surrogate = surrogate
        ctx.subtract = subtract
        return s_all, h_all

    @staticmethod
    def backward(ctx, grad_s, grad_h):
        h_all, s_all = ctx.saved_tensors
        beta, threshold, v_reset = ctx.beta, ctx.threshold, ctx.v_reset
        T = h_all.shape[0]
        need_x, need_beta, need_th = ctx.needs_input_grad[:3]
        sg_all = ctx.surrogate.derivative(h_all - threshold)
        dh_all = torch.empty_like(h_all)
        gv = None  # gradient arriving at v[t] from step t+1
        for t in range(T - 1, -1, -1):
            dh = grad_s[t] * sg_all[t] if grad_s is not None else torch.zeros_like(h_all[t])
            if grad_h is not None:
                dh = dh + grad_h[t]
            if gv is not None:
                dh = dh + (gv if ctx.subtract else gv * (1 - s_all[t]))
            dh_all[t] = dh
            gv = dh * beta
        gx = dh_all if need_x else None
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
        return gx, g_beta, g_th, None, None, None


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


def lif_scan(x: torch.Tensor, beta, threshold, v_reset, surrogate: Surrogate, subtract: bool = False):
    """LIF over a whole sequence: ``x [T, B, ...]`` is the scaled drive; returns ``(s, h)``, both ``[T, B, ...]``.

    ``beta``, ``threshold`` and ``v_reset`` are floats or tensors broadcastable to ``[B, ...]`` (per neuron or
    scalar); gradients flow to ``x`` and, when they require it, to ``beta`` and ``threshold``.
    """
    return _LIFScan.apply(x, beta, threshold, v_reset, surrogate, subtract)

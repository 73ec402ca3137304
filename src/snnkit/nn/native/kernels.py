"""Calls into the compiled kernels: the LIF scan (:func:`forward`, :func:`backward`) and 2 x 2 pooling.

Tensors are handed over as raw pointers with the layout of :mod:`snnkit.nn.native.layout`; outputs come from
:data:`snnkit.nn.native.buffers.POOL`. Callers check :func:`~snnkit.nn.native.layout.supports` and
:func:`~snnkit.nn.native.build.load` first (the pooling functions check themselves and return None).
"""
from __future__ import annotations

import ctypes

import torch

from snnkit.nn.native import build
from snnkit.nn.native.buffers import POOL
from snnkit.nn.native.layout import Plan, plan, suffix
from snnkit.nn.surrogate import kernel_form

RAW_U = object()  # pass as ``surrogate`` to :func:`forward` to get ``u = h - threshold`` instead of a derivative


def _empty(p: Plan, dtype: torch.dtype, buf_shape: "tuple | None" = None) -> torch.Tensor:
    """An uninitialised output laid out as the plan says (a view of a pooled buffer); ``buf_shape``: another
    storage shape in the plan's order (:attr:`Plan.summed_buf_shape`)."""
    return POOL.empty(buf_shape or p.buf_shape, dtype).permute(p.to_logical)


def forward(x: torch.Tensor, beta: torch.Tensor, th: torch.Tensor, vr: torch.Tensor, subtract: bool,
            surrogate, with_h: bool, lib: "ctypes.CDLL | None" = None):
    """LIF over ``x [T, B, ...]`` (see :func:`~snnkit.nn.native.layout.supports`).

    ``beta``, ``th``, ``vr``: all 0-dim, or all contiguous ``[N]`` (one value per neuron, in the memory order of
    x's neuron block, :func:`~snnkit.nn.native.layout.neuron_order`), of x's dtype.
    ``surrogate``: None (no gradient wanted), :data:`RAW_U`, or the surrogate whose derivative to evaluate at
    ``u = h - th``. ``lib``: the library to call (default: the loaded one).
    Returns ``(s, h, sg)`` with x's shape and :func:`~snnkit.nn.native.layout.out_strides`: spikes (0/1 in x's
    dtype), pre-reset potentials (None unless ``with_h``) and the surrogate derivative per step (None when
    ``surrogate`` is None; ``h - th`` for a surrogate the kernels do not know, code -1 of
    :func:`snnkit.nn.surrogate.kernel_form`).
    """
    p = plan(x)
    s = _empty(p, x.dtype)
    h = _empty(p, x.dtype) if with_h else None
    sg = _empty(p, x.dtype) if surrogate is not None else None
    code, p1, p2 = kernel_form(surrogate)
    failed = getattr(lib or build.loaded(), "lif_forward_" + p.suffix)(
        x.data_ptr(), p.xso, p.xst, s.data_ptr(), None if h is None else h.data_ptr(),
        None if sg is None else sg.data_ptr(), p.O, p.T, p.N, p.so, p.st, beta.data_ptr(), th.data_ptr(),
        vr.data_ptr(), int(beta.dim() > 0), int(subtract), code, p1, p2)
    if failed:
        raise MemoryError(f"LIF scan kernel: no memory for {p.N} neuron states")
    return s, h, sg


def backward(grad_s: "torch.Tensor | None", grad_h: "torch.Tensor | None", sg: torch.Tensor, s: torch.Tensor,
             beta: torch.Tensor, subtract: bool, summed: bool = False) -> torch.Tensor:
    """Gradient at the pre-reset potentials, ``dL/dh [T, B, ...]``, by the reverse recurrence.

    ``dh[t] = grad_s[t] sg[t] + grad_h[t] + beta dh[t+1] (1 - s[t])`` (no ``1 - s`` factor for subtract: the
    reset is detached). ``s`` is the forward's spike tensor (its layout is the one the kernels read; the other
    tensors are copied to it only if they differ); ``beta`` is 0-dim or contiguous ``[N]``.
    ``summed``: return ``sum_t dh[t]`` instead, ``[1, B, ...]`` (the gradient of a drive repeated over the
    steps), accumulated inside the recurrence.
    """
    p = plan(s)
    gs, gh, sg = (_like(g, s) for g in (grad_s, grad_h, sg))
    if summed:  # [B, N] in x's neuron order, viewed as [1, B, ...]
        out = _empty(p, s.dtype, p.summed_buf_shape)
        dh_ptr, acc_ptr = None, out.data_ptr()
    else:
        out = _empty(p, s.dtype)
        dh_ptr, acc_ptr = out.data_ptr(), None
    failed = getattr(build.loaded(), "lif_backward_" + p.suffix)(
        None if gs is None else gs.data_ptr(), None if gh is None else gh.data_ptr(), sg.data_ptr(),
        s.data_ptr(), dh_ptr, acc_ptr, p.O, p.T, p.N, p.so, p.st, beta.data_ptr(), int(beta.dim() > 0),
        int(subtract))
    if failed:
        raise MemoryError(f"LIF scan kernel: no memory for {p.N} neuron states")
    return out


def pool2x2(x: torch.Tensor, scale: float) -> "torch.Tensor | None":
    """2 x 2 window sums times ``scale`` (stride 2) of a contiguous CPU float ``x [N, C, H, W]`` (even H, W),
    or None when the kernels are off or cannot read ``x`` (the caller then uses torch)."""
    lib = build.load() if _pool_input(x) else None  # the input first: never load while torch.compile traces
    if lib is None:
        return None
    n, c, h, w = x.shape
    y = POOL.empty((n, c, h // 2, w // 2), x.dtype)
    getattr(lib, "pool2_forward_" + suffix(x.dtype))(x.data_ptr(), y.data_ptr(), n * c, h, w, scale)
    return y


def pool2x2_backward(grad: torch.Tensor, scale: float) -> "torch.Tensor | None":
    """The gradient of :func:`pool2x2` at its input, from ``grad [N, C, H/2, W/2]``; None as for pool2x2."""
    lib = build.load() if _pool_input(grad) else None
    if lib is None:
        return None
    n, c, h2, w2 = grad.shape
    dx = POOL.empty((n, c, 2 * h2, 2 * w2), grad.dtype)
    getattr(lib, "pool2_backward_" + suffix(grad.dtype))(grad.data_ptr(), dx.data_ptr(), n * c, 2 * h2, 2 * w2,
                                                          scale)
    return dx


def _pool_input(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 4
            and x.is_contiguous() and x.numel() > 0 and not torch.compiler.is_compiling())


def _like(g: "torch.Tensor | None", ref: torch.Tensor) -> "torch.Tensor | None":
    """``g`` stored with ``ref``'s strides (a copy only when they differ, e.g. an expanded gradient)."""
    if g is None or (g.stride() == ref.stride() and g.dtype == ref.dtype):
        return g
    return torch.empty_like(ref).copy_(g)


def loihi_forward(inputs: torch.Tensor, keep: "torch.Tensor | None", thr: float, reset: int, clip: bool,
                  vmax: float) -> "tuple[torch.Tensor, int] | None":
    """loihi-emu's fixed-point scan of a feed-forward layer (``loihi_scan.h``): the potentials before the reset
    ``[T, B, n]`` (float64) for the per-step inputs ``u + bias`` ``inputs [T, B, n]`` (integer-valued float64),
    and the number of values clipped to ``+-vmax`` (when ``clip``).

    keep: per-neuron decay factor of ``v`` ``[n]`` (float64; None: no leak); reset: 0 to zero, 1 by subtraction,
    2 none (a readout). None when the kernels are off or ``inputs`` is not a CPU tensor (the caller uses torch).
    """
    lib = build.load() if _loihi_input(inputs) else None
    if lib is None:
        return None
    inputs = inputs.contiguous()
    keep = None if keep is None else keep.contiguous()
    steps, b, n = inputs.shape
    hs = POOL.empty((steps, b, n), torch.float64)
    clipped = lib.loihi_forward_f64(inputs.data_ptr(), hs.data_ptr(), steps, b, n,
                                    None if keep is None else keep.data_ptr(), thr, reset, int(clip), vmax)
    if clipped < 0:
        raise MemoryError(f"loihi scan kernel: no memory for {b * n} neuron states")
    return hs, int(clipped)


def loihi_backward(g_in: torch.Tensor, pass_: "torch.Tensor | None",
                   keep: "torch.Tensor | None") -> "torch.Tensor | None":
    """The reverse recurrence ``g[t] = g_in[t] + (g[t + 1] * keep) * pass[t]`` over ``[T, B, n]`` float64
    (``keep [n]``, ``pass [T, B, n]``; None: factor 1); None as for :func:`loihi_forward`."""
    lib = build.load() if _loihi_input(g_in) else None
    if lib is None:
        return None
    g_in = g_in.contiguous()
    pass_ = None if pass_ is None else pass_.contiguous()
    keep = None if keep is None else keep.contiguous()
    steps, b, n = g_in.shape
    g = POOL.empty((steps, b, n), torch.float64)
    lib.loihi_backward_f64(g_in.data_ptr(), None if pass_ is None else pass_.data_ptr(),
                           None if keep is None else keep.data_ptr(), g.data_ptr(), steps, b, n)
    return g


def loihi_gradient(g_out: torch.Tensor, hs: torch.Tensor, keep: "torch.Tensor | None", thr: float, mode: int,
                   surrogate, scale: float) -> "torch.Tensor | None":
    """A feed-forward LIF/IF layer's whole straight-through gradient in one reverse pass (``loihi_grad_f64``):
    ``dL/du [T, B, n]`` times ``scale`` (a power of two) from ``g_out = dL/d raster`` on the layer's steps and
    its potentials before the reset ``hs`` (both ``[T, B, n]`` float64).

    mode: 0 reset to zero, 1 by subtraction, 2 a readout (no surrogate); keep: ``v``'s decay factor ``[n]``
    (None: no leak); surrogate: evaluated on ``(h - thr) / thr``. None as for :func:`loihi_forward`, or when the
    kernels do not know the surrogate (:func:`snnkit.nn.surrogate.kernel_form`).
    """
    code, p1, p2 = kernel_form(surrogate) if mode != 2 else (0, 0.0, 0.0)
    lib = build.load() if code >= 0 and _loihi_input(g_out) and _loihi_input(hs) else None
    if lib is None:
        return None
    g_out, hs = g_out.contiguous(), hs.contiguous()
    keep = None if keep is None else keep.contiguous()
    steps, b, n = hs.shape
    g_u = POOL.empty((steps, b, n), torch.float64)
    lib.loihi_grad_f64(g_out.data_ptr(), hs.data_ptr(), None if keep is None else keep.data_ptr(), g_u.data_ptr(),
                       steps, b, n, thr, mode, code, p1, p2, scale)
    return g_u


def _loihi_input(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float64 and x.dim() == 3 and not torch.compiler.is_compiling()

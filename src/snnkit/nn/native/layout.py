"""How the compiled kernels walk a tensor ``x [T, B, ...]``: as ``O x T x N`` elements (batch, steps, neurons),
element ``(o, t, n)`` at ``o * so + t * st + n`` (strides in elements). :func:`plan` gives the :class:`Plan` of
one shape, strides and dtype (cached); :func:`supports`, :func:`neuron_order` and :func:`out_strides` are what
callers ask of it.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch


class Plan(NamedTuple):
    """How the kernels walk an input ``x [T, B, ...]`` of one shape, strides and dtype (computed once, cached).

    The per-step neuron block must be one contiguous span of memory, in any dimension order (``order``, outer
    first: channels-last ``[C, H, W]`` storage gives ``(1, 2, 0)``); the batch and time strides are free,
    0 included (an input expanded over time is read without copying it). Outputs keep x's neuron order, with
    time outer if x stores it so and batch outer otherwise (what the layers pass).
    """

    xso: int                  # input batch stride (elements)
    xst: int                  # input time stride
    O: int                    # batch size
    T: int                    # steps
    N: int                    # neurons per step
    order: tuple              # neuron dimensions in memory order (per-neuron parameters follow it)
    buf_shape: tuple          # storage shape of an output, outer to inner
    to_logical: tuple         # permutation of such a buffer into [T, B, ...]
    strides: tuple            # the outputs' strides as [T, B, ...]
    suffix: str               # kernel variant: f32 / f64

    @property
    def so(self) -> int:
        return self.strides[1]

    @property
    def st(self) -> int:
        return self.strides[0]

    @property
    def summed_buf_shape(self) -> tuple:
        """Storage shape of a sum over time of an output (its time axis of size 1), outer to inner."""
        time_outer = self.to_logical[0] == 0
        return (1, *self.buf_shape[1:]) if time_outer else (self.buf_shape[0], 1, *self.buf_shape[2:])

    @property
    def summed_strides(self) -> tuple:
        """The strides, as ``[1, B, ...]``, of such a sum (a contiguous buffer of that shape, permuted)."""
        return _logical_strides(self.summed_buf_shape, self.to_logical)


_PLANS: dict = {}


def plan(x: torch.Tensor) -> "Plan | None":
    """The :class:`Plan` for ``x``, or None when the kernels cannot read it (device, dtype, layout, empty)."""
    key = (x.shape, x.stride(), x.dtype, x.device.type)
    try:
        return _PLANS[key]
    except KeyError:
        pass
    except TypeError:  # symbolic sizes (torch.compile with dynamic shapes) do not hash: not cached
        return _make_plan(x)
    made = _make_plan(x)
    if len(_PLANS) > 1024:
        _PLANS.clear()
    _PLANS[key] = made
    return made


def _make_plan(x: torch.Tensor) -> "Plan | None":
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dim() < 2 or x.numel() == 0:
        return None
    dims = range(x.dim() - 2)
    order = sorted(dims, key=lambda d: (-x.stride(2 + d), d))
    expected = 1
    for d in reversed(order):
        if x.shape[2 + d] != 1 and x.stride(2 + d) != expected:
            return None
        expected *= x.shape[2 + d]
    mem = ([0, 1] if x.stride(0) > x.stride(1) else [1, 0]) + [2 + d for d in order]
    buf_shape = tuple(x.shape[d] for d in mem)
    to_logical = tuple(sorted(range(x.dim()), key=mem.__getitem__))
    return Plan(x.stride(1), x.stride(0), x.shape[1], x.shape[0], math.prod(x.shape[2:]), tuple(order),
                buf_shape, to_logical, _logical_strides(buf_shape, to_logical), suffix(x.dtype))


def _logical_strides(buf_shape: tuple, to_logical: tuple) -> tuple:
    """The strides (elements), in ``[T, B, ...]`` order, of a contiguous buffer of ``buf_shape`` (outer to inner)
    permuted by ``to_logical``."""
    contiguous, acc = [0] * len(buf_shape), 1
    for i in reversed(range(len(buf_shape))):
        contiguous[i] = acc
        acc *= buf_shape[i]
    return tuple(contiguous[d] for d in to_logical)


def suffix(dtype: torch.dtype) -> str:
    """The kernels' name suffix for ``dtype`` (float32 or float64): ``"f32"`` or ``"f64"``."""
    return "f32" if dtype == torch.float32 else "f64"


def supports(x: torch.Tensor) -> bool:
    """Whether the kernels can read ``x [T, B, ...]`` as it is (CPU, float32/64, contiguous neuron block)."""
    return plan(x) is not None


def neuron_order(x: torch.Tensor) -> "list[int] | None":
    """The memory order of ``x``'s neuron dimensions (see :class:`Plan`), or None."""
    p = plan(x)
    return None if p is None else list(p.order)


def out_strides(x: torch.Tensor) -> "tuple[int, ...]":
    """The strides (elements) of the kernels' outputs for an input ``x`` that :func:`supports` (also for fake
    tensors, symbolic sizes included)."""
    return plan(x).strides


def summed_strides(x: torch.Tensor) -> "tuple[int, ...]":
    """The strides of the kernels' sum over time (``[1, B, ...]``, :func:`snnkit.nn.native.backward` with
    ``summed``) for outputs laid out like ``x`` (also for fake tensors)."""
    return plan(x).summed_strides

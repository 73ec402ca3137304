"""Stateless layers applied to every step of a ``[B, T, ...]`` tensor (no delay, docs/semantics.md).

``torch.nn.Linear`` already works on ``[B, T, F]``; the layers here fold the time axis into the batch for the
operators that expect ``[N, C, H, W]``.

A time-invariant input (one frame repeated over T as a stride-0 view, what the direct encoder returns) need
not be computed T times: ``SpikingModel.propagate`` runs the per-step layers before the first spiking layer on
the frame alone, and :meth:`BatchNormTT.forward_frame` normalises a frame with statistics that count its T
copies. The values are those of the per-step computation (docs/semantics.md, "Time-invariant input").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from snnkit import distributed
from snnkit.nn import native


def time_invariant(x: torch.Tensor) -> bool:
    """Whether ``x [B, T, ...]`` (T > 1) is one frame repeated over time as a stride-0 view.

    Only a view can have stride 0, so the frames are then identical by construction.
    """
    return x.dim() >= 2 and x.shape[1] > 1 and x.stride(1) == 0


def _over_time(fn, x: torch.Tensor) -> torch.Tensor:
    b, t = x.shape[:2]
    y = fn(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` on ``[B, T, C, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _over_time(super().forward, x)


class _Pool2x2(torch.autograd.Function):
    """2 x 2 window, stride 2, no padding, on contiguous ``[N, C, H, W]`` with even H and W: the window sums
    times ``scale`` (1/4 averages, 1 sums), as strided additions.

    ATen's NCHW ``avg_pool2d`` and its backward run per output plane; on the small feature maps of these
    networks they were measured 5x (forward) and 2.5x (backward) slower than this torch form, and the
    compiled kernels (:func:`snnkit.nn.native.pool2x2`, same order of additions) are faster still.
    The sum is ``(x00 + x10) + (x01 + x11)``: exact for spikes and integers, within rounding of ATen's order for
    other values.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        n, c, h, w = x.shape
        ctx.shape, ctx.scale = x.shape, scale
        y = native.pool2x2(x, scale)
        if y is not None:
            return y
        rows = x.view(n * c * h // 2, 2, w)
        cols = (rows[:, 0] + rows[:, 1]).view(-1, w // 2, 2)
        return (cols[..., 0] + cols[..., 1]).mul_(scale).view(n, c, h // 2, w // 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n, c, h, w = ctx.shape
        dx = native.pool2x2_backward(grad.contiguous(), ctx.scale)
        if dx is not None:
            return dx, None
        g = (grad * ctx.scale).reshape(n * c * h // 2, w // 2)
        out = grad.new_empty(n * c * h // 2, 2, w // 2, 2)
        for i in (0, 1):
            for j in (0, 1):
                out[:, i, :, j] = g
        return out.view(n, c, h, w), None


def _is_2x2(pool: nn.AvgPool2d, x: torch.Tensor) -> bool:
    """Whether ``pool`` on ``x [N, C, H, W]`` is what :class:`_Pool2x2` computes."""
    pair = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
    return (pair(pool.kernel_size) == (2, 2) and pair(pool.stride) == (2, 2) and pair(pool.padding) == (0, 0)
            and not pool.ceil_mode and pool.divisor_override is None and x.dim() == 4 and x.is_contiguous()
            and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 and x.dtype.is_floating_point)


class AvgPool2d(nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on ``[B, T, C, H, W]``."""

    scale_by_window = 0.25  # the 2 x 2 fast path multiplies each window sum by this

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if _is_2x2(self, x):
            return _Pool2x2.apply(x, self.scale_by_window)
        return self._aten(x)

    def _aten(self, x: torch.Tensor) -> torch.Tensor:
        return nn.AvgPool2d.forward(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _over_time(self._pool, x)


class SumPool2d(AvgPool2d):
    """Sum over each pooling window (``kH*kW`` times the average; zero padding counts as zeros)."""

    scale_by_window = 1.0

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding, count_include_pad=True)

    def _aten(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size if isinstance(self.kernel_size, tuple) else (self.kernel_size, self.kernel_size)
        return nn.AvgPool2d.forward(self, x) * (k[0] * k[1])


class MaxPool2d(nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on ``[B, T, C, H, W]``, each step on its own. NIR has no max pool: over spikes the
    export writes its exact equivalent, elsewhere it refuses (``snnkit.export.exporter``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _over_time(super().forward, x)


class Flatten(nn.Module):
    """Flatten everything after ``[B, T]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)  # also for an empty batch (a rank's share of a small last batch)


class BatchNormTT(nn.Module):
    """BatchNorm with statistics shared over batch and time (tdBN-style), on ``[B, T, C, ...]``.

    Folded into the preceding Linear/Conv2d at export (eval statistics), so it never reaches a target.

    ``synced`` (set by :func:`sync_batchnorm` for training on several processes): in training mode the batch
    statistics are those of the global batch, summed over the ranks of the process group (gradients flow
    through the sums), so every rank normalises as one process holding the whole batch would.
    """

    synced = False

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        return self._normalise(x.reshape(b * t, *x.shape[2:])).reshape(x.shape)

    def _normalise(self, y: torch.Tensor) -> torch.Tensor:
        """``self.bn`` on ``[N, C, ...]`` (``[N, C, H, W]`` through ``[N, C, H*W]``)."""
        if self.synced and self.bn.training and distributed.active():
            return self._synced(y, 1)
        return self.bn(y.flatten(2)).reshape(y.shape) if y.dim() > 2 else self.bn(y)

    def forward_frame(self, x: torch.Tensor, copies: int) -> torch.Tensor:
        """``forward`` of ``copies`` identical steps, given one of them, ``x [B, 1, C, ...]``; returns ``[B, 1, C, ...]``.

        The batch mean and (biased) variance of identical steps are those of one step; only the running
        variance, which torch updates with the unbiased variance, counts the samples, so it is updated here
        with the count of all the steps, as ``forward`` on the whole sequence would.
        """
        frame = x[:, 0]
        bn = self.bn
        if self.synced and bn.training and distributed.active():
            return self._synced(frame, copies).unsqueeze(1)
        if not (bn.training and bn.track_running_stats):
            y = self._normalise(frame)
        else:
            flat = frame.flatten(2) if frame.dim() > 2 else frame
            y = F.batch_norm(flat, None, None, bn.weight, bn.bias, True, 0.0, bn.eps).reshape(frame.shape)
            with torch.no_grad():
                dims = [d for d in range(flat.dim()) if d != 1]
                var, mean = torch.var_mean(flat, dim=dims, correction=0)
                self._track(mean, var, flat.numel() // flat.shape[1] * copies)
        return y.unsqueeze(1)

    def _track(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        """Running statistics from a batch of ``n`` values per channel (mean, biased variance), as torch does."""
        bn = self.bn
        if not bn.track_running_stats:
            return
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), m)
            bn.running_var.lerp_((var * (n / max(n - 1, 1))).to(bn.running_var.dtype), m)

    def _synced(self, y: torch.Tensor, copies: int) -> torch.Tensor:
        """Training-mode normalisation of ``y [N, C, ...]`` with the statistics of the global batch (all ranks;
        two passes: the mean, then the mean squared deviation); ``copies`` as in :meth:`forward_frame`. Computed in
        float32 and returned in ``y``'s dtype, as torch's batch norm does under autocast."""
        bn = self.bn
        flat = (y.flatten(2) if y.dim() > 2 else y.unsqueeze(2)).float()  # [N, C, L]
        mean = distributed.global_mean(flat, (0, 2))
        centred = flat - mean[None, :, None]
        var = distributed.global_mean(centred.square(), (0, 2))
        out = centred * torch.rsqrt(var + bn.eps)[None, :, None]
        if bn.affine:
            out = out * bn.weight[None, :, None] + bn.bias[None, :, None]
        n = int(distributed.all_sum(torch.tensor([flat.shape[0] * flat.shape[2]], device=y.device)).item())
        self._track(mean.detach(), var.detach(), n * copies)
        return out.reshape(y.shape).to(y.dtype)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make every :class:`BatchNormTT` of ``model`` use the global batch's statistics in training mode when a
    process group is running (:mod:`snnkit.distributed`); returns ``model``."""
    for m in model.modules():
        if isinstance(m, BatchNormTT):
            m.synced = True
    return model

"""Stateless layers applied to every step of a ``[B, T, ...]`` tensor (no delay, docs/semantics.md).

``torch.nn.Linear`` already works on ``[B, T, F]``; the layers here fold the time axis into the batch for the
operators that expect ``[N, C, H, W]``.
"""
from __future__ import annotations

import torch
from torch import nn


def _over_time(fn, x: torch.Tensor) -> torch.Tensor:
    b, t = x.shape[:2]
    y = fn(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` on ``[B, T, C, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _over_time(super().forward, x)


class AvgPool2d(nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on ``[B, T, C, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _over_time(super().forward, x)


class SumPool2d(nn.AvgPool2d):
    """Sum over each pooling window (``kH*kW`` times the average; zero padding counts as zeros)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding, count_include_pad=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size if isinstance(self.kernel_size, tuple) else (self.kernel_size, self.kernel_size)
        return _over_time(super().forward, x) * (k[0] * k[1])


class Flatten(nn.Module):
    """Flatten everything after ``[B, T]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:2], -1)


class BatchNormTT(nn.Module):
    """BatchNorm with statistics shared over batch and time (tdBN-style), on ``[B, T, C, ...]``.

    Folded into the preceding Linear/Conv2d at export (eval statistics), so it never reaches a target.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        y = x.reshape(b * t, *x.shape[2:])
        if y.dim() > 2:  # [N, C, H, W] -> [N, C, H*W] for BatchNorm1d
            y = self.bn(y.flatten(2)).reshape(y.shape)
        else:
            y = self.bn(y)
        return y.reshape(x.shape)

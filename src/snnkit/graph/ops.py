"""NIR's connection nodes as numpy functions on batched arrays (torch-free).

Shapes carry no batch axis in NIR; here every function takes a leading batch axis: ``x`` is ``[N, *in_shape]``
and the result ``[N, *out_shape]``, in float64. These are exact definitions (the Loihi mapping probes them,
shape inference applies them to zeros), not fast kernels.
"""
from __future__ import annotations

import nir
import numpy as np

from snnkit.graph.kinds import POOLING


def pair(v, n: int = 2) -> tuple[int, ...]:
    """``v`` (int, sequence or array) as an ``n``-tuple of ints."""
    a = np.atleast_1d(np.asarray(v)).astype(np.int64).ravel()
    if a.size == 1:
        a = np.repeat(a, n)
    return tuple(int(i) for i in a[:n])


def conv_padding(node: nir.NIRNode) -> tuple[int, ...]:
    """Numeric padding of a Conv1d/Conv2d node (``'valid'`` -> 0, ``'same'`` -> symmetric, odd kernels)."""
    w = np.asarray(node.weight)
    nd = w.ndim - 2
    pad = node.padding
    if isinstance(pad, str):
        if pad == "valid":
            return (0,) * nd
        k = w.shape[2:]
        d = pair(node.dilation, nd)
        if any((dd * (kk - 1)) % 2 for kk, dd in zip(k, d)):
            raise ValueError(f"padding='same' with an even kernel {k} needs asymmetric padding")
        return tuple(dd * (kk - 1) // 2 for kk, dd in zip(k, d))
    return pair(pad, nd)



def conv2d(x: np.ndarray, w: np.ndarray, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
           groups: int = 1) -> np.ndarray:
    """Cross-correlation as torch's ``conv2d``: ``x [N, C, H, W]``, ``w [O, C/groups, kH, kW]`` -> ``[N, O, H', W']``."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    og = o // groups
    outs = []
    for g in range(groups):
        xs = win[:, g * cg:(g + 1) * cg]  # [N, cg, H', W', kh, kw]
        ws = w[g * og:(g + 1) * og]  # [og, cg, kh, kw]
        outs.append(np.einsum("ncxyij,ocij->noxy", xs, ws, optimize=True))
    return np.concatenate(outs, axis=1)


def conv1d(x: np.ndarray, w: np.ndarray, stride=(1,), padding=(0,), dilation=(1,), groups: int = 1) -> np.ndarray:
    """``x [N, C, L]``, ``w [O, C/groups, k]`` -> ``[N, O, L']`` (as a 2-D convolution of height 1)."""
    y = conv2d(x[:, :, None, :], w[:, :, None, :], (1, stride[0]), (0, padding[0]), (1, dilation[0]), groups)
    return y[:, :, 0, :]


def sum_pool2d(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """Sum over windows: ``x [N, C, H, W]`` -> ``[N, C, H', W']`` (zero padding)."""
    c = x.shape[1]
    ones = np.ones((c, 1, *kernel), dtype=x.dtype)
    return conv2d(x, ones, stride, padding, (1, 1), groups=c)


def apply_node(node: nir.NIRNode, x: np.ndarray) -> np.ndarray:
    """Apply one connection node to ``x [N, *in_shape]`` (float64)."""
    n = x.shape[0]
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight, dtype=np.float64)
        y = x.reshape(n, -1) @ w.T
        if isinstance(node, nir.Affine):
            y = y + np.asarray(node.bias, dtype=np.float64).reshape(1, -1)
        return y
    if isinstance(node, nir.Scale):
        return x * np.asarray(node.scale, dtype=np.float64)
    if isinstance(node, nir.Flatten):
        shape = x.shape[1:]
        nd = len(shape)
        start = int(node.start_dim) % nd if nd else 0
        end = int(node.end_dim) % nd if nd else 0
        new = shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
        return x.reshape(n, *new)
    if isinstance(node, nir.Conv2d):
        y = conv2d(x, np.asarray(node.weight, dtype=np.float64), pair(node.stride), conv_padding(node),
                   pair(node.dilation), int(np.asarray(node.groups).item()))
        return y + _channel_bias(node, y.ndim)
    if isinstance(node, nir.Conv1d):
        y = conv1d(x, np.asarray(node.weight, dtype=np.float64), pair(node.stride, 1), conv_padding(node),
                   pair(node.dilation, 1), int(np.asarray(node.groups).item()))
        return y + _channel_bias(node, y.ndim)
    if isinstance(node, POOLING):
        k = pair(node.kernel_size)
        y = sum_pool2d(x, k, pair(node.stride), pair(node.padding))
        return y / (k[0] * k[1]) if isinstance(node, nir.AvgPool2d) else y
    raise ValueError(f"not a connection node: {type(node).__name__}")


def _channel_bias(node: nir.NIRNode, ndim: int) -> np.ndarray:
    b = np.asarray(getattr(node, "bias", 0.0) if getattr(node, "bias", None) is not None else 0.0,
                   dtype=np.float64)
    if b.ndim == 0:
        return b
    return b.reshape((1, -1) + (1,) * (ndim - 2))

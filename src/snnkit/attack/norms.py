"""Threat-model geometry for Linf and L2 balls intersected with the [0, 1] box.

All functions take batched tensors ``[B, ...]`` and treat each sample separately; ``eps`` is a float or a
``[B]`` tensor.
"""
from __future__ import annotations

import torch

from snnkit.attack.base import rand_like, randn_like
from snnkit.distributed import draw

NORMS = ("Linf", "L2")


def _per_sample(v: "float | torch.Tensor", x: torch.Tensor) -> "float | torch.Tensor":
    if isinstance(v, torch.Tensor):
        return v.to(x.device, x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return v


def l2(v: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm ``[B]``."""
    return v.flatten(1).norm(dim=1)


def distance(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample distance ``[B]`` in the given norm."""
    d = (x_adv - x).flatten(1)
    return d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: "float | torch.Tensor", norm: str) -> torch.Tensor:
    """The point of the eps ball around ``x`` (then clipped to [0, 1]) nearest to ``x_adv`` (Linf: exact;
    L2: radial scaling followed by the box clip, which can only shrink the perturbation)."""
    delta = x_adv - x
    e = _per_sample(eps, x)
    if norm == "Linf":
        delta = torch.clamp(delta, -e, e)
    elif norm == "L2":
        n = _per_sample(l2(delta), x)
        factor = torch.clamp(e / (n + 1e-12), max=1.0)
        delta = delta * factor
    else:
        raise ValueError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    return (x + delta).clamp(0.0, 1.0)


def random_point(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random point of the eps ball around ``x``, clipped to [0, 1]."""
    if norm == "Linf":
        delta = (2 * rand_like(x, generator) - 1) * eps
    else:
        direction = randn_like(x, generator)
        direction = direction / _per_sample(l2(direction) + 1e-12, x)
        d = x[0].numel()
        radius = eps * draw(torch.rand, x.shape[:1], generator=generator, dtype=x.dtype).pow(1.0 / d).to(x.device)
        delta = direction * _per_sample(radius, x)
    return (x + delta).clamp(0.0, 1.0)


def random_boundary_point(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """``x + eps * t / ||t||`` clipped to [0, 1], with ``t`` uniform in [-1, 1]^d (Linf) or standard normal (L2):
    a random point on the sphere of radius eps (APGD's starting point)."""
    t = 2 * rand_like(x, generator) - 1 if norm == "Linf" else randn_like(x, generator)
    scale = t.flatten(1).abs().amax(1) if norm == "Linf" else l2(t)
    return (x + eps * t / _per_sample(scale + 1e-12, x)).clamp(0.0, 1.0)


def steepest_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-norm ascent direction of a linearised loss: ``sign(g)`` (Linf) or ``g / ||g||_2`` (L2)."""
    if norm == "Linf":
        return grad.sign()
    return grad / _per_sample(l2(grad) + 1e-12, grad)


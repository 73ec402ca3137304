"""Per-sample attack losses ``loss(scores [B, C], y [B]) -> [B]``; an attack maximises them."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from snnkit.attack.base import margin

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the softmax of ``scores`` per sample."""
    return F.cross_entropy(scores, y, reduction="none")


def dlr(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020): ``-(z_y - max_{j!=y} z_j) / (z_(1) - z_(3) + 1e-12)``
    with ``z_(i)`` the i-th largest score; invariant to shifting and scaling the scores. Needs >= 3 classes."""
    if scores.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, the model has {scores.shape[1]}")
    top = scores.sort(dim=1, descending=True).values
    return -margin(scores, y) / (top[:, 0] - top[:, 2] + 1e-12)


def negative_margin(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j!=y} z_j - z_y``: positive once the sample is misclassified (the C&W / Square margin)."""
    return -margin(scores, y)


LOSSES: dict[str, Loss] = {"ce": cross_entropy, "dlr": dlr, "margin": negative_margin}


def get_loss(name: str) -> Loss:
    if name not in LOSSES:
        raise ValueError(f"unknown attack loss {name!r}; available: {', '.join(LOSSES)}")
    return LOSSES[name]

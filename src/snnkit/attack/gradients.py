"""Input gradients of attack losses, with expectation over transformation (EOT) for stochastic models."""
from __future__ import annotations

import torch

from snnkit.attack.base import ScoreFn, as_scores, check_inputs, eval_mode
from snnkit.attack.losses import Loss, get_loss


def loss_and_grad(model: ScoreFn, x: torch.Tensor, y: torch.Tensor, loss: Loss,
                  eot_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample loss ``[B]``, scores ``[B, C]`` and ``d loss / d x`` ``[B, ...]`` at ``x``.

    With ``eot_samples = n > 1`` the model is run n times (fresh draws of its randomness each time) and the
    loss, scores and gradient are the means over the n draws (EOT, Athalye et al. 2018). The gradient of each
    sample is that of its own loss (the batch sum is differentiated; samples do not interact).
    """
    if eot_samples < 1:
        raise ValueError(f"eot_samples must be >= 1, not {eot_samples}")
    total_loss = torch.zeros(x.shape[0], device=x.device)
    total_scores = None
    total_grad = torch.zeros_like(x)
    for _ in range(eot_samples):
        xr = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            scores = as_scores(model(xr), x.shape[0])
            if not scores.requires_grad:
                raise ValueError("the model's output does not depend differentiably on its input "
                                 "(no autograd graph); use a black-box attack or a differentiable twin")
            per_sample = loss(scores, y)
            (grad,) = torch.autograd.grad(per_sample.sum(), xr)
        total_loss += per_sample.detach()
        total_grad += grad
        total_scores = scores.detach() if total_scores is None else total_scores + scores.detach()
    n = float(eot_samples)
    return total_loss / n, total_scores / n, total_grad / n


def input_gradient(model: ScoreFn, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce",
                   eot_samples: int = 1) -> torch.Tensor:
    """``d loss / d x`` ``[B, ...]`` of the per-sample loss (model in eval mode, restored after)."""
    x, y = check_inputs(x, y)
    with eval_mode(model):
        return loss_and_grad(model, x, y, get_loss(loss), eot_samples)[2]


def input_gradient_sparsity(model: ScoreFn, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce",
                            batch_size: int = 256) -> float:
    """Fraction of exact zeros in ``d loss / d x`` over all samples and input entries (0 = dense, 1 = none).

    A high value means gradient-based attacks see nothing: either real insensitivity or gradient masking
    (temporal codes, hard thresholds, saturated softmax). Used by the masking checks and training metrics.
    """
    x, y = check_inputs(x, y)
    if x.shape[0] == 0:
        raise ValueError("input_gradient_sparsity needs at least one sample")
    zeros = 0
    with eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            grad = loss_and_grad(model, x[start:start + batch_size], y[start:start + batch_size], get_loss(loss))[2]
            zeros += int((grad == 0).sum())
    return zeros / x.numel()

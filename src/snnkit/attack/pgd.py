"""Projected gradient attacks: PGD (Madry et al. 2018), BIM (Kurakin et al. 2017) and FGSM (Goodfellow et al.
2015) as one loop with different defaults.

One step: ``x <- Proj_{B(x0, eps) & [0,1]}(x + alpha * d)`` with ``d = sign(grad)`` (Linf) or
``grad / ||grad||_2`` (L2). Random restarts re-attack only the samples not yet fooled; the per-sample worst
case over restarts (and, with ``return_best``, over iterates) is returned. Samples the model already
misclassifies are returned unchanged.
"""
from __future__ import annotations

import math

import torch

from snnkit.attack.base import Attack, ScoreFn, Seed, WorstCase, misclassified, query
from snnkit.attack.gradients import loss_and_grad
from snnkit.attack.losses import get_loss
from snnkit.attack.norms import project, random_point, steepest_step


class PGD(Attack):
    """Projected gradient descent on the loss, Linf or L2.

    eps: ball radius; alpha: step size (default ``2.5 * eps / steps``); steps: iterations per restart;
    random_start: start from a uniform point of the ball (else from ``x``); n_restarts: random restarts;
    loss: ``"ce"``, ``"dlr"`` or ``"margin"``; eot_samples: gradient draws averaged per step (stochastic
    models); return_best: keep, per sample, the first fooling iterate (else the highest-loss one) instead of
    the last iterate (``False`` reproduces the textbook/torchattacks output exactly).
    """

    family = "pgd"

    def __init__(self, model: ScoreFn, eps: float = 8 / 255, alpha: float | None = None, steps: int = 20, *,
                 norm: str = "Linf", random_start: bool = True, n_restarts: int = 1, loss: str = "ce",
                 eot_samples: int = 1, return_best: bool = True, seed: Seed = 0):
        super().__init__(model, eps, norm=norm, seed=seed)
        if steps < 1 or n_restarts < 1:
            raise ValueError(f"{type(self).__name__}: steps and n_restarts must be >= 1 (got {steps}, {n_restarts})")
        self.steps = int(steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else float(alpha)
        self.random_start = random_start
        self.n_restarts = int(n_restarts)
        self.loss_name = loss
        self.loss = get_loss(loss)
        self.eot_samples = int(eot_samples)
        self.return_best = return_best

    @property
    def name(self) -> str:
        return f"PGD-{self.steps}"

    def perturb(self, x, y, generator):
        best = WorstCase(x)
        best.include_clean(query(self.model, x), y)
        for _ in range(self.n_restarts if self.random_start else 1):
            idx = (~best.fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x0, y0 = x[idx], y[idx]
            xk = random_point(x0, self.eps, self.norm, generator) if self.random_start else x0.clone()
            for _ in range(self.steps):
                loss, scores, grad = loss_and_grad(self.model, xk, y0, self.loss, self.eot_samples)
                if self.return_best:
                    best.update(xk, misclassified(scores, y0), loss, idx)
                xk = project(xk + self.alpha * steepest_step(grad, self.norm), x0, self.eps, self.norm)
            scores = self._final_scores(xk)
            best.update(xk, misclassified(scores, y0), self.loss(scores, y0), idx)
        return best.x

    def _final_scores(self, xk: torch.Tensor) -> torch.Tensor:
        """Scores at the last iterate (mean over the EOT draws)."""
        total = sum(query(self.model, xk) for _ in range(self.eot_samples))
        return total / self.eot_samples


class BIM(PGD):
    """Basic iterative method: PGD from ``x`` itself (no random start). Default ``alpha = 1/255`` and
    ``steps = ceil(min(255 eps + 4, 1.25 * 255 eps))`` as in Kurakin et al."""

    def __init__(self, model: ScoreFn, eps: float = 8 / 255, alpha: float = 1 / 255, steps: int | None = None, *,
                 norm: str = "Linf", loss: str = "ce", eot_samples: int = 1, return_best: bool = True,
                 seed: Seed = 0):
        if steps is None:
            steps = max(1, math.ceil(min(255 * eps + 4, 1.25 * 255 * eps) - 1e-9))
        super().__init__(model, eps, alpha, steps, norm=norm, random_start=False, loss=loss,
                         eot_samples=eot_samples, return_best=return_best, seed=seed)

    @property
    def name(self) -> str:
        return f"BIM-{self.steps}"


class FGSM(PGD):
    """Fast gradient sign method: one step of size eps from ``x`` (FGM, the normalised gradient, for L2)."""

    def __init__(self, model: ScoreFn, eps: float = 8 / 255, *, norm: str = "Linf", loss: str = "ce",
                 eot_samples: int = 1, seed: Seed = 0):
        super().__init__(model, eps, eps, 1, norm=norm, random_start=False, loss=loss,
                         eot_samples=eot_samples, return_best=False, seed=seed)

    @property
    def name(self) -> str:
        return "FGSM" if self.norm == "Linf" else "FGM-L2"

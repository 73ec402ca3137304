"""Auto-PGD (Croce & Hein, ICML 2020), written from the paper's Algorithm 1 and Section 3.

Per sample, from a random point ``x0`` on the sphere of radius eps and step size ``eta = 2 eps``::

    z      = P(x_k + eta * d(grad f(x_k)))                        d = sign (Linf) or unit L2 direction
    x_k+1  = P(x_k + a (z - x_k) + (1 - a)(x_k - x_k-1))          a = 1 at the first step, 0.75 after

At the checkpoints ``w_j = ceil(p_j N)`` with ``p_0 = 0``, ``p_1 = 0.22``,
``p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06)``, the step size is halved and the iterate replaced by the best
point found so far (``x_k+1 <- x_max``; the next momentum term is ``x_max - x_k``) when either

1. the loss increased in fewer than ``rho = 0.75`` of the steps since the last checkpoint, or
2. neither the step size (at the last checkpoint) nor the best loss changed since the last checkpoint.

Losses: cross-entropy (APGD-CE) or the difference of logits ratio (APGD-DLR, >= 3 classes). Random restarts
re-attack the samples not yet fooled; any fooling iterate is kept.
"""
from __future__ import annotations

import math

import torch

from snnkit.attack.base import Attack, ScoreFn, Seed, WorstCase, misclassified, query
from snnkit.attack.gradients import loss_and_grad
from snnkit.attack.losses import get_loss
from snnkit.attack.norms import project, random_boundary_point, steepest_step


def checkpoints(steps: int, p1: float = 0.22, decay: float = 0.03, min_gap: float = 0.06) -> list[int]:
    """Iterations ``w_j`` (``0 < w_j <= steps``, increasing) at which APGD checks its step size."""
    ps = [0.0, p1]
    while ps[-1] + max(ps[-1] - ps[-2] - decay, min_gap) <= 1.0:
        ps.append(ps[-1] + max(ps[-1] - ps[-2] - decay, min_gap))
    ws = sorted({math.ceil(p * steps - 1e-9) for p in ps[1:]})
    return [w for w in ws if 0 < w <= steps]


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B]`` -> ``[B, 1, ...]`` broadcastable against ``like``."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


class APGD(Attack):
    """Auto-PGD, Linf or L2.

    loss: ``"ce"`` (APGD-CE) or ``"dlr"`` (APGD-DLR); steps: iterations per restart (the paper uses 100);
    n_restarts: random restarts; rho: the condition-1 fraction; momentum: ``a`` after the first step;
    eot_samples: gradient draws averaged per step (stochastic models).
    """

    family = "apgd"

    def __init__(self, model: ScoreFn, eps: float = 8 / 255, *, norm: str = "Linf", loss: str = "ce",
                 steps: int = 100, n_restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
                 eot_samples: int = 1, seed: Seed = 0):
        super().__init__(model, eps, norm=norm, seed=seed)
        if steps < 1 or n_restarts < 1:
            raise ValueError(f"APGD: steps and n_restarts must be >= 1 (got {steps}, {n_restarts})")
        if loss not in ("ce", "dlr"):
            raise ValueError(f"APGD: loss must be 'ce' or 'dlr', not {loss!r}")
        self.loss_name = loss
        self.loss = get_loss(loss)
        self.steps = int(steps)
        self.n_restarts = int(n_restarts)
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.eot_samples = int(eot_samples)
        self.checkpoints = checkpoints(self.steps)

    @property
    def name(self) -> str:
        return f"APGD-{self.loss_name.upper()}"

    def perturb(self, x, y, generator):
        best = WorstCase(x)
        best.include_clean(query(self.model, x), y)
        for _ in range(self.n_restarts):
            idx = (~best.fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            self._run(x[idx], y[idx], generator, best, idx)
        return best.x

    def _step(self, x0, x_cur, x_prev, grad, eta, a):
        """One momentum step (the update of the module docstring), projected onto the threat set."""
        z = project(x_cur + _bcast(eta, x_cur) * steepest_step(grad, self.norm), x0, self.eps, self.norm)
        return project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), x0, self.eps, self.norm)

    def _run(self, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator, best: WorstCase,
             idx: torch.Tensor) -> None:
        """One APGD run from a random start; offers every iterate to ``best``."""
        x_cur = random_boundary_point(x0, self.eps, self.norm, generator)
        f_cur, scores, g = loss_and_grad(self.model, x_cur, y, self.loss, self.eot_samples)
        best.update(x_cur, misclassified(scores, y), f_cur, idx)
        x_prev = x_cur.clone()
        x_max, f_max, g_max = x_cur.clone(), f_cur.clone(), g.clone()
        eta = torch.full((x0.shape[0],), 2 * self.eps, device=x0.device, dtype=x0.dtype)
        eta_last, f_max_last = eta.clone(), f_max.clone()
        increases = torch.zeros(x0.shape[0], device=x0.device)
        last_w = 0
        marks = set(self.checkpoints)
        for k in range(self.steps):
            a = 1.0 if k == 0 else self.momentum
            x_next = self._step(x0, x_cur, x_prev, g, eta, a)
            f_next, scores, g_next = loss_and_grad(self.model, x_next, y, self.loss, self.eot_samples)
            best.update(x_next, misclassified(scores, y), f_next, idx)
            increases += (f_next > f_cur).float()
            up = f_next > f_max
            x_max[up], f_max[up], g_max[up] = x_next[up], f_next[up], g_next[up]
            x_prev, x_cur, f_cur, g = x_cur, x_next, f_next, g_next
            if k + 1 in marks and k + 1 < self.steps:
                w = k + 1
                cond1 = increases < self.rho * (w - last_w)
                cond2 = (eta == eta_last) & (f_max == f_max_last)
                halve = cond1 | cond2
                eta_last, f_max_last = eta.clone(), f_max.clone()
                eta = torch.where(halve, eta / 2, eta)
                x_cur, f_cur, g = x_cur.clone(), f_cur.clone(), g.clone()
                x_cur[halve], f_cur[halve], g[halve] = x_max[halve], f_max[halve], g_max[halve]
                increases.zero_()
                last_w = w

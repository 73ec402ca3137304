"""Adversarial training methods (``snn-train --method SPEC``): PGD-AT, FGSM-AT (random start) and TRADES.

Every method is ``method(model, x, y) -> (loss, clean logits)`` on inputs in [0, 1] (Linf threat model, eps in
input units). The inner maximisation runs with the model in eval mode (BatchNorm statistics frozen) and
backpropagates through the spiking layers' surrogates (BPTT), as an attacker would; its random draws come
from torch's global generator, which the trainer seeds and checkpoints.

- ``pgd-at[:eps=8/255,steps=7,alpha=2.5*eps/steps,random_start=1]`` (Madry et al. 2018): cross-entropy on
  PGD examples (uniform random start in the ball, ``steps`` signed-gradient steps of ``alpha``).
- ``fgsm-at[:eps=8/255,alpha=1.25*eps]`` (Wong et al. 2020, "fast" AT): one signed step of ``alpha`` from a
  uniform random point of the ball, projected back.
- ``trades[:beta=6,eps=0.031,steps=10,alpha=0.007]`` (Zhang et al. 2019): ``CE(f(x), y) + beta *
  KL(p(x) || p(x_adv))``, ``x_adv`` found from ``x + 0.001 N(0, 1)`` by ``steps`` signed steps maximising the
  KL term (softmax of the logits; batch mean).

Any of them takes ``retraction=b`` (SNN-RAT, Ding et al. 2022): after every optimiser step each weight
matrix (conv kernels flattened to ``[out, in*k*k]``) is pulled towards a Parseval-tight frame with
``W <- (1 + b) W - b W W^T W`` (``b = 0`` switches it off; the SNN-RAT paper uses small values such as 1e-3).
Regularisers (``--reg``) compose with every method; they see the clean batch.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from snnkit.attack.base import eval_mode
from snnkit.attack.norms import project, random_point
from snnkit.distributed import draw
from snnkit.train.objectives import Method, register_method

LossOnLogits = Callable[[torch.Tensor], torch.Tensor]


def linf_ascent(model: nn.Module, x: torch.Tensor, objective: LossOnLogits, eps: float, alpha: float, steps: int,
                start: torch.Tensor | None = None) -> torch.Tensor:
    """``steps`` signed-gradient ascent steps on ``objective(model(x_adv))`` within the Linf ball of ``eps``
    around ``x`` (and [0, 1]); returns the detached ``x_adv`` ``[B, ...]``.

    start: the first iterate (default ``x`` itself); it is projected onto the threat set first. The model is in
    eval mode during the search and restored after; gradients reach only the input.
    """
    x = x.detach()
    x_adv = project(x if start is None else start.detach(), x, eps, "Linf")
    with eval_mode(model):
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(objective(model(x_adv)), x_adv)
            x_adv = project(x_adv.detach() + alpha * grad.sign(), x, eps, "Linf")
    return x_adv.detach()


def parseval_retraction(model: nn.Module, b: float) -> None:
    """``W <- (1 + b) W - b W W^T W`` for every Linear/Conv weight of ``model``, in place."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                w = m.weight.view(m.weight.shape[0], -1)
                gram_w = w @ (w.T @ w) if w.shape[0] >= w.shape[1] else (w @ w.T) @ w
                w.mul_(1 + b).sub_(b * gram_w)


class _Adversarial(Method):
    """What the adversarial methods share: eps, the optional retraction, argument checks."""

    name = "adversarial"

    def __init__(self, eps: float, retraction: float = 0.0):
        if not 0 <= eps <= 1:
            raise ValueError(f"{self.name}: eps must be in [0, 1] (input units), not {eps}")
        if retraction < 0:
            raise ValueError(f"{self.name}: retraction must be >= 0, not {retraction}")
        self.eps = float(eps)
        self.retraction = float(retraction)

    def _check_steps(self, steps: float) -> int:
        if steps < 1 or steps != int(steps):
            raise ValueError(f"{self.name}: steps must be a positive integer, not {steps}")
        return int(steps)

    def after_step(self, model: nn.Module) -> None:
        """Called by the trainer after every optimiser step."""
        if self.retraction > 0:
            parseval_retraction(model, self.retraction)

    @staticmethod
    def clean_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)


@register_method("pgd-at")
class PGDAT(_Adversarial):
    """Cross-entropy on PGD examples (see module doc)."""

    name = "pgd-at"

    def __init__(self, eps: float = 8 / 255, steps: float = 7, alpha: float | None = None,
                 random_start: float = 1, retraction: float = 0.0):
        super().__init__(eps, retraction)
        self.steps = self._check_steps(steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else float(alpha)
        self.random_start = bool(random_start)

    def adversarial(self, model, x, y) -> torch.Tensor:
        start = random_point(x, self.eps, "Linf", torch.default_generator) if self.random_start else None
        return linf_ascent(model, x, lambda logits: F.cross_entropy(logits, y), self.eps, self.alpha, self.steps,
                           start)

    def __call__(self, model, x, y):
        x_adv = self.adversarial(model, x, y)
        return F.cross_entropy(model(x_adv), y), self.clean_logits(model, x)


@register_method("fgsm-at")
class FGSMAT(PGDAT):
    """One signed step from a uniform random start (see module doc)."""

    name = "fgsm-at"

    def __init__(self, eps: float = 8 / 255, alpha: float | None = None, retraction: float = 0.0):
        super().__init__(eps, 1, 1.25 * eps if alpha is None else alpha, random_start=1, retraction=retraction)


def kl_clean_adv(logits_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """``KL(p_clean || softmax(logits_adv))`` summed over classes, mean over the batch."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_clean, reduction="batchmean")


@register_method("trades")
class TRADES(_Adversarial):
    """``CE(f(x), y) + beta KL(p(x) || p(x_adv))`` (see module doc)."""

    name = "trades"

    def __init__(self, beta: float = 6.0, eps: float = 0.031, steps: float = 10, alpha: float = 0.007,
                 retraction: float = 0.0):
        super().__init__(eps, retraction)
        if beta < 0:
            raise ValueError(f"trades: beta must be >= 0, not {beta}")
        self.beta = float(beta)
        self.steps = self._check_steps(steps)
        self.alpha = float(alpha)

    def adversarial(self, model, x) -> torch.Tensor:
        with torch.no_grad(), eval_mode(model):
            p_clean = F.softmax(model(x), dim=1)
        start = x + 0.001 * draw(torch.randn, x.shape, dtype=x.dtype).to(x.device)
        return linf_ascent(model, x, lambda logits: kl_clean_adv(logits, p_clean), self.eps, self.alpha,
                           self.steps, start)

    def __call__(self, model, x, y):
        x_adv = self.adversarial(model, x)
        logits = model(x)
        robust = kl_clean_adv(model(x_adv), F.softmax(logits, dim=1))
        return F.cross_entropy(logits, y) + self.beta * robust, logits.detach()

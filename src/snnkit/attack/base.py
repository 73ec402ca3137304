"""What every attack shares: the calling convention, input checks, model mode, seeding, score access.

Calling convention (torchattacks-style)::

    x_adv = PGD(model, eps=8/255, steps=20)(x, y)

``x`` is ``[B, *input_shape]`` in [0, 1] (normalisation and spike encoding live inside the model), ``y`` is
``[B]`` class indices, ``model(x)`` returns ``[B, C]`` scores (logits; for snnkit models the output averaged
over time). The result is detached, in [0, 1] and within the attack's eps ball around ``x``.

A *score function* is anything callable as ``scores(x) -> [B, C]`` (a torch module, a deployed target wrapped
as a callable, a function returning numpy); black-box attacks and evaluation need nothing more.
"""
from __future__ import annotations

import abc
import contextlib
import math
from typing import Callable, ClassVar, Iterator, Union

import torch
from torch import nn

from snnkit.distributed import draw

ScoreFn = Callable[[torch.Tensor], "torch.Tensor"]
Seed = Union[int, torch.Generator, None]


@contextlib.contextmanager
def eval_mode(model: object) -> Iterator[object]:
    """Put every submodule of ``model`` in eval mode (BatchNorm statistics frozen) and restore each flag after.

    A plain callable (no ``nn.Module``) is left alone.
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def make_generator(seed: Seed) -> torch.Generator:
    """A CPU generator for an attack's own random draws.

    int: a fresh generator with that seed (every call of the attack draws the same numbers);
    Generator: used as given (its state advances); None: torch's global generator.
    """
    if seed is None:
        return torch.default_generator
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


def rand_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) noise shaped like ``x``, drawn on the CPU (reproducible across devices), on x's device."""
    return draw(torch.rand, x.shape, generator=generator, dtype=x.dtype).to(x.device)


def randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the CPU, on x's device."""
    return draw(torch.randn, x.shape, generator=generator, dtype=x.dtype).to(x.device)


def check_inputs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate an attack's inputs; returns detached copies (``x`` float, ``y`` long on x's device)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"attack input x must be a floating-point tensor [B, ...], got {type(x).__name__}"
                         f"{'' if not isinstance(x, torch.Tensor) else ' of ' + str(x.dtype)}")
    if x.ndim < 2:
        raise ValueError(f"attack input x must be batched [B, ...], got shape {tuple(x.shape)}")
    y = torch.as_tensor(y)
    if y.shape != (x.shape[0],) or y.is_floating_point():
        raise ValueError(f"labels y must be integer class indices of shape [{x.shape[0]}], "
                         f"got {y.dtype} of shape {tuple(y.shape)}")
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise ValueError(f"attack inputs must lie in [0, 1] (got min {float(x.min()):.4g}, max {float(x.max()):.4g}); "
                         "normalisation and encoding belong inside the model")
    return x.detach().clone(), y.detach().to(device=x.device, dtype=torch.long)


def as_scores(out: object, batch: int) -> torch.Tensor:
    """Check that a model's output is ``[B, C]`` scores and return it as a float tensor."""
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(out)
    if out.ndim != 2 or out.shape[0] != batch:
        raise ValueError(f"the model must return [B, C] scores (B = {batch}), got shape {tuple(out.shape)}; "
                         "for a spiking model return the output averaged over time")
    return out if out.is_floating_point() else out.float()


def query(model: ScoreFn, x: torch.Tensor) -> torch.Tensor:
    """Scores ``[B, C]`` of ``model`` at ``x`` without gradients, on x's device."""
    with torch.no_grad():
        return as_scores(model(x), x.shape[0]).to(x.device)


def margin(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per sample ``[B]``: negative when the sample is misclassified."""
    true = scores.gather(1, y[:, None]).squeeze(1)
    others = scores.clone()
    others.scatter_(1, y[:, None], -math.inf)
    return true - others.max(1).values


def misclassified(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: the arg-max class (ties go to the lowest index) is not ``y``."""
    return scores.argmax(1) != y


class WorstCase:
    """Per-sample worst case over candidate adversarial inputs.

    A candidate replaces the kept one for a sample when it fools the model and the kept one does not, or when
    both have the same status and the candidate's score (higher = worse for the model) is larger. The first
    candidate always replaces the clean input.
    """

    def __init__(self, x: torch.Tensor):
        self.x = x.detach().clone()
        n = x.shape[0]
        self.fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.score = torch.full((n,), -math.inf, device=x.device)
        self.filled = torch.zeros(n, dtype=torch.bool, device=x.device)

    def include_clean(self, scores: torch.Tensor, y: torch.Tensor) -> None:
        """Offer the clean input itself (its ``scores [B, C]``): samples it already fools need no attack."""
        self.update(self.x, misclassified(scores, y), torch.full_like(self.score, -math.inf))

    def update(self, x_cand: torch.Tensor, fooled: torch.Tensor, score: torch.Tensor,
               index: torch.Tensor | None = None) -> None:
        """Offer candidates for the samples ``index`` (all samples when None); shapes ``[n, ...]`` and ``[n]``."""
        idx = torch.arange(self.x.shape[0], device=self.x.device) if index is None else index
        score = score.detach().to(self.score.dtype)
        old_fooled, old_score = self.fooled[idx], self.score[idx]
        better = (~self.filled[idx]) | (fooled & ~old_fooled) | ((fooled == old_fooled) & (score > old_score))
        take = idx[better]
        self.x[take] = x_cand.detach()[better]
        self.fooled[take] = fooled[better]
        self.score[take] = score[better]
        self.filled[take] = True


class Attack(abc.ABC):
    """Base class: ``Attack(model, eps, ...)(x, y) -> x_adv``.

    model: the model under attack (``nn.Module`` or score function), put in eval mode during the attack and
        restored after.
    eps: radius of the threat model in input units ([0, 1] scale); ``norm`` is ``"Linf"`` or ``"L2"``.
    seed: int (reproducible: the same draws on every call), a ``torch.Generator`` (state advances) or None
        (global RNG). Randomness inside the model (a Poisson encoder) is the model's own.
    """

    kind: ClassVar[str] = "white-box"
    family: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = ("Linf", "L2")

    def __init__(self, model: ScoreFn, eps: float, *, norm: str = "Linf", seed: Seed = 0):
        if norm not in self.norms:
            raise ValueError(f"{type(self).__name__}: norm must be one of {', '.join(self.norms)}, not {norm!r}")
        if not eps >= 0:
            raise ValueError(f"{type(self).__name__}: eps must be >= 0, not {eps}")
        self.model = model
        self.eps = float(eps)
        self.norm = norm
        self.seed = seed

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{self.name}(eps={self.eps:.4g}, norm={self.norm})"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = check_inputs(x, y)
        if x.shape[0] == 0:
            return x
        with eval_mode(self.model):
            x_adv = self.perturb(x, y, make_generator(self.seed))
        return x_adv.detach()

    @abc.abstractmethod
    def perturb(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The attack proper, on checked inputs with the model already in eval mode."""

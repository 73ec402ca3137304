"""Surrogate ensemble: the per-sample worst case over several ways of differentiating a spiking model.

A white-box attack on an SNN backpropagates through a surrogate of the spike function; a sharp or mismatched
surrogate gives vanishing gradients and false robustness. The ensemble runs the same attack

- on the model with its own surrogate (``include_model``),
- on the model with each surrogate of ``surrogates`` swapped into every spiking layer
  (``snnkit.nn.surrogate.use_surrogate`` by default),
- on each of ``extra_models`` (rate backprop / BPTR mode, the non-spiking twin, any other source),

and keeps per sample a candidate that fools **the unchanged model** (else the one with its smallest margin).
Success is always judged on the model as deployed, with its own surrogate.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Mapping, Sequence

import torch

from snnkit.attack.base import Attack, ScoreFn, Seed, WorstCase, margin, misclassified, query
from snnkit.attack.transfer import AttackFactory, named

SurrogateSwap = Callable[[object, str], ContextManager]

DEFAULT_SURROGATES: tuple[str, ...] = (
    "triangle:gamma=0.5", "triangle:gamma=1", "triangle:gamma=2", "rectangular:width=1", "escape:k=2.5,b=5",
    "atan:alpha=2", "fast_sigmoid:k=25", "sigmoid:k=4", "straight_through",
)


def default_swap(model: object, spec: str) -> ContextManager:
    """snnkit's own surrogate swap (``snnkit.nn.surrogate.use_surrogate``)."""
    from snnkit.nn.surrogate import use_surrogate

    return use_surrogate(model, spec)


class SurrogateEnsemble(Attack):
    """``SurrogateEnsemble(model, attack, surrogates, extra_models)(x, y)``.

    attack: factory ``model -> Attack`` run for every member (all members share its norm and eps);
    surrogates: spec strings (``"atan:alpha=2"``, ...) applied to ``model`` through ``swap``;
    extra_models: further source models (a sequence or a mapping name -> model);
    include_model: also attack the model with its own surrogate;
    swap: ``swap(model, spec)`` -> context manager that installs the surrogate (snnkit's by default).
    After a call, ``member_fooled`` maps each member name to a ``[B]`` bool tensor: which samples that
    member's candidate fooled the unchanged model on.
    """

    family = "ensemble"

    def __init__(self, model: ScoreFn, attack: AttackFactory, surrogates: Sequence[str] = DEFAULT_SURROGATES,
                 extra_models: "Sequence[ScoreFn] | Mapping[str, ScoreFn]" = (), *, include_model: bool = True,
                 swap: SurrogateSwap | None = None, seed: Seed = 0):
        self.attack = attack
        self.surrogates = list(surrogates)
        self.extra_models = named(extra_models, "extra")
        self.include_model = include_model
        self.swap = default_swap if swap is None else swap
        if not (self.surrogates or self.extra_models or include_model):
            raise ValueError("SurrogateEnsemble: no members (give surrogates, extra_models or include_model=True)")
        probe = attack(model)
        super().__init__(model, probe.eps, norm=probe.norm, seed=seed)
        self.member_name = probe.name
        self.member_fooled: dict[str, torch.Tensor] = {}

    @property
    def name(self) -> str:
        return f"Ensemble[{self.member_name}x{len(self.members())}]"

    def members(self) -> list[tuple[str, ScoreFn, Callable[[], ContextManager]]]:
        """``(name, model to attack, context to enter while attacking)`` for every member."""
        out = [("model", self.model, contextlib.nullcontext)] if self.include_model else []
        out += [(f"surrogate:{spec}", self.model, lambda spec=spec: self.swap(self.model, spec))
                for spec in self.surrogates]
        out += [(name, m, contextlib.nullcontext) for name, m in self.extra_models.items()]
        return out

    def perturb(self, x, y, generator):
        best = WorstCase(x)
        self.member_fooled = {}
        for name, source, context in self.members():
            with context():
                cand = self.attack(source)(x, y).to(x.device)
            scores = query(self.model, cand)
            fooled = misclassified(scores, y)
            self.member_fooled[name] = fooled.cpu()
            best.update(cand, fooled, -margin(scores, y))
        return best.x

"""Transfer attacks: adversarial examples crafted on source models, evaluated on the target.

The target only needs to be a score function ``scores(x) -> [B, C]`` (a deployed, non-differentiable target
wrapped as a callable works). With several sources, the per-sample worst case on the target is kept.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from snnkit.attack.base import Attack, ScoreFn, Seed, WorstCase, check_inputs, eval_mode, margin, misclassified, query

AttackFactory = Callable[[ScoreFn], Attack]


def named(models: "Sequence[ScoreFn] | Mapping[str, ScoreFn]", prefix: str) -> dict[str, ScoreFn]:
    """``{name: model}`` from a mapping (kept) or a sequence (named ``prefix0``, ``prefix1``, ...)."""
    if isinstance(models, Mapping):
        return dict(models)
    return {f"{prefix}{i}": m for i, m in enumerate(models)}


def transfer_success_rate(target: ScoreFn, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    """Among the samples the target classifies correctly on ``x``, the fraction it misclassifies on ``x_adv``
    (``nan`` when it gets none right)."""
    x, y = check_inputs(x, y)
    with eval_mode(target):
        clean_ok = ~misclassified(query(target, x), y)
        adv_bad = misclassified(query(target, x_adv.to(x.device)), y)
    n = int(clean_ok.sum())
    return float((clean_ok & adv_bad).sum()) / n if n else float("nan")


class Transfer(Attack):
    """``Transfer(target, sources, attack)(x, y)``: craft with ``attack(source)`` on every source, keep per sample
    the candidate that fools the target (else the one with the smallest target margin).

    sources: source models (a sequence, or a mapping name -> model); attack: factory ``model -> Attack``
    (every source's attack must share norm and eps). After a call, ``source_fooled`` maps each source name
    to a ``[B]`` bool tensor: which samples its candidate fooled the target on.
    """

    kind = "transfer"
    family = "transfer"

    def __init__(self, model: ScoreFn, sources: "Sequence[ScoreFn] | Mapping[str, ScoreFn]",
                 attack: AttackFactory, *, seed: Seed = 0):
        self.crafters = {name: attack(src) for name, src in named(sources, "source").items()}
        if not self.crafters:
            raise ValueError("Transfer: give at least one source model")
        norms = {(a.norm, a.eps) for a in self.crafters.values()}
        if len(norms) != 1:
            raise ValueError(f"Transfer: all source attacks must share norm and eps, got {sorted(norms)}")
        norm, eps = norms.pop()
        super().__init__(model, eps, norm=norm, seed=seed)
        self.source_fooled: dict[str, torch.Tensor] = {}

    @property
    def name(self) -> str:
        first = next(iter(self.crafters.values()))
        return f"Transfer[{first.name}x{len(self.crafters)}]"

    def perturb(self, x, y, generator):
        best = WorstCase(x)
        self.source_fooled = {}
        for name, crafter in self.crafters.items():
            cand = crafter(x, y).to(x.device)
            scores = query(self.model, cand)
            fooled = misclassified(scores, y)
            self.source_fooled[name] = fooled.cpu()
            best.update(cand, fooled, -margin(scores, y))
        return best.x

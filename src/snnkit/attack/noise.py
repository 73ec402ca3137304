"""Random Gaussian noise: the baseline every real attack must beat."""
from __future__ import annotations

import math

import torch

from snnkit.attack.base import Attack, ScoreFn, Seed, WorstCase, margin, misclassified, query, randn_like
from snnkit.attack.norms import project


class GaussianNoise(Attack):
    """``x + std * N(0, 1)``, projected onto the eps ball when ``eps`` is given, clipped to [0, 1].

    draws: noise draws per sample; with more than one, the per-sample worst case on the model is kept
    (a draw that fools the model, else the one with the smallest margin).
    """

    kind = "noise"
    family = "noise"

    def __init__(self, model: ScoreFn, std: float = 0.1, *, eps: float | None = None, norm: str = "Linf",
                 draws: int = 1, seed: Seed = 0):
        super().__init__(model, math.inf if eps is None else eps, norm=norm, seed=seed)
        if not std >= 0 or draws < 1:
            raise ValueError(f"GaussianNoise: std must be >= 0 and draws >= 1 (got {std}, {draws})")
        self.std = float(std)
        self.draws = int(draws)

    @property
    def name(self) -> str:
        return f"Noise-{self.std:g}"

    def _draw(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noisy = x + self.std * randn_like(x, generator)
        return project(noisy, x, self.eps, self.norm) if math.isfinite(self.eps) else noisy.clamp(0, 1)

    def perturb(self, x, y, generator):
        if self.draws == 1:
            return self._draw(x, generator)
        best = WorstCase(x)
        for _ in range(self.draws):
            cand = self._draw(x, generator)
            scores = query(self.model, cand)
            best.update(cand, misclassified(scores, y), -margin(scores, y))
        return best.x

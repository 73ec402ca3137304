"""The standard attack set of the honest protocol (docs/reference/robustness.md)."""
from __future__ import annotations

from snnkit.attack.apgd import APGD
from snnkit.attack.base import Attack, ScoreFn
from snnkit.attack.noise import GaussianNoise
from snnkit.attack.pgd import FGSM, PGD
from snnkit.attack.square import Square


def standard_attacks(model: ScoreFn, eps: float, *, norm: str = "Linf", pgd_steps: int = 20, apgd_steps: int = 100,
                     square_queries: int = 5000, dlr: bool = True, eot_samples: int = 1,
                     seed: int = 0) -> dict[str, Attack]:
    """Gaussian noise, FGSM, PGD, APGD-CE, APGD-DLR (``dlr``, needs >= 3 classes) and Square (Linf only).

    Together they feed every masking check: APGD vs PGD, black-box (Square, noise) vs white-box.
    """
    attacks: list[Attack] = [
        GaussianNoise(model, std=eps, eps=eps, norm=norm, seed=seed),
        FGSM(model, eps, norm=norm, eot_samples=eot_samples, seed=seed),
        PGD(model, eps, steps=pgd_steps, norm=norm, eot_samples=eot_samples, seed=seed),
        APGD(model, eps, norm=norm, loss="ce", steps=apgd_steps, eot_samples=eot_samples, seed=seed),
    ]
    if dlr:
        attacks.append(APGD(model, eps, norm=norm, loss="dlr", steps=apgd_steps, eot_samples=eot_samples, seed=seed))
    if norm == "Linf" and square_queries > 0:
        attacks.append(Square(model, eps, n_queries=square_queries, seed=seed))
    return {a.name: a for a in attacks}

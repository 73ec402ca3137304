"""Gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019), reported as warnings, never as fixes.

Compared per sample over the attacks of one evaluation:

1. **APGD weaker than PGD**: the samples fooled by a PGD-family attack (FGSM, BIM, PGD) but not by an APGD run
   with the same norm and loss (and an eps at least as large) outnumber those fooled by APGD but not by it, by
   more than ``tolerance`` of the samples. APGD should dominate PGD at the same eps; when it
   does not, its adaptive step size is being misled (masked or noisy gradients) or it ran too few steps.
2. **Black-box beating white-box**: a black-box, transfer or noise attack reaches a lower robust accuracy (by
   more than ``tolerance``) than every white-box attack of the same norm whose ball contains its own. Gradients are then not pointing where
   the model is weak.
3. **Zero gradients**: more than ``zero_gradient_threshold`` of the entries of ``d loss / d x`` are exactly 0.
"""
from __future__ import annotations

from typing import Mapping

import torch

from snnkit.attack.results import AttackResult, EvaluationReport

PGD_FAMILY = ("pgd",)
WHITE_BOX = "white-box"


def _robust_everywhere(results: list[AttackResult]) -> torch.Tensor:
    out = results[0].correct.clone()
    for r in results[1:]:
        out &= r.correct
    return out


def masking_warnings(results: "EvaluationReport | Mapping[str, AttackResult]", gradient_sparsity: float | None = None,
                     *, zero_gradient_threshold: float = 0.5, tolerance: float = 0.01) -> list[str]:
    """Warnings (one line each, empty when nothing looks masked) for an evaluation's results.

    results: an :class:`EvaluationReport` (its gradient sparsity is used unless given) or a mapping
        name -> :class:`AttackResult` over the same samples.
    gradient_sparsity: fraction of exact zeros of ``d loss / d x`` (see ``input_gradient_sparsity``).
    tolerance: accuracy gap (fraction of the samples) below which the attack comparisons stay silent: two
        strong attacks legitimately disagree on a few boundary samples.
    """
    if isinstance(results, EvaluationReport):
        gradient_sparsity = results.gradient_sparsity if gradient_sparsity is None else gradient_sparsity
        results = results.results
    res = list(results.values())
    sizes = {r.correct.numel() for r in res}
    if len(sizes) > 1:
        raise ValueError(f"masking_warnings: results cover different numbers of samples {sorted(sizes)}")
    slack = tolerance * (sizes.pop() if sizes else 0)
    out: list[str] = []

    for norm in sorted({r.norm for r in res}):
        for a in (r for r in res if r.family == "apgd" and r.norm == norm):
            for r in res:
                if r.family in PGD_FAMILY and r.norm == norm and r.loss == a.loss and r.eps <= a.eps + 1e-12:
                    only_pgd = int((~r.correct & a.correct).sum())
                    only_apgd = int((r.correct & ~a.correct).sum())
                    if only_pgd - only_apgd > slack:
                        out.append(
                            f"{a.name} weaker than {r.name} ({norm}, eps={r.eps:.4g}): robust accuracy "
                            f"{a.robust_accuracy:.1%} vs {r.robust_accuracy:.1%}; {only_pgd} samples fooled only by "
                            f"{r.name}, {only_apgd} only by {a.name} (masked or noisy gradients, or too few APGD "
                            "steps)")

        white = [r for r in res if r.kind == WHITE_BOX and r.norm == norm]
        for r in res:
            if r.kind == WHITE_BOX or r.norm != norm:
                continue
            covering = [w for w in white if w.eps >= r.eps - 1e-12]
            if not covering:
                continue
            strongest = min(covering, key=lambda w: w.robust_accuracy)
            if strongest.robust_accuracy - r.robust_accuracy > tolerance:
                only_r = int((~r.correct & _robust_everywhere(covering)).sum())
                out.append(
                    f"{r.kind} attack {r.name} beats white-box ({norm}, eps={r.eps:.4g}): robust accuracy "
                    f"{r.robust_accuracy:.1%} vs {strongest.robust_accuracy:.1%} for {strongest.name}; {only_r} "
                    "samples survive every white-box attack but not this one (gradient masking)")

    if gradient_sparsity is not None and gradient_sparsity > zero_gradient_threshold:
        out.append(f"zero input gradients: {gradient_sparsity:.1%} of d loss / d x entries are exactly 0 "
                   f"(> {zero_gradient_threshold:.0%}); gradient attacks see little (masking or saturation)")
    return out

"""Result records of an evaluation: per-attack per-sample correctness and the whole report."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class AttackResult:
    """One attack over the whole set.

    correct: ``[N]`` bool, the model is right on the attacked input (False wherever it is wrong on clean).
    queries: ``[N]`` model queries per sample (score-based attacks; 0 for samples not attacked).
    max_distance: the largest perturbation norm seen (in the attack's norm), a check of the threat model.
    seconds: wall-clock time of the attack proper (the evaluation queries excluded).
    loss: the loss a gradient attack maximised (``"ce"``, ``"dlr"``, ...), None for the others.
    """

    name: str
    kind: str
    family: str
    norm: str
    eps: float
    correct: torch.Tensor
    seconds: float
    max_distance: float = 0.0
    queries: torch.Tensor | None = None
    loss: str | None = None

    @property
    def robust_accuracy(self) -> float:
        return float(self.correct.float().mean()) if self.correct.numel() else float("nan")

    def summary(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "family": self.family, "norm": self.norm,
               "eps": self.eps if math.isfinite(self.eps) else None, "loss": self.loss, "robust_accuracy": self.robust_accuracy,
               "n_robust": int(self.correct.sum()), "seconds": self.seconds, "max_distance": self.max_distance}
        if self.queries is not None:
            attacked = self.queries[self.queries > 0]
            out["mean_queries"] = float(attacked.float().mean()) if attacked.numel() else 0.0
        return out


@dataclass
class EvaluationReport:
    """Clean accuracy, every attack's result, the per-sample worst case, gradient sparsity and warnings."""

    clean_correct: torch.Tensor
    results: dict[str, AttackResult]
    gradient_sparsity: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean())

    @property
    def worst_case_correct(self) -> torch.Tensor:
        """``[N]`` bool: correct under every attack (the AutoAttack-style union)."""
        out = self.clean_correct.clone()
        for r in self.results.values():
            out &= r.correct
        return out

    @property
    def worst_case_accuracy(self) -> float:
        return float(self.worst_case_correct.float().mean())

    def summary(self) -> dict:
        return {"n_samples": self.n, "clean_accuracy": self.clean_accuracy,
                "worst_case_accuracy": self.worst_case_accuracy,
                "gradient_sparsity": self.gradient_sparsity,
                "attacks": [r.summary() for r in self.results.values()],
                "warnings": list(self.warnings)}


def concat_reports(reports: "list[EvaluationReport]", features: int) -> EvaluationReport:
    """The reports of consecutive ranges of samples (in order) as one report over all of them: per-sample
    records concatenated, each attack's time the longest (the ranges ran side by side), its largest distance
    the largest, the gradient sparsity over all clean-correct samples (each report's counts its
    ``features`` inputs per clean-correct sample) and the masking warnings drawn again from the whole."""
    from snnkit.attack.masking import masking_warnings

    first = reports[0]
    results = {}
    for name, r in first.results.items():
        parts = [rep.results[name] for rep in reports]
        queries = None if r.queries is None else torch.cat([p.queries for p in parts])
        results[name] = AttackResult(name=name, kind=r.kind, family=r.family, norm=r.norm, eps=r.eps,
                                     correct=torch.cat([p.correct for p in parts]),
                                     seconds=max(p.seconds for p in parts),
                                     max_distance=max(p.max_distance for p in parts), queries=queries, loss=r.loss)
    sparsity = None
    measured = [(rep.gradient_sparsity, int(rep.clean_correct.sum()) * features) for rep in reports]
    if any(s is not None for s, _ in measured):
        total = sum(n for s, n in measured if s is not None)
        zeros = sum(round(s * n) for s, n in measured if s is not None)
        sparsity = zeros / total if total else None
    report = EvaluationReport(clean_correct=torch.cat([rep.clean_correct for rep in reports]), results=results,
                              gradient_sparsity=sparsity)
    report.warnings = masking_warnings(report)
    return report

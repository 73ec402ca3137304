"""Robustness results read from ``snn-attack --json`` output files.

``snn-attack`` writes, under ``evaluations``, one evaluation per side it attacked: the reference (the model
itself, ``target: "reference"``) and the target. An evaluation is ``EvaluationReport.summary()`` plus its
target: ``{"target": ..., "n_samples": N, "clean_accuracy": a, "worst_case_accuracy": w, "attacks": [{"name",
"eps", "norm", "robust_accuracy", ...}, ...], "warnings": [...]}``. A file may also hold one evaluation or a
list of them; one without ``target`` is taken as an attack on the torch reference.

:func:`robustness_curves` merges the evaluations of several files (typically one file per eps) into one
robust-accuracy-vs-eps curve per target.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from snnkit.deploy.base import REFERENCE


@dataclass
class AttackPoint:
    name: str
    eps: float | None
    norm: str
    robust_accuracy: float


@dataclass
class RobustnessResult:
    """One evaluation of one target: clean and per-attack robust accuracy."""

    file: str
    target: str
    model: str | None
    clean_accuracy: float
    worst_case_accuracy: float | None
    n_samples: int | None
    attacks: list[AttackPoint] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.attacks = [a if isinstance(a, AttackPoint) else AttackPoint(**a) for a in self.attacks]

    def points(self) -> list[tuple[float, float]]:
        """``(eps, robust accuracy)`` of this evaluation: when every attack has the same eps, the per-sample
        worst case over them (``worst_case_accuracy``); otherwise, per eps, the lowest accuracy of one attack."""
        eps = {a.eps for a in self.attacks if a.eps is not None}
        if len(eps) == 1 and self.worst_case_accuracy is not None and all(a.eps is not None for a in self.attacks):
            return [(eps.pop(), self.worst_case_accuracy)]
        best: dict[float, float] = {}
        for a in self.attacks:
            if a.eps is not None:
                best[a.eps] = min(best.get(a.eps, math.inf), a.robust_accuracy)
        return sorted(best.items())


def robustness_curves(records: list[RobustnessResult]) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
    """One curve per target over every file: clean accuracy at eps 0, then at each eps the lowest robust
    accuracy any evaluation of that target measured. Returns the curves and notes on inconsistencies."""
    clean: dict[str, set[float]] = {}
    best: dict[str, dict[float, float]] = {}
    for r in records:
        clean.setdefault(r.target, set()).add(round(r.clean_accuracy, 9))
        for eps, acc in r.points():
            best.setdefault(r.target, {})[eps] = min(best.get(r.target, {}).get(eps, math.inf), acc)
    notes = [f"robustness: the clean accuracy of {t} differs between attack files ({sorted(c)}); the curve starts "
             f"at the lowest" for t, c in clean.items() if len(c) > 1]
    curves = {t: [(0.0, min(c))] + sorted(best.get(t, {}).items()) for t, c in clean.items()}
    return curves, notes


def _number(v, where: str, path: str, optional: bool = False) -> float | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{path}: {where} must be a number, got {v!r}")
    return float(v)


def parse_evaluation(d, path: str, model: str | None) -> RobustnessResult:
    """One evaluation (``snn-attack``'s form, see the module docstring) as a :class:`RobustnessResult`; ``path``
    names where it came from in messages and in the report."""
    return _parse_one(d, path, model)


def _parse_one(d, path: str, model: str | None) -> RobustnessResult:
    if not isinstance(d, dict) or not isinstance(d.get("attacks"), list):
        raise ValueError(f"{path}: not an snn-attack --json result (no 'attacks' list)")
    attacks = []
    for i, a in enumerate(d["attacks"]):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise ValueError(f"{path}: attacks[{i}] has no name")
        attacks.append(AttackPoint(name=a["name"], eps=_number(a.get("eps"), f"attacks[{i}].eps", path, True),
                                   norm=str(a.get("norm", "")),
                                   robust_accuracy=_number(a.get("robust_accuracy"), f"attacks[{i}].robust_accuracy",
                                                           path)))
    target = d.get("target", REFERENCE)
    if isinstance(target, dict):
        target = target.get("name", REFERENCE)
    warnings = d.get("warnings", [])
    return RobustnessResult(
        file=path, target=str(target), model=model, clean_accuracy=_number(d.get("clean_accuracy"), "clean_accuracy", path),
        worst_case_accuracy=_number(d.get("worst_case_accuracy"), "worst_case_accuracy", path, True),
        n_samples=int(d["n_samples"]) if isinstance(d.get("n_samples"), int) else None, attacks=attacks,
        warnings=[str(w) for w in warnings] if isinstance(warnings, list) else [])


def read_attack_file(path: "str | Path") -> list[RobustnessResult]:
    """The evaluations in one ``snn-attack --json`` file; ValueError (one line naming the file) if malformed."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such attack result file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not valid JSON ({str(exc).splitlines()[0]})") from None
    items = data if isinstance(data, list) else data.get("evaluations", [data]) if isinstance(data, dict) else [data]
    if not isinstance(items, list) or not items:
        raise ValueError(f"{p}: holds no evaluation")
    model = data.get("model") if isinstance(data, dict) and isinstance(data.get("model"), str) else None
    return [_parse_one(d, str(p), model) for d in items]


def read_attack_files(paths: list[str]) -> list[RobustnessResult]:
    return [r for p in paths for r in read_attack_file(p)]

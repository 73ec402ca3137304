"""Robustness results read from ``snn-attack --json`` output files.

A file holds one evaluation (``snnkit.attack.EvaluationReport.summary()``, with the target it attacked), or a
list of them: ``{"target": ..., "n_samples": N, "clean_accuracy": a, "worst_case_accuracy": w,
"attacks": [{"name", "eps", "norm", "robust_accuracy", ...}, ...], "warnings": [...]}``. Files without
``target`` are taken as attacks on the torch reference.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path


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
    clean_accuracy: float
    worst_case_accuracy: float | None
    n_samples: int | None
    attacks: list[AttackPoint] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.attacks = [a if isinstance(a, AttackPoint) else AttackPoint(**a) for a in self.attacks]

    def curve(self, norm: str | None = None) -> list[tuple[float, float]]:
        """``(eps, accuracy)`` points: clean at eps 0, then at each eps the lowest robust accuracy over the
        attacks with that eps (and ``norm``, when given): the strongest attack per budget."""
        best: dict[float, float] = {}
        for a in self.attacks:
            if a.eps is None or (norm is not None and a.norm != norm):
                continue
            best[a.eps] = min(best.get(a.eps, math.inf), a.robust_accuracy)
        return [(0.0, self.clean_accuracy)] + sorted(best.items())


def _number(v, where: str, path: str, optional: bool = False) -> float | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{path}: {where} must be a number, got {v!r}")
    return float(v)


def _parse_one(d, path: str) -> RobustnessResult:
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
    target = d.get("target", "torch")
    if isinstance(target, dict):
        target = target.get("name", "torch")
    warnings = d.get("warnings", [])
    return RobustnessResult(
        file=path, target=str(target), clean_accuracy=_number(d.get("clean_accuracy"), "clean_accuracy", path),
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
    if not items:
        raise ValueError(f"{p}: holds no evaluation")
    return [_parse_one(d, str(p)) for d in items]


def read_attack_files(paths: list[str]) -> list[RobustnessResult]:
    return [r for p in paths for r in read_attack_file(p)]

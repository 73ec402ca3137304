"""Attacks run by the report itself (``snn-report --attack pgd,square --eps 0.03,0.06,0.1``).

The same evaluations as ``snn-attack`` (:mod:`snnkit.attack.reattack`), organised for several targets and eps:
per model and eps, the reference (the model itself, white-box) is attacked once
(:func:`~snnkit.attack.reattack.attack_reference`), then every target that ran is re-attacked with
``reattack(..., reference=False, fit=True)``: what a target can take is asked of the target (exact gradients:
white-box on the target; a model with gradients: a gradient attack becomes ``adaptive`` through it; a query
proxy answers queries and the final verdicts are re-checked on the target). The non-spiking twin (the GPU
baseline) is attacked white-box like the reference. Every evaluation has the form ``snn-report --attack-json``
reads, so it joins the curves of attack files.

The report's budgets are smaller than ``snn-attack``'s (:data:`REPORT_STEPS`, :data:`REPORT_QUERIES`,
:data:`REPORT_LIMIT`) so that several models x targets x eps fit in minutes; the report states them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from snnkit.attack.registry import Settings
from snnkit.deploy.base import Target
from snnkit.graph import DeployError
from snnkit.graph.errors import first_line
from snnkit.report.attacks import RobustnessResult, parse_evaluation

REPORT_STEPS = 10
"""Iterations of every gradient attack run by the report (snn-attack: PGD 20, adaptive 50)."""

REPORT_QUERIES = 100
"""Square's query budget per sample in the report (snn-attack: 1000)."""

REPORT_LIMIT = 100
"""Samples attacked per model, target and eps (the first of the report's samples)."""


@dataclass
class AttackPlan:
    """What the report attacks with: attack names, the eps list, the samples attacked and the settings (their
    ``eps`` is replaced by each eps in turn)."""

    attacks: list[str]
    eps: list[float]
    limit: int = REPORT_LIMIT
    settings: Settings = field(default_factory=lambda: Settings(eps=0.0, steps=REPORT_STEPS, queries=REPORT_QUERIES,
                                                                progress=False))

    def summary(self) -> dict:
        s = self.settings
        return {"attacks": list(self.attacks), "eps": list(self.eps), "limit": self.limit, "norm": s.norm,
                "steps": s.steps, "square_queries": s.queries, "seed": s.seed, "batch_size": s.batch_size,
                "eot": s.eot, "device": s.device}


@dataclass
class AttackOutcome:
    """Every evaluation of one model (reference, targets, twin; each eps) as read-back records, the raw
    evaluation dicts, notes, and seconds per side."""

    records: list[RobustnessResult]
    evaluations: list[dict]
    notes: list[str]
    seconds: dict[str, float]


def attack_twin(model, twin, attacks: list[str], x, y, settings: Settings, num_classes: int, label: str) -> dict:
    """The non-spiking twin attacked white-box with ``attacks`` (transfer sources: the reference's)."""
    from snnkit.attack.reattack import run_side
    from snnkit.attack.registry import build_attacks
    from snnkit.attack.sides import Side, reference_sources
    from snnkit.attack.summary import evaluation_summary, queries_summary

    twin = twin.to(settings.device)
    sources, members, _ = reference_sources(model.to(settings.device), tuple(settings.surrogates))
    side = Side(label, twin, True, adaptive=twin, adaptive_via=label)
    built = build_attacks(attacks, side.context(sources, members, settings, num_classes))
    res = run_side(side, built, x, y, settings)
    out = evaluation_summary(label, res.report)
    out.update(seconds=res.seconds, queries=queries_summary(res.report, None))
    return out


def run_attacks(model, graph, targets: list[tuple[str, Target]], x: np.ndarray, y: np.ndarray, plan: AttackPlan, *,
                twin=None, twin_label: str = "gpu-twin", model_path: str = "",
                log: Callable[[str], None] | None = None) -> AttackOutcome:
    """Attack ``model``'s reference once per eps, then each of ``targets`` (name, target object: the one that
    ran, so its quantisation is reused) and the ``twin`` (None: not attacked) on the raw samples ``x``, ``y``.

    A target that cannot be attacked (a missing environment, an attack it refuses) is noted, not fatal."""
    import torch

    from snnkit.attack.reattack import attack_reference, reattack

    say = log or (lambda message: None)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    num_classes = int(dict(graph.metadata or {}).get("num_classes") or 0) or int(yt.max()) + 1
    evaluations: list[dict] = []
    notes: list[str] = []
    seconds: dict[str, float] = {}
    source = "snn-report --attack"

    def timed(side: str, fn):
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            seconds[side] = seconds.get(side, 0.0) + time.perf_counter() - t0

    for eps in plan.eps:
        s = replace(plan.settings, eps=float(eps))
        say(f"eps {eps:g}")
        evaluations.append({**timed("reference", lambda: attack_reference(model, graph, plan.attacks, xt, yt, s,
                                                                           log=say)), "eps": float(eps)})
        for name, target in targets:
            try:
                res = timed(name, lambda: reattack(model, graph, target, plan.attacks, xt, yt, s, log=say,
                                                   reference=False, fit=True))
            except (DeployError, ImportError, ValueError) as exc:
                notes.append(f"{name}: not attacked at eps {eps:g} ({first_line(exc)})")
                continue
            ev = dict(res.summary["evaluations"][-1], eps=float(eps))
            if "recheck" in res.summary:
                ev["recheck"] = {k: res.summary["recheck"].get(k) for k in
                                 ("on", "answered_by", "outputs_bit_exact", "verdicts_agree", "differing_verdicts")}
            evaluations.append(ev)
        if twin is not None:
            try:
                evaluations.append({**timed(twin_label, lambda: attack_twin(model, twin, plan.attacks, xt, yt, s,
                                                                             num_classes, twin_label)),
                                    "eps": float(eps)})
            except ValueError as exc:
                notes.append(f"{twin_label}: not attacked at eps {eps:g} ({first_line(exc)})")
    substituted = {(e["target"], k, v) for e in evaluations for k, v in e.get("substituted", {}).items()}
    for target, k, v in sorted(substituted):
        notes.append(f"{target} offers no exact gradients: --attack {k} ran as {v} there "
                     + ("(the same PGD through its differentiable model)" if v == "adaptive"
                        else "(PGD crafted on the reference and its views)"))
    records = [parse_evaluation(e, source, model_path or None) for e in evaluations]
    return AttackOutcome(records, evaluations, notes, seconds)


__all__ = ["AttackOutcome", "AttackPlan", "REPORT_LIMIT", "REPORT_QUERIES", "REPORT_STEPS", "attack_twin",
           "run_attacks"]

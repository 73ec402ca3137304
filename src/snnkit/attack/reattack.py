"""Re-attack a model where it is deployed, beside the reference (the honest protocol of
docs/reference/robustness.md).

Two sides are attacked with the same attacks (:mod:`snnkit.attack.registry`), eps and seed, on the same samples:
the reference (the snnkit model itself) and the target running the exported NIR graph, built from what the
target can do (:mod:`snnkit.attack.sides`). Where a query proxy answered the target's queries, the final verdicts
are re-checked on the target (:mod:`snnkit.attack.recheck`). Every evaluation reports per-attack robust
accuracy, the per-sample worst case and the gradient-masking warnings of
:func:`~snnkit.attack.masking.masking_warnings` (:mod:`snnkit.attack.summary`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import nir
import numpy as np
import torch
from torch import nn

from snnkit.attack.base import Attack
from snnkit.attack.recheck import recheck
from snnkit.attack.registry import DEFAULT_STEPS, Settings, build_attacks, fit_attacks
from snnkit.attack.results import EvaluationReport
from snnkit.attack.runner import evaluate
from snnkit.attack.sides import Side, reference_side, reference_sources, target_side
from snnkit.attack.summary import adversarial_arrays, evaluation_summary, queries_summary
from snnkit.deploy.base import Target


class _Recorded:
    """An attack that keeps what it returns (batches in call order); everything else is the attack's.

    ``evaluate`` calls each attack on the clean-correct samples of each batch, batches in order, so the
    concatenated outputs are the adversarial examples of the clean-correct samples in order (checked by count).
    """

    def __init__(self, attack: Attack):
        self.attack = attack
        self.outputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.attack(x, y)
        self.outputs.append(out.detach().cpu())
        return out

    def __getattr__(self, name: str):
        return getattr(self.attack, name)


@dataclass
class SideResult:
    """One side's evaluation: the report (the side's own verdicts), the adversarial examples per attack
    ``[N, ...]`` (the clean input where a sample was not attacked) and the wall time (s)."""

    label: str
    report: EvaluationReport
    adversarial: dict[str, torch.Tensor]
    seconds: float


def run_side(side: Side, attacks: dict[str, Attack], x: torch.Tensor, y: torch.Tensor,
             settings: Settings) -> SideResult:
    """Evaluate ``attacks`` on ``side`` (``evaluate``: only clean-correct samples attacked, verdicts by
    querying the side) and keep every adversarial example."""
    recorded = {name: _Recorded(a) for name, a in attacks.items()}
    t0 = time.perf_counter()
    report = evaluate(side.scores, x, y, recorded, batch_size=settings.batch_size, device=settings.device,
                      progress=settings.progress, check_gradients=side.differentiable)
    seconds = time.perf_counter() - t0
    idx = report.clean_correct.nonzero().squeeze(1)
    adversarial = {}
    for name, r in recorded.items():
        x_adv = x.detach().cpu().clone()
        if idx.numel():
            crafted = torch.cat(r.outputs)
            if crafted.shape[0] != idx.numel():
                raise RuntimeError(f"{name}: {crafted.shape[0]} adversarial examples for {idx.numel()} attacked samples")
            x_adv[idx] = crafted.to(x_adv.dtype)
        adversarial[name] = x_adv
    return SideResult(side.label, report, adversarial, seconds)


@dataclass
class ReattackResult:
    """A re-attack's outcome: ``summary`` (JSON-ready, see ``snn-attack --help``) and ``arrays`` (what
    ``--save-adv`` writes: inputs, labels, per side the adversarial examples and per-sample verdicts)."""

    summary: dict
    arrays: dict[str, np.ndarray]


def attack_reference(model: nn.Module, graph: nir.NIRGraph, attacks: list[str], x: torch.Tensor, y: torch.Tensor,
                     settings: Settings, *, log: Callable[[str], None] | None = None) -> dict:
    """The reference side of :func:`reattack` alone: ``model`` attacked white-box with ``attacks`` on ``x``,
    ``y``. Returns its evaluation (the entry ``reattack`` puts under ``summary["reference"]``).

    Every target of one model shares this side: a caller re-attacking several targets attacks the reference
    once with this function and each target with ``reattack(..., reference=False)``."""
    say = log or (lambda message: None)
    num_classes = _num_classes(graph, y)
    model = model.to(settings.device)
    sources, members, _ = reference_sources(model, tuple(settings.surrogates))
    side = reference_side(model)
    built = build_attacks(attacks, side.context(sources, members, settings, num_classes))
    say(f"reference: {int(x.shape[0])} samples, {', '.join(built)}")
    ref = run_side(side, built, x, y, settings)
    out = evaluation_summary("reference", ref.report)
    out.update(seconds=ref.seconds, queries=queries_summary(ref.report, None))
    return out


def _num_classes(graph: nir.NIRGraph, y: torch.Tensor) -> int:
    return int(dict(graph.metadata or {}).get("num_classes") or 0) or int(y.max()) + 1


def reattack(model: nn.Module, graph: nir.NIRGraph, target: Target, attacks: list[str], x: torch.Tensor,
             y: torch.Tensor, settings: Settings, *, log: Callable[[str], None] | None = None,
             reference: bool = True, fit: bool = False) -> ReattackResult:
    """Attack the reference ``model`` and ``target`` running ``graph`` (exported from ``model``) on ``x``, ``y``.

    log: receives one line per phase.
    reference: False attacks the target side only (``summary["reference"]`` is None, ``evaluations`` holds the
        target's; see :func:`attack_reference`).
    fit: on the target side, replace the attacks it cannot take by the nearest it can
        (:func:`~snnkit.attack.registry.fit_attacks`; listed in ``summary["substituted"]``) instead of refusing.
    """
    say = log or (lambda message: None)
    num_classes = _num_classes(graph, y)
    t_start = time.perf_counter()
    model = model.to(settings.device)  # attacks and verdicts run it in eval mode (``eval_mode``)
    sources, members, notes = reference_sources(model, tuple(settings.surrogates))
    ref_side = reference_side(model)
    tgt_side = target_side(target, graph, x, settings)
    # build both attack sets first: a name that does not fit a side fails before any work
    tgt_context = tgt_side.context(sources, members, settings, num_classes)
    tgt_names, substituted = fit_attacks(attacks, tgt_context) if fit else (list(attacks), {})
    ref_attacks = build_attacks(attacks, ref_side.context(sources, members, settings, num_classes)) if reference else {}
    tgt_attacks = build_attacks(tgt_names, tgt_context)
    n = int(x.shape[0])
    ref = None
    if reference:
        say(f"reference: {n} samples, {', '.join(ref_attacks)}")
        ref = run_side(ref_side, ref_attacks, x, y, settings)
    proxy_note = f" (queries answered by {tgt_side.counter.name})" if tgt_side.recheck else ""
    say(f"{target.name}{proxy_note}: {n} samples, {', '.join(tgt_attacks)}")
    tgt = run_side(tgt_side, tgt_attacks, x, y, settings)

    ref_eval = None
    if ref is not None:
        ref_eval = evaluation_summary("reference", ref.report)
        ref_eval.update(seconds=ref.seconds, queries=queries_summary(ref.report, None))
    judged, checked = tgt.report, None
    if tgt_side.recheck is not None:
        on, proxy = tgt_side.recheck
        say(f"re-checking the clean inputs and {len(tgt.adversarial)} x {n} adversarial examples on {on.name}")
        judged, checked = recheck(graph, x, y, tgt, on, proxy)
    target_eval = evaluation_summary(target.name, judged)
    target_eval["seconds"] = tgt.seconds
    if checked is not None:
        answered = evaluation_summary(checked["answered_by"], tgt.report)
        for entry, e in zip(target_eval["attacks"], answered["attacks"]):
            entry["proxy_robust_accuracy"] = e["robust_accuracy"]
        target_eval["proxy"] = {k: answered[k] for k in ("target", "clean_accuracy", "worst_case_accuracy",
                                                         "warnings")}
    target_eval["queries"] = queries_summary(tgt.report, tgt_side.counter)
    if substituted:
        target_eval["substituted"] = dict(substituted)
    summary = {"target": target.name, "attack": ",".join(attacks), "eps": settings.eps, "norm": settings.norm,
               "n_samples": n, "seed": settings.seed,
               **{k: target_eval[k] for k in ("clean_accuracy", "robust_accuracy", "worst_case_accuracy",
                                              "transfer_success_rate", "attacks", "warnings", "gradient_sparsity",
                                              "queries")},
               "adaptive_via": tgt_side.adaptive_via or None, "reference": ref_eval,
               "evaluations": [e for e in (ref_eval, target_eval) if e is not None],
               "settings": {"steps": settings.steps, "default_steps": dict(DEFAULT_STEPS),
                            "square_queries": settings.queries, "batch_size": settings.batch_size,
                            "eot": settings.eot, "device": settings.device, "transfer_sources": list(sources),
                            "ensemble_members": list(members)},
               "notes": notes}
    if substituted:
        summary["substituted"] = dict(substituted)
    if checked is not None:
        summary.update(recheck=checked, proxy=target_eval["proxy"])
    summary["wall_s"] = time.perf_counter() - t_start
    return ReattackResult(summary, adversarial_arrays(x, y, ref, tgt, judged))

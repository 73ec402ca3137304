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
from snnkit import distributed
from snnkit.attack.recheck import merge_rechecks, recheck
from snnkit.attack.registry import DEFAULT_STEPS, Settings, build_attacks, fit_attacks
from snnkit.attack.results import EvaluationReport, concat_reports
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


def shard_batches(n: int, batch_size: int) -> tuple[int, int]:
    """The samples ``(lo, hi)`` this rank attacks: a contiguous range of whole batches of ``batch_size`` (the
    batches one process would form), split over the ranks by :func:`snnkit.distributed.shard`."""
    first, last = distributed.shard(-(-n // max(batch_size, 1)))
    return min(first * batch_size, n), min(last * batch_size, n)


@dataclass
class _Answered:
    """What a target answered over all ranks (the fields of :class:`~snnkit.attack.target.TargetScores` that
    :func:`~snnkit.attack.summary.queries_summary` reads)."""

    name: str
    queries: int
    calls: int
    seconds: float

    @property
    def queries_per_second(self) -> float:
        return self.queries / self.seconds if self.seconds > 0 else float("nan")


def _merged(parts: list[tuple], counter, x: torch.Tensor) -> tuple:
    """The ranks' ``(ref, tgt, judged, checked, answered)`` in rank order as one run's (one part: itself)."""
    if len(parts) == 1:
        ref, tgt, judged, checked, _ = parts[0]
        return ref, tgt, judged, checked, counter
    refs, tgts, judgeds, checks, answers = zip(*parts)
    features = int(x[0].numel())
    ref = None if refs[0] is None else _concat_sides(refs, features)
    tgt = _concat_sides(tgts, features)
    same = all(j is t.report for j, t in zip(judgeds, tgts))
    judged = tgt.report if same else concat_reports(judgeds, features)
    checked = None if checks[0] is None else merge_rechecks(checks)
    if counter is not None:
        counter = _Answered(counter.name, *(sum(a[k] for a in answers) for k in range(3)))  # seconds: all ranks'
    return ref, tgt, judged, checked, counter


def _concat_sides(sides, features: int) -> SideResult:
    return SideResult(sides[0].label, concat_reports([s.report for s in sides], features),
                      {name: torch.cat([s.adversarial[name] for s in sides]) for name in sides[0].adversarial},
                      max(s.seconds for s in sides))


def _num_classes(graph: nir.NIRGraph, y: torch.Tensor) -> int:
    return int(dict(graph.metadata or {}).get("num_classes") or 0) or int(y.max()) + 1


def reattack(model: nn.Module, graph: nir.NIRGraph, target: Target, attacks: list[str], x: torch.Tensor,
             y: torch.Tensor, settings: Settings, *, log: Callable[[str], None] | None = None,
             reference: bool = True, fit: bool = False) -> ReattackResult | None:
    """Attack the reference ``model`` and ``target`` running ``graph`` (exported from ``model``) on ``x``, ``y``.

    log: receives one line per phase.
    reference: False attacks the target side only (``summary["reference"]`` is None, ``evaluations`` holds the
        target's; see :func:`attack_reference`).
    fit: on the target side, replace the attacks it cannot take by the nearest it can
        (:func:`~snnkit.attack.registry.fit_attacks`; listed in ``summary["substituted"]``) instead of refusing.

    On several processes (:mod:`snnkit.distributed`, ``snn-attack --distributed``) each rank attacks and
    re-checks its own range of whole batches (:func:`shard_batches`), rank 0 gathers them and returns the
    outcome; the other ranks return None. Each batch is attacked as one process attacks it (every attack
    starts a generator from the seed per batch), so the verdicts, adversarial examples and numbers equal the
    single-process run's; only the times differ (each the slowest rank's). Models whose own encoder draws
    (Poisson) advance a generator from batch to batch are equal only in distribution.
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
    lo, hi = shard_batches(n, settings.batch_size)
    xs, ys = x[lo:hi], y[lo:hi]
    ref = tgt = judged = checked = None
    if hi > lo:
        if reference:
            say(f"reference: {hi - lo} samples, {', '.join(ref_attacks)}")
            ref = run_side(ref_side, ref_attacks, xs, ys, settings)
        proxy_note = f" (queries answered by {tgt_side.counter.name})" if tgt_side.recheck else ""
        say(f"{target.name}{proxy_note}: {hi - lo} samples, {', '.join(tgt_attacks)}")
        tgt = run_side(tgt_side, tgt_attacks, xs, ys, settings)
        judged = tgt.report
        if tgt_side.recheck is not None:
            on, proxy = tgt_side.recheck
            say(f"re-checking the clean inputs and {len(tgt.adversarial)} x {hi - lo} adversarial examples on "
                f"{on.name}")
            judged, checked = recheck(graph, xs, ys, tgt, on, proxy)
    counter = tgt_side.counter
    answered = (counter.queries, counter.calls, counter.seconds) if counter is not None else None
    parts = distributed.gather((ref, tgt, judged, checked, answered) if hi > lo else None)
    if parts is None:
        return None  # not rank 0 of several processes: rank 0 reports
    ref, tgt, judged, checked, counter = _merged([p for p in parts if p is not None], counter, x)

    ref_eval = None
    if ref is not None:
        ref_eval = evaluation_summary("reference", ref.report)
        ref_eval.update(seconds=ref.seconds, queries=queries_summary(ref.report, None))
    target_eval = evaluation_summary(target.name, judged)
    target_eval["seconds"] = tgt.seconds
    if checked is not None:
        answered = evaluation_summary(checked["answered_by"], tgt.report)
        for entry, e in zip(target_eval["attacks"], answered["attacks"]):
            entry["proxy_robust_accuracy"] = e["robust_accuracy"]
        target_eval["proxy"] = {k: answered[k] for k in ("target", "clean_accuracy", "worst_case_accuracy",
                                                         "warnings")}
    target_eval["queries"] = queries_summary(tgt.report, counter)
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

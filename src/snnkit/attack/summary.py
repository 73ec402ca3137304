"""JSON-ready summaries of a re-attack's evaluations, and the arrays ``--save-adv`` writes."""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

import numpy as np
import torch

from snnkit.attack.results import EvaluationReport
from snnkit.attack.target import TargetScores

if TYPE_CHECKING:
    from snnkit.attack.reattack import SideResult


def queries_summary(report: EvaluationReport, counter: TargetScores | None) -> dict:
    """Queries per attacked sample of the score-based attacks, and what the target answered in all."""
    out: dict = {}
    for name, r in report.results.items():
        if r.queries is None:
            continue
        used = [int(q) for q in r.queries[r.queries > 0].tolist()]
        out[name] = {"mean_per_sample": float(statistics.fmean(used)) if used else 0.0,
                     "median_per_sample": float(statistics.median(used)) if used else 0.0,
                     "max_per_sample": max(used, default=0), "attacked_samples": len(used)}
    if counter is not None:
        out["answered"] = {"by": counter.name, "queries": counter.queries, "calls": counter.calls,
                           "seconds": counter.seconds, "queries_per_s": counter.queries_per_second}
    return out


def evaluation_summary(label: str, report: EvaluationReport) -> dict:
    """An ``snn-report``-readable evaluation: ``EvaluationReport.summary()`` plus ``target``,
    ``robust_accuracy`` (the per-sample worst case over its attacks), per score-based attack the median
    queries, per transfer attack its success rate (fooled / clean-correct) and ``transfer_success_rate``: the
    fraction of clean-correct samples that at least one transfer attack fooled (None without one)."""
    out = {"target": label, **report.summary()}
    out["robust_accuracy"] = out["worst_case_accuracy"]
    clean = report.clean_correct
    n_clean = int(clean.sum())
    fooled_any = torch.zeros_like(clean)
    transfers = 0
    for entry, r in zip(out["attacks"], report.results.values()):
        if r.queries is not None:
            used = r.queries[r.queries > 0].float()
            entry["median_queries"] = float(used.median()) if used.numel() else 0.0
        if r.kind == "transfer":
            fooled = clean & ~r.correct
            fooled_any |= fooled
            transfers += 1
            entry["transfer_success_rate"] = int(fooled.sum()) / n_clean if n_clean else None
    out["transfer_success_rate"] = (int(fooled_any.sum()) / n_clean if n_clean else None) if transfers else None
    return out


def adversarial_arrays(x: torch.Tensor, y: torch.Tensor, ref: SideResult | None, tgt: SideResult,
            judged: EvaluationReport) -> dict[str, np.ndarray]:
    """What ``--save-adv`` writes: inputs, labels and per side the adversarial examples ``[A, N, ...]``, the
    per-sample correctness ``[A, N]`` (the side's final verdicts) and the attack names; ``judged`` is the
    target's final evaluation (its own, or the re-check's). ``ref`` None: the reference was not attacked."""
    out = {"x": x.detach().cpu().numpy(), "y": y.detach().cpu().numpy()}
    sides = ([("reference", ref, ref.report)] if ref is not None else []) + [("target", tgt, judged)]
    for key, side, report in sides:
        names = list(side.adversarial)
        out[f"{key}_attacks"] = np.array(names, dtype=str)
        out[f"{key}_adversarial"] = np.stack([side.adversarial[n].numpy() for n in names])
        out[f"{key}_correct"] = np.stack([report.results[n].correct.numpy() for n in names])
        out[f"{key}_clean_correct"] = report.clean_correct.numpy()
    if judged is not tgt.report:
        out["proxy_correct"] = np.stack([tgt.report.results[n].correct.numpy() for n in tgt.adversarial])
    return out

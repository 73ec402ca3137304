"""Confirm on the target what its query proxy answered: the clean inputs and every final adversarial example
re-run on the target itself (one run), compared with the proxy bit for bit.

Used when a target answers attack queries through a faster stand-in (``Target.query_proxy``: Lava through
``loihi-emu``); the target's own verdicts are the numbers reported.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import nir
import numpy as np
import torch

from snnkit.attack.masking import masking_warnings
from snnkit.attack.results import AttackResult, EvaluationReport
from snnkit.deploy.base import Target

if TYPE_CHECKING:
    from snnkit.attack.reattack import SideResult


def recheck(graph: nir.NIRGraph, x: torch.Tensor, y: torch.Tensor, answered: "SideResult", target: Target,
            proxy: Target) -> tuple[EvaluationReport, dict]:
    """Run the clean inputs and every final adversarial example of ``answered`` (the side whose queries
    ``proxy`` answered) on ``target`` and on ``proxy``.

    Returns the target's evaluation (its verdicts; timings and queries from the attack run) and what was
    compared: ``outputs_bit_exact`` (every output spike equal), ``verdicts_agree`` (per sample and attack, the
    target's correctness equals the proxy's from the attack run), counts and the target's wall time.
    """
    from snnkit.deploy.inputs import encode, graph_timesteps

    meta = dict(graph.metadata or {})
    steps = graph_timesteps(meta, None)
    names = list(answered.adversarial)
    stacked = torch.cat([x.detach().cpu()] + [answered.adversarial[n] for n in names])
    encoded = encode(stacked.numpy(), meta, steps)
    t0 = time.perf_counter()
    on_target = target.run(graph, encoded)
    target_s = time.perf_counter() - t0
    on_proxy = proxy.run(graph, encoded)
    n = x.shape[0]
    y_np = y.detach().cpu().numpy()
    pred = on_target.predictions(steps)
    clean = torch.from_numpy(pred[:n] == y_np)
    results = {}
    differing_verdicts = int((clean != answered.report.clean_correct).sum())
    for k, name in enumerate(names):
        correct = clean & torch.from_numpy(pred[(k + 1) * n:(k + 2) * n] == y_np)
        r = answered.report.results[name]
        differing_verdicts += int((correct != r.correct).sum())
        results[name] = AttackResult(name=name, kind=r.kind, family=r.family, norm=r.norm, eps=r.eps, correct=correct,
                                     seconds=r.seconds, max_distance=r.max_distance, queries=r.queries, loss=r.loss)
    report = EvaluationReport(clean_correct=clean, results=results)
    report.warnings = masking_warnings(report)
    same_shape = on_target.outputs.shape == on_proxy.outputs.shape
    check = {"on": target.name, "answered_by": proxy.name, "samples": int(stacked.shape[0]),
             "outputs_bit_exact": bool(np.array_equal(on_target.outputs, on_proxy.outputs)),
             "differing_output_values": int((on_target.outputs != on_proxy.outputs).sum()) if same_shape else None,
             "verdicts_agree": differing_verdicts == 0, "differing_verdicts": differing_verdicts,
             "target_wall_s": target_s, "target_run_s": on_target.wall_s}
    return report, check


def merge_rechecks(checks: "list[dict]") -> dict:
    """The re-checks of consecutive ranges of samples (each :func:`recheck`'s dict) as one: counts summed, the
    agreements all true, the target's times the longest (the ranges ran side by side)."""
    first = checks[0]
    values = [c["differing_output_values"] for c in checks]
    differing = sum(c["differing_verdicts"] for c in checks)
    return {"on": first["on"], "answered_by": first["answered_by"], "samples": sum(c["samples"] for c in checks),
            "outputs_bit_exact": all(c["outputs_bit_exact"] for c in checks),
            "differing_output_values": None if None in values else sum(values),
            "verdicts_agree": differing == 0, "differing_verdicts": differing,
            "target_wall_s": max(c["target_wall_s"] for c in checks),
            "target_run_s": max(c["target_run_s"] for c in checks)}

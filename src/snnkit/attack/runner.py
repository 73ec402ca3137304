"""Run a set of attacks over a data set: per-attack and worst-case robust accuracy, timings, masking warnings.

Only the samples the model classifies correctly are attacked (the others count as not robust). Accuracy under
an attack is measured by querying the model (``model(x_adv)``) after the attack, never taken from the
attack's own bookkeeping.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from snnkit.attack.base import Attack, ScoreFn, check_inputs, eval_mode, misclassified, query
from snnkit.attack.gradients import input_gradient_sparsity
from snnkit.attack.masking import masking_warnings
from snnkit.attack.norms import distance
from snnkit.attack.results import AttackResult, EvaluationReport


def _named_attacks(attacks: "Mapping[str, Attack] | Sequence[Attack]") -> dict[str, Attack]:
    if isinstance(attacks, Mapping):
        return dict(attacks)
    out: dict[str, Attack] = {}
    for a in attacks:
        name, i = a.name, 2
        while name in out:
            name, i = f"{a.name} ({i})", i + 1
        out[name] = a
    return out


def _device_of(model: ScoreFn) -> torch.device:
    if isinstance(model, torch.nn.Module):
        p = next(model.parameters(), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


def evaluate(model: ScoreFn, x: torch.Tensor, y: torch.Tensor, attacks: "Mapping[str, Attack] | Sequence[Attack]",
             *, batch_size: int = 128, device: "str | torch.device | None" = None, progress: bool = True,
             check_gradients: bool = True) -> EvaluationReport:
    """Attack ``model`` on ``x [N, ...]`` (in [0, 1]), ``y [N]`` with each attack, batch by batch.

    attacks: a mapping name -> attack or a sequence (named by ``attack.name``); every attack must target
        ``model`` (a transfer attack's target, an ensemble's model).
    device: where inputs go (default: the model's parameters' device, else CPU); results come back on CPU.
    check_gradients: measure the input-gradient sparsity on the correctly classified samples (needs a
        differentiable model; switch off for black-box targets).
    The report's ``warnings`` are the gradient-masking checks (:func:`snnkit.attack.masking.masking_warnings`).
    """
    x, y = check_inputs(x, y)
    if x.shape[0] == 0:
        raise ValueError("evaluate: no samples")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, not {batch_size}")
    named = _named_attacks(attacks)
    dev = torch.device(device) if device is not None else _device_of(model)
    batches = [(s, min(s + batch_size, x.shape[0])) for s in range(0, x.shape[0], batch_size)]

    with eval_mode(model):
        clean = torch.cat([~misclassified(query(model, x[s:e].to(dev)), y[s:e].to(dev)).cpu() for s, e in batches])
    correct = {name: clean.clone() for name in named}
    seconds = dict.fromkeys(named, 0.0)
    dist = dict.fromkeys(named, 0.0)
    queries = {name: torch.zeros(x.shape[0], dtype=torch.long) for name, a in named.items() if hasattr(a, "queries")}

    bar = tqdm(total=len(named) * len(batches), desc="attacks", unit="batch", disable=not progress, leave=False)
    for name, attack in named.items():
        bar.set_postfix_str(name)
        for s, e in batches:
            idx = s + clean[s:e].nonzero().squeeze(1)
            if idx.numel():
                xb, yb = x[idx].to(dev), y[idx].to(dev)
                t0 = time.perf_counter()
                x_adv = attack(xb, yb)
                seconds[name] += time.perf_counter() - t0
                dist[name] = max(dist[name], float(distance(x_adv, xb, attack.norm).max()))
                with eval_mode(model):
                    correct[name][idx] = ~misclassified(query(model, x_adv), yb).cpu()
                if name in queries and getattr(attack, "queries", None) is not None:
                    queries[name][idx] = attack.queries.cpu()
            bar.update(1)
    bar.close()

    results = {name: AttackResult(name=name, kind=a.kind, family=a.family, norm=a.norm, eps=a.eps,
                                  correct=correct[name], seconds=seconds[name], max_distance=dist[name],
                                  queries=queries.get(name), loss=getattr(a, "loss_name", None))
               for name, a in named.items()}
    sparsity = None
    if check_gradients and bool(clean.any()):
        sparsity = input_gradient_sparsity(model, x[clean].to(dev), y[clean].to(dev), batch_size=batch_size)
    report = EvaluationReport(clean_correct=clean, results=results, gradient_sparsity=sparsity)
    report.warnings = masking_warnings(report)
    return report

"""Re-attack a model where it is deployed, beside the reference (issue 6; the honest protocol of
docs/reference/robustness.md).

Two sides are attacked with the same attacks, eps and seed, on the same samples:

- **reference**: the snnkit model itself (``model(x)`` logits; the ``torch`` target computes exactly these);
- **the target**, judged by its own outputs on the exported NIR graph:

  | target | judged by | white-box | adaptive (differentiable model of it) |
  |---|---|---|---|
  | torch, norse, snntorch | :class:`~snnkit.attack.target.TargetModule` (the target's built network) | on the target itself, through its framework's surrogate | the target itself |
  | loihi-emu | :class:`~snnkit.attack.target.TargetScores` (no gradients) | none | loihi-emu's differentiable mode (:class:`~snnkit.attack.target.EmulatorModule`) |
  | lava | queries answered by loihi-emu (bit-exact with Lava, much faster); every final adversarial example and the clean inputs re-run on Lava, whose verdicts are the target's numbers (the emulator's are reported beside, with whether they agree) | none | loihi-emu's differentiable mode |

Attack names (``ATTACKS``): ``fgsm``, ``pgd``, ``pgd-l2``, ``bim``, ``apgd-ce``, ``apgd-dlr`` (gradient attacks:
differentiable sides only), ``square`` (score-based, ``queries`` per sample), ``noise`` (Gaussian, std = eps,
projected), ``transfer`` (PGD crafted on the reference, its non-spiking twin and its rate-backprop (BPTR) view;
the per-sample worst case on the attacked side), ``ensemble`` (the same with every surrogate of ``surrogates`` as
a further source, plus the side's own gradient where it has one), ``adaptive`` (PGD through the side's
differentiable model) and ``standard`` (the suite: noise, FGSM, PGD, APGD-CE, APGD-DLR, Square and the
ensemble on differentiable sides; noise, Square, the ensemble as transfer and adaptive PGD and APGD-CE on the
Loihi targets). Every evaluation reports per-attack robust accuracy, the per-sample worst case and the
gradient-masking warnings of :func:`~snnkit.attack.masking.masking_warnings`.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import nir
import numpy as np
import torch
from torch import nn

from snnkit.attack.apgd import APGD
from snnkit.attack.base import Attack, ScoreFn
from snnkit.attack.ensemble import DEFAULT_SURROGATES, SurrogateEnsemble
from snnkit.attack.masking import masking_warnings
from snnkit.attack.noise import GaussianNoise
from snnkit.attack.pgd import BIM, FGSM, PGD
from snnkit.attack.results import AttackResult, EvaluationReport
from snnkit.attack.runner import evaluate
from snnkit.attack.square import Square
from snnkit.attack.suite import standard_attacks
from snnkit.attack.target import EmulatorModule, TargetModule, TargetScores
from snnkit.attack.transfer import Transfer

GRADIENT_ATTACKS = ("fgsm", "pgd", "pgd-l2", "bim", "apgd-ce", "apgd-dlr")
ATTACKS = (*GRADIENT_ATTACKS, "square", "transfer", "noise", "ensemble", "adaptive", "standard")
TORCH_TARGETS = ("torch", "norse", "snntorch")
LOIHI_TARGETS = ("lava", "loihi-emu")
TARGETS = (*TORCH_TARGETS, *LOIHI_TARGETS)
DEFAULT_STEPS = {"pgd": 20, "apgd": 100, "adaptive": 50, "transfer": 20}
"""Iterations per attack family when ``Settings.steps`` is None (BIM: Kurakin et al.'s rule from eps)."""


@dataclass
class Settings:
    """How to attack.

    eps: radius in input units ([0, 1] scale); norm: ``"Linf"`` or ``"L2"`` (``pgd-l2`` is always L2);
    steps: iterations of the gradient attacks (None: ``DEFAULT_STEPS``); queries: Square's budget per sample
    (the clean query included); seed: every attack's seed; batch_size: samples per attack batch; eot: gradient
    draws averaged per step (stochastic encoders); surrogates: the ensemble's surrogate specs; device: where
    the reference, the torch target and the emulator run; progress: progress bars on stderr.
    """

    eps: float
    norm: str = "Linf"
    steps: int | None = None
    queries: int = 1000
    seed: int = 0
    batch_size: int = 128
    eot: int = 1
    surrogates: tuple[str, ...] = DEFAULT_SURROGATES
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, not {self.eps}")
        if self.norm not in ("Linf", "L2"):
            raise ValueError(f"norm must be Linf or L2, not {self.norm!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, not {self.steps}")
        if self.queries < 2:
            raise ValueError(f"the Square query budget must be >= 2 (clean query and start), not {self.queries}")
        if self.batch_size < 1 or self.eot < 1:
            raise ValueError(f"batch size and EOT draws must be >= 1 (got {self.batch_size}, {self.eot})")

    def steps_for(self, family: str) -> int:
        return self.steps if self.steps is not None else DEFAULT_STEPS[family]


def parse_attacks(spec: str) -> list[str]:
    """``"transfer,square"`` -> ``["transfer", "square"]`` (ValueError naming an unknown one)."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError("no attack given; available: " + ", ".join(ATTACKS))
    for n in names:
        if n not in ATTACKS:
            raise ValueError(f"unknown attack {n!r}; available: {', '.join(ATTACKS)}")
    return list(dict.fromkeys(names))


class WithSurrogate(nn.Module):
    """``model`` differentiated through another surrogate: ``forward`` runs it under ``use_surrogate(spec)``
    (the surrogate derivative is taken in the forward pass, so the backward needs no context)."""

    def __init__(self, model: nn.Module, spec: str):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from snnkit.nn.surrogate import use_surrogate

        with use_surrogate(self.model, self.spec):
            return self.model(x)


def reference_sources(model: nn.Module, surrogates: tuple[str, ...]) -> tuple[dict, dict, list[str]]:
    """``(transfer sources, ensemble members, notes)`` derived from the reference model.

    Transfer sources: the reference (its own surrogate), its non-spiking twin and its BPTR view (each where
    defined; a note says why one is missing). Ensemble members: those plus the reference under each surrogate
    (but its own).
    """
    from snnkit.models.spiking import TwinUndefined

    sources: dict[str, ScoreFn] = {"reference": model}
    notes: list[str] = []
    for name, make in (("twin", getattr(model, "twin", None)), ("bptr", getattr(model, "bptr", None))):
        if make is None:
            notes.append(f"no {name} source: the reference is not an snnkit SpikingModel")
            continue
        try:
            sources[name] = make().to(next(model.parameters()).device)
        except TwinUndefined as exc:
            notes.append(f"no {name} source: {exc}")
    from snnkit.nn.surrogate import Surrogate, parse

    own = {repr(m.surrogate) for m in model.modules() if isinstance(getattr(m, "surrogate", None), Surrogate)}
    members = dict(sources)
    for spec in surrogates:
        if own == {repr(parse(spec))}:
            continue  # the reference's own surrogate: already the "reference" member
        members[f"surrogate:{spec}"] = WithSurrogate(model, spec)
    return sources, members, notes


@dataclass
class Side:
    """One attacked thing.

    label: ``"reference"`` or the target's name; scores: its judge ``x [B, ...] -> [B, C]``; differentiable:
    whether gradient attacks may use ``scores`` directly; adaptive: a differentiable model of it (None: no
    adaptive attack); counter: the :class:`TargetScores` that answered its queries (query accounting).
    """

    label: str
    scores: ScoreFn
    differentiable: bool
    adaptive: ScoreFn | None = None
    adaptive_via: str = ""
    counter: TargetScores | None = None


def build_attacks(names: list[str], side: Side, sources: dict, members: dict, settings: Settings,
                  num_classes: int) -> dict[str, Attack]:
    """The attacks ``names`` against ``side``, keyed by names that are the same on every side (``PGD-20``,
    ``Square-1000``, ``Transfer[PGD-20]``, ``Ensemble[PGD-20]``, ``Adaptive[PGD-50]``, ...)."""
    s, v = settings, side.scores
    eps, norm, seed, eot = s.eps, s.norm, s.seed, s.eot

    def pgd(model: ScoreFn, steps: int, norm: str = norm) -> PGD:
        return PGD(model, eps, steps=steps, norm=norm, eot_samples=eot, seed=seed)

    def apgd(model: ScoreFn, loss: str) -> APGD:
        return APGD(model, eps, norm=norm, loss=loss, steps=s.steps_for("apgd"), eot_samples=eot, seed=seed)

    def crafter(model: ScoreFn) -> PGD:
        return pgd(model, s.steps_for("transfer"))

    craft = f"PGD-{s.steps_for('transfer')}"

    def noise() -> dict[str, Attack]:
        a = GaussianNoise(v, std=eps, eps=eps, norm=norm, seed=seed)
        return {a.name: a}

    def square() -> dict[str, Attack]:
        if norm != "Linf":
            raise ValueError("square is an Linf attack; use --norm Linf")
        a = Square(v, eps, n_queries=s.queries, seed=seed)
        return {a.name: a}

    def transfer() -> dict[str, Attack]:
        return {f"Transfer[{craft}]": Transfer(v, sources, crafter, seed=seed)}

    def ensemble() -> dict[str, Attack]:
        extra = {k: m for k, m in members.items() if not (side.label == "reference" and k == "reference")}
        a = SurrogateEnsemble(v, crafter, surrogates=(), extra_models=extra, include_model=side.differentiable,
                              seed=seed)
        if not side.differentiable:
            a.kind = "transfer"  # every member is another model: on this side it is a transfer attack
        return {f"Ensemble[{craft}]": a}

    def adaptive(with_apgd: bool = False) -> dict[str, Attack]:
        if side.adaptive is None:
            raise ValueError(f"{side.label}: no differentiable model for an adaptive attack")
        out = {f"Adaptive[PGD-{s.steps_for('adaptive')}]": pgd(side.adaptive, s.steps_for("adaptive"))}
        if with_apgd:
            out["Adaptive[APGD-CE]"] = apgd(side.adaptive, "ce")
        return out

    def standard() -> dict[str, Attack]:
        if not side.differentiable:
            return {**noise(), **(square() if norm == "Linf" else {}), **ensemble(),
                    **(adaptive(with_apgd=True) if side.adaptive is not None else {})}
        suite = standard_attacks(v, eps, norm=norm, pgd_steps=s.steps_for("pgd"), apgd_steps=s.steps_for("apgd"),
                                 square_queries=s.queries if norm == "Linf" else 0, dlr=num_classes >= 3,
                                 eot_samples=eot, seed=seed)
        return {**suite, **ensemble()}

    def one(a: Attack) -> dict[str, Attack]:
        return {a.name: a}

    table: dict[str, Callable[[], dict[str, Attack]]] = {
        "fgsm": lambda: one(FGSM(v, eps, norm=norm, eot_samples=eot, seed=seed)),
        "pgd": lambda: one(pgd(v, s.steps_for("pgd"))),
        "pgd-l2": lambda: {f"PGD-L2-{s.steps_for('pgd')}": pgd(v, s.steps_for("pgd"), "L2")},
        "bim": lambda: one(BIM(v, eps, steps=s.steps, norm=norm, eot_samples=eot, seed=seed)),
        "apgd-ce": lambda: one(apgd(v, "ce")),
        "apgd-dlr": lambda: one(apgd(v, "dlr")),
        "square": square, "noise": noise, "transfer": transfer, "ensemble": ensemble, "adaptive": adaptive,
        "standard": standard,
    }
    out: dict[str, Attack] = {}
    for name in names:
        if name in GRADIENT_ATTACKS and not side.differentiable:
            raise ValueError(f"--attack {name} needs gradients of the target; {side.label} has none: use transfer, "
                             "square, noise, ensemble, adaptive or standard")
        if name == "apgd-dlr" and num_classes < 3:
            raise ValueError(f"apgd-dlr needs at least 3 classes, the model has {num_classes}")
        out.update(table[name]())
    return out


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


def recheck_on_lava(graph: nir.NIRGraph, x: torch.Tensor, y: torch.Tensor, emulated: SideResult, lava,
                    emulator) -> tuple[EvaluationReport, dict]:
    """Run the clean inputs and every final adversarial example on Lava (one worker run) and on the emulator.

    Returns Lava's evaluation (its verdicts, the emulator run's timings and queries) and what was compared:
    ``outputs_bit_exact`` (every output spike equal), ``verdicts_agree`` (per sample and attack, Lava's
    correctness equals the emulator's from the attack run), counts and Lava's wall time.
    """
    from snnkit.deploy.inputs import encode, graph_timesteps

    meta = dict(graph.metadata or {})
    steps = graph_timesteps(meta, None)
    names = list(emulated.adversarial)
    stacked = torch.cat([x.detach().cpu()] + [emulated.adversarial[n] for n in names])
    encoded = encode(stacked.numpy(), meta, steps)
    t0 = time.perf_counter()
    on_lava = lava.run(graph, encoded)
    lava_s = time.perf_counter() - t0
    on_emu = emulator.run(graph, encoded)
    n = x.shape[0]
    y_np = y.detach().cpu().numpy()
    pred = on_lava.predictions(steps)
    clean = torch.from_numpy(pred[:n] == y_np)
    results = {}
    differing_verdicts = int((clean != emulated.report.clean_correct).sum())
    for k, name in enumerate(names):
        correct = clean & torch.from_numpy(pred[(k + 1) * n:(k + 2) * n] == y_np)
        r = emulated.report.results[name]
        differing_verdicts += int((correct != r.correct).sum())
        results[name] = AttackResult(name=name, kind=r.kind, family=r.family, norm=r.norm, eps=r.eps, correct=correct,
                                     seconds=r.seconds, max_distance=r.max_distance, queries=r.queries, loss=r.loss)
    report = EvaluationReport(clean_correct=clean, results=results)
    report.warnings = masking_warnings(report)
    check = {"on": lava.name, "answered_by": emulator.name, "samples": int(stacked.shape[0]),
             "outputs_bit_exact": bool(np.array_equal(on_lava.outputs, on_emu.outputs)),
             "differing_output_values": int((on_lava.outputs != on_emu.outputs).sum())
             if on_lava.outputs.shape == on_emu.outputs.shape else None,
             "verdicts_agree": differing_verdicts == 0, "differing_verdicts": differing_verdicts,
             "lava_wall_s": lava_s, "lava_run_s": on_lava.wall_s}
    return report, check


def target_side(name: str, graph: nir.NIRGraph, probe: torch.Tensor, settings: Settings,
                make_target: Callable[..., object]) -> tuple[Side, object | None, object | None]:
    """The side of target ``name`` (see the module docstring) and, for lava, ``(lava, emulator)`` targets for
    the re-check (else None, None). ``make_target(name, **options)`` builds a target."""
    dev = settings.device
    if name in TORCH_TARGETS:
        options = {"device": dev} if name == "torch" else {}
        target = make_target(name, batch_size=settings.batch_size, **options)
        module = TargetModule(target, graph)
        return Side(name, module, True, adaptive=module, adaptive_via=f"{name} (the target itself)"), None, None
    if name not in LOIHI_TARGETS:
        raise ValueError(f"unknown target {name!r}; available: {', '.join(TARGETS)}")
    lava = None
    if name == "lava":
        from snnkit.deploy.lava.target import find_lava_python

        lava = make_target("lava")
        if getattr(lava, "python", None) is None:
            find_lava_python()  # no Lava environment: say so before any attack runs
    options = dict(getattr(lava, "quant_options", {}))
    emulator = make_target("loihi-emu", device=dev, **options)
    counter = TargetScores(emulator, graph)
    adaptive = EmulatorModule(emulator, graph, probe, device=dev)
    side = Side(name, counter, False, adaptive=adaptive, adaptive_via="loihi-emu differentiable mode",
                counter=counter)
    return side, lava, emulator


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


def reattack(model: nn.Module, graph: nir.NIRGraph, target: str, attacks: list[str], x: torch.Tensor,
             y: torch.Tensor, settings: Settings, *, make_target: Callable[..., object] | None = None,
             log: Callable[[str], None] | None = None) -> dict:
    """Attack the reference ``model`` and ``target`` running ``graph`` (exported from ``model``) on ``x``, ``y``.

    make_target: ``(name, **options) -> Target`` (default ``get_target``); log: receives one line per phase.
    Returns a JSON-ready dict (see ``snn-attack --help``) and, under the private key ``"_arrays"``, the
    adversarial examples and per-sample correctness per side for ``--save-adv``.
    """
    if make_target is None:
        from snnkit.deploy.base import get_target as make_target
    say = log or (lambda message: None)
    num_classes = int(dict(graph.metadata or {}).get("num_classes") or 0) or int(y.max()) + 1
    t_start = time.perf_counter()
    model = model.to(settings.device)  # attacks and verdicts run it in eval mode (``eval_mode``)
    sources, members, notes = reference_sources(model, tuple(settings.surrogates))
    ref_side = Side("reference", model, True, adaptive=model, adaptive_via="reference")
    tgt_side, lava, emulator = target_side(target, graph, x, settings, make_target)
    # build both attack sets first: a name that does not fit a side fails before any work
    ref_attacks = build_attacks(attacks, ref_side, sources, members, settings, num_classes)
    tgt_attacks = build_attacks(attacks, tgt_side, sources, members, settings, num_classes)
    n = int(x.shape[0])
    say(f"reference: {n} samples, {', '.join(ref_attacks)}")
    ref = run_side(ref_side, ref_attacks, x, y, settings)
    say(f"{target}{' (queries answered by loihi-emu)' if lava is not None else ''}: {n} samples, "
        f"{', '.join(tgt_attacks)}")
    tgt = run_side(tgt_side, tgt_attacks, x, y, settings)

    reference = evaluation_summary("reference", ref.report)
    reference.update(seconds=ref.seconds, queries=queries_summary(ref.report, None))
    judged = tgt.report
    result = {"target": target, "attack": ",".join(attacks), "eps": settings.eps, "norm": settings.norm,
              "n_samples": int(x.shape[0]), "seed": settings.seed}
    recheck = None
    if lava is not None:
        say(f"re-checking the clean inputs and {len(tgt.adversarial)} x {n} adversarial examples on Lava")
        judged, recheck = recheck_on_lava(graph, x, y, tgt, lava, emulator)
    target_eval = evaluation_summary(target, judged)
    target_eval["seconds"] = tgt.seconds
    if recheck is not None:
        emu = evaluation_summary("loihi-emu", tgt.report)
        for entry, e in zip(target_eval["attacks"], emu["attacks"]):
            entry["emulator_robust_accuracy"] = e["robust_accuracy"]
        target_eval["emulator"] = {k: emu[k] for k in ("clean_accuracy", "worst_case_accuracy", "warnings")}
    target_eval["queries"] = queries_summary(tgt.report, tgt_side.counter)
    result.update(
        clean_accuracy=target_eval["clean_accuracy"], robust_accuracy=target_eval["robust_accuracy"],
        worst_case_accuracy=target_eval["worst_case_accuracy"],
        transfer_success_rate=target_eval["transfer_success_rate"],
        attacks=target_eval["attacks"], warnings=target_eval["warnings"],
        gradient_sparsity=target_eval["gradient_sparsity"],
        queries=target_eval["queries"],
        adaptive_via=tgt_side.adaptive_via or None,
        reference=reference,
        evaluations=[reference, target_eval],
        settings={"steps": settings.steps, "default_steps": dict(DEFAULT_STEPS), "square_queries": settings.queries,
                  "batch_size": settings.batch_size, "eot": settings.eot, "device": settings.device,
                  "transfer_sources": list(sources), "ensemble_members": list(members)},
        notes=notes)
    if recheck is not None:
        result["recheck"] = recheck
        result["emulator"] = target_eval["emulator"]
    result["wall_s"] = time.perf_counter() - t_start
    result["_arrays"] = _arrays(x, y, ref, tgt, judged)
    return result


def _arrays(x: torch.Tensor, y: torch.Tensor, ref: SideResult, tgt: SideResult,
            judged: EvaluationReport) -> dict[str, np.ndarray]:
    """What ``--save-adv`` writes: inputs, labels and per side the adversarial examples ``[A, N, ...]``, the
    per-sample correctness ``[A, N]`` (the side's final verdicts) and the attack names."""
    out = {"x": x.detach().cpu().numpy(), "y": y.detach().cpu().numpy()}
    for key, side, report in (("reference", ref, ref.report), ("target", tgt, judged)):
        names = list(side.adversarial)
        out[f"{key}_attacks"] = np.array(names, dtype=str)
        out[f"{key}_adversarial"] = np.stack([side.adversarial[n].numpy() for n in names])
        out[f"{key}_correct"] = np.stack([report.results[n].correct.numpy() for n in names])
        out[f"{key}_clean_correct"] = report.clean_correct.numpy()
    if judged is not tgt.report:
        out["emulator_correct"] = np.stack([tgt.report.results[n].correct.numpy() for n in tgt.adversarial])
    return out

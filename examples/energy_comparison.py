"""What does robustness cost in energy per inference, on each target, and against an ANN on a GPU?

Three spiking MLPs are trained on the embedded digits data: a vanilla one (BPTT), an adversarially trained one
(PGD-AT at eps 0.1) and a 90 % sparse one from robust ANN -> SNN conversion (seed 001: TRADES ANN, HYDRA mask,
thresholds from the ANN's activations, PGD-AT fine-tuning; ``snnkit.train.conversion.convert_pipeline``). The
multi-model report (``snnkit.report``, what ``snn-report`` writes) then deploys each of them on every target
(one that cannot run here is listed with its reason), attacks them at eps 0.1 where they run (not with
``--quick``), and sets each beside its non-spiking twin on a GPU-class processor (the twin's dense
multiply-accumulates costed with an NVIDIA H100's datasheet figures, and measured with NVML where a CUDA device
is present).

Energy per inference comes from published per-operation figures (``snnkit/energy/figures.json``, each with its
source): the counts a target measured (synaptic operations, neuron updates, spikes) times the figures of each
energy model; ranges where a model splits active and inactive neuron updates. Accuracy is a fraction of the
test samples used; robust accuracy the per-sample worst case of the report's attacks.

Prints the decision table (a model x target row, the twin last) and writes the report into ``OUT/report``
(``report.md``, ``report.html``, ``report.json``, plots in ``OUT/report/plots/``) and the three models into
``OUT/models``.

    python examples/energy_comparison.py --out runs/ex-energy
    python examples/energy_comparison.py --quick --out /tmp/ex
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import snnkit
from snnkit.attack import Settings
from snnkit.cli.common import run
from snnkit.deploy import target_names
from snnkit.export import to_nir
from snnkit.report.collect import build_comparison, inputs_from_dataset
from snnkit.report.robustness import AttackPlan
from snnkit.report.writers import fmt_bytes, fmt_joules, markdown_table, write_report
from snnkit.train import TrainConfig, train
from snnkit.train.conversion import CONVERSION_NEURONS, ConversionConfig, convert_pipeline

EPS = 0.1
SNN_ENERGY, TWIN_ENERGY = "loihi1-davies2018", "gpu-h100-fp32"  # the table's two energy columns (all in the report)


@dataclass(frozen=True)
class Budget:
    hidden: int
    epochs: int  # SNN training and the robust ANN's; the conversion's pruning and ANN fine-tuning get a third
    train_steps: int  # attack steps of PGD-AT and TRADES in training
    samples: int | None  # the first N test digits (None: all 360)
    attacked: int  # of which the first N are attacked (0: no attacks)
    attack_steps: int
    queries: int


FULL = Budget(hidden=512, epochs=30, train_steps=5, samples=None, attacked=100, attack_steps=10, queries=100)
QUICK = Budget(hidden=64, epochs=2, train_steps=1, samples=32, attacked=0, attack_steps=0, queries=0)  # no attacks


def trained_models(budget: Budget, out: Path) -> dict[str, Path]:
    """Train the three models into ``out``; their model files by label."""
    pgd_at = f"pgd-at:eps={EPS},steps={budget.train_steps}"
    base = TrainConfig(dataset="digits", epochs=budget.epochs, seed=0,
                       model={"arch": "mlp", "hidden": [budget.hidden], "timesteps": 8})
    train(base, out / "vanilla", progress=False)
    train(replace(base, method=pgd_at), out / "pgd-at", progress=False)
    conversion = ConversionConfig(ann_method=f"trades:eps={EPS},steps={budget.train_steps},alpha=0.025",
                                  sparsity=0.9, ann_epochs=budget.epochs, prune_epochs=max(1, budget.epochs // 3),
                                  ann_finetune_epochs=max(1, budget.epochs // 3), ann_lr=2e-3)
    convert_pipeline(replace(base, method=pgd_at, model={**base.model, **CONVERSION_NEURONS}), conversion,
                     out / "converted-90", progress=False)
    return {label: out / label / "model.pt" for label in ("vanilla", "pgd-at", "converted-90")}


def decision_rows(summary: dict) -> list[list]:
    """The printed table: the report's decision table with its two headline energy columns."""
    rows = []
    for r in summary["rows"]:
        if r["status"] != "ok":
            rows.append([r["model"], r["target"], f"{r['status']}: {r.get('reason', '')}"] + [""] * 5)
            continue
        robust = r["robust"][-1] if r["robust"] else None
        energy = r["energy"].get(TWIN_ENERGY if r["kind"] == "twin" else SNN_ENERGY, {}).get("j")
        work = f"{r['macs']:,.0f} MACs" if r["kind"] == "twin" else f"{r['synops']:,.0f} synops"
        rows.append([r["model"], r["target"], f"{r['accuracy']:.3f}",
                     "n/a" if robust is None else f"{robust:.3f}", work, fmt_joules(energy),
                     fmt_bytes(r["memory_bytes"]), "reference" if r["reference"] else ""])
    return rows


def main(args) -> int:
    budget = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for label, path in trained_models(budget, out / "models").items():
        model = snnkit.load(path)
        graph = to_nir(model)
        entries.append({"label": label, "path": str(path), "model": model, "graph": graph,
                        "inputs": inputs_from_dataset(graph, "digits", limit=budget.samples), "attack_files": []})
    plan = AttackPlan(attacks=["transfer", "square", "pgd"], eps=[EPS], limit=budget.attacked,
                      settings=Settings(eps=EPS, steps=budget.attack_steps, queries=budget.queries, progress=False)
                      ) if budget.attacked else None
    report = build_comparison(entries, target_names(), attack_plan=plan, raster=False)
    files = write_report(report, out / "report")
    attacked = (f"worst case of transfer, Square-{budget.queries} and PGD-{budget.attack_steps} (adaptive through a "
                f"target's model of itself) at eps {EPS} on the first {budget.attacked}" if plan else "not attacked")
    print(f"\n{entries[0]['inputs'].source}; robust: {attacked}; energy per inference: {SNN_ENERGY} for the SNN "
          f"rows, {TWIN_ENERGY} for the twin (every energy model is in the report):\n")
    print(markdown_table(["model", "target", "accuracy", f"robust {EPS}", "work / inference", "energy / inference",
                          "weights stored", ""], decision_rows(report.data["summary"])))
    print(f"\nwrote {files['report.md']}, {files['report.html']}, {files['report.json']} and "
          f"{sum(k.startswith('plot:') for k in files)} plots in {out / 'report' / 'plots'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a reduced budget (small networks, 1 epoch, few samples)")
    p.add_argument("--out", required=True, help="output folder (models, report)")
    return p


if __name__ == "__main__":
    raise SystemExit(run("energy_comparison", main, parser()))

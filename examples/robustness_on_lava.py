"""Does a model's robustness survive deployment on Loihi 2?

Trains a spiking MLP on the embedded digits data with PGD adversarial training (or loads ``--model``), exports
it to NIR and runs it on Lava (Loihi 2 fixed point, when its environment exists) and on ``loihi-emu`` (snnkit's
bit-exact emulator of the same fixed-point dynamics). Then it re-attacks the deployed model at several eps
beside the float reference, on the same samples, with the attacks a deployed model allows:

- ``transfer``: PGD crafted on the reference, its non-spiking twin and its rate view, replayed on the target;
- ``square``: a score-based black-box attack; its queries are answered by the emulator;
- ``adaptive``: PGD through the emulator's differentiable (straight-through) mode.

When Lava exists, the clean inputs and every final adversarial example are re-run on Lava and its verdicts are
the target's; otherwise the attacked target is ``loihi-emu`` and the script says so. Robust accuracy is the
per-sample worst case over a side's attacks (accuracy in [0, 1], eps in input units on pixels in [0, 1]).

Prints the deployment table and the robustness table; writes ``OUT/robust_accuracy_vs_eps.png`` (from eps 0,
the clean accuracy).

    python examples/robustness_on_lava.py --out runs/ex-lava             # about the budget of the README
    python examples/robustness_on_lava.py --model runs/mlp/model.pt --out runs/ex-lava
    python examples/robustness_on_lava.py --quick --out /tmp/ex          # a reduced budget (tests)
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import snnkit
from snnkit import data
from snnkit.attack import Settings, reattack
from snnkit.cli.common import run
from snnkit.deploy import DeployError, get_target
from snnkit.deploy.inputs import encode
from snnkit.export import to_nir
from snnkit.report.writers import markdown_table
from snnkit.train import TrainConfig, train

ATTACKS = ["transfer", "square", "adaptive"]


@dataclass(frozen=True)
class Budget:
    """Training (when no ``--model``) and attack budget."""

    epochs: int
    hidden: int
    method: str  # the adversarial training method (snn-train --method)
    samples: int  # the first N digits of the test split
    eps: tuple[float, ...]
    steps: int  # PGD steps of transfer crafting and of the adaptive attack
    queries: int  # Square's queries per sample


FULL = Budget(epochs=30, hidden=512, method="pgd-at:eps=0.1,steps=5", samples=100, eps=(0.03, 0.06, 0.1), steps=20,
              queries=300)
QUICK = Budget(epochs=3, hidden=64, method="fgsm-at:eps=0.1", samples=16, eps=(0.05, 0.1), steps=3, queries=12)


def model_for(args, budget: Budget, out: Path):
    """``--model``, or an adversarially trained MLP in ``OUT/model`` (full budget: PGD-AT at eps 0.1 with 5 steps,
    the robustness benchmark's; ``--quick``: FGSM-AT)."""
    if args.model:
        return snnkit.load(args.model)
    cfg = TrainConfig(dataset="digits", model={"arch": "mlp", "hidden": [budget.hidden], "timesteps": 8},
                      epochs=budget.epochs, method=budget.method, seed=0)
    train(cfg, out / "model", progress=False)
    return snnkit.load(out / "model" / "model.pt")


def attacked_target():
    """Lava when its environment exists (queries answered by loihi-emu, verdicts re-checked on Lava), else
    loihi-emu; and the line saying which."""
    lava = get_target("lava")
    try:
        lava.check_available()
    except DeployError as exc:
        return get_target("loihi-emu"), f"no Lava here ({exc}); attacking loihi-emu, bit-exact with Lava"
    return lava, "attacking Lava: queries answered by loihi-emu, final verdicts re-checked on Lava"


def deployment_rows(graph, x: np.ndarray, y: np.ndarray, names: list[str]) -> list[list]:
    """Accuracy, counts per sample and agreement with loihi-emu's output spikes on each target in ``names``."""
    encoded = encode(x, dict(graph.metadata))
    steps = encoded.shape[1]
    results = {n: get_target(n).run(graph, encoded) for n in names}
    emu = results["loihi-emu"].aligned_outputs(steps)
    rows = []
    for name, r in results.items():
        same = np.array_equal(r.aligned_outputs(steps), emu) if name != "torch" else "n/a (float)"
        rows.append([name, f"{(r.predictions(steps) == y).mean():.3f}", f"{r.total_spikes / len(x):,.0f}",
                     f"{r.total_synops / len(x):,.0f}", same, f"{r.wall_s:.2f}"])
    return rows


def plot(curves: dict[str, list[float]], eps: tuple[float, ...], target: str, path: Path) -> None:
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for (label, values), style in zip(curves.items(), ("o-", "x--")):
        ax.plot((0.0, *eps), values, style, label=label)
    ax.set(xlabel="eps (Linf, pixels in [0, 1])", ylabel="robust accuracy (worst case)", ylim=(0, 1),
           title=f"Robust accuracy: reference vs {target}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(args) -> int:
    budget = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = model_for(args, budget, out)
    if model.config["input_shape"] != list(data.info("digits").input_shape):
        raise ValueError(f"{args.model}: a model for inputs {model.config['input_shape']}, this example attacks "
                         "digits models ([1, 8, 8])")
    graph = to_nir(model)
    x, y = data.load("digits", "test", limit=budget.samples)
    target, how = attacked_target()
    print(how)
    names = ["torch", "loihi-emu"] + (["lava"] if target.name == "lava" else [])
    print("\nDeployed on the first", budget.samples, "test digits:\n")
    print(markdown_table(["target", "accuracy", "spikes / sample", "synops / sample", "outputs = loihi-emu",
                          "wall s"], deployment_rows(graph, x.numpy(), y.numpy(), names)))

    rows, curves = [], {"reference": [], target.name: []}  # from eps 0: clean accuracy
    for eps in budget.eps:
        settings = Settings(eps=eps, steps=budget.steps, queries=budget.queries, progress=False)
        s = reattack(model, graph, target, ATTACKS, x, y, settings).summary
        ref = {a["name"]: a["robust_accuracy"] for a in s["reference"]["attacks"]}
        for a in s["attacks"]:
            rows.append([eps, a["name"], f"{ref[a['name']]:.3f}", f"{a['robust_accuracy']:.3f}"])
        rows.append([eps, "**worst case**", f"{s['reference']['robust_accuracy']:.3f}", f"{s['robust_accuracy']:.3f}"])
        if "recheck" in s:
            rows.append([eps, "Lava re-check: outputs = loihi-emu", "", s["recheck"]["outputs_bit_exact"]])
        if not curves["reference"]:
            curves["reference"].append(s["reference"]["clean_accuracy"])
            curves[target.name].append(s["clean_accuracy"])
        curves["reference"].append(s["reference"]["robust_accuracy"])
        curves[target.name].append(s["robust_accuracy"])
    print(f"\nRobust accuracy, reference vs {target.name} ({budget.samples} samples, {budget.steps}-step PGD, "
          f"Square {budget.queries} queries):\n")
    print(markdown_table(["eps", "attack", "reference", target.name], rows))
    plot(curves, budget.eps, target.name, out / "robust_accuracy_vs_eps.png")
    print(f"\nwrote {out / 'robust_accuracy_vs_eps.png'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an snnkit digits model file (default: train a PGD-AT MLP into OUT/model)")
    p.add_argument("--quick", action="store_true", help="a reduced budget (tiny model, few samples and steps)")
    p.add_argument("--out", required=True, help="output folder (figures, the trained model)")
    return p


if __name__ == "__main__":
    raise SystemExit(run("robustness_on_lava", main, parser()))

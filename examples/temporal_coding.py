"""Is a temporally coded SNN more robust, or does it only hide its gradients (seed 000)?

Two spiking MLPs are trained the same way on the embedded digits data, one fed the direct code (the analog
pixel is the input current at every step) and one the latency code (one spike per pixel, earlier for brighter
pixels; its input gradient is non-zero only near a bin edge). Each is attacked with snnkit's standard suite
(``snn-attack --attack standard`` on the reference: Gaussian noise, FGSM, PGD, APGD-CE, APGD-DLR and Square,
the per-sample worst case over all), and the gradient-masking checks (``snnkit.attack.masking_warnings``) are
read: APGD weaker than PGD, a black-box attack beating every white-box one, too many exactly-zero input
gradients.

The *apparent* robustness is what a white-box PGD evaluation alone reports; the *worst case* is the honest
number. Input-gradient sparsity is the fraction of exact zeros of d loss / d x over the test samples
(``snnkit.attack.input_gradient_sparsity``). Accuracies are fractions of the attacked test samples, eps is
Linf on pixels in [0, 1].

Prints the table and every masking warning; writes ``OUT/robust_accuracy_per_attack.png`` and
``OUT/zero_gradient_map.png`` (per pixel, the fraction of samples whose input gradient is exactly 0).

    python examples/temporal_coding.py --out runs/ex-temporal
    python examples/temporal_coding.py --quick --out /tmp/ex
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import snnkit
from snnkit import data
from snnkit.attack import evaluate, input_gradient, input_gradient_sparsity, standard_attacks
from snnkit.cli.common import run
from snnkit.report.writers import markdown_table
from snnkit.train import TrainConfig, train

CODES = {"direct": {"name": "direct"}, "latency": {"name": "latency"}}
EPS = 0.1


@dataclass(frozen=True)
class Budget:
    hidden: int
    epochs: int
    samples: int  # the first N test digits are attacked
    pgd_steps: int
    apgd_steps: int
    square_queries: int


FULL = Budget(hidden=512, epochs=30, samples=200, pgd_steps=20, apgd_steps=100, square_queries=1000)
QUICK = Budget(hidden=64, epochs=3, samples=32, pgd_steps=5, apgd_steps=5, square_queries=30)


def trained(code: str, budget: Budget, out: Path):
    cfg = TrainConfig(dataset="digits", epochs=budget.epochs, seed=0,
                      model={"arch": "mlp", "hidden": [budget.hidden], "timesteps": 8, "encoder": CODES[code]})
    train(cfg, out / code, progress=False)
    return snnkit.load(out / code / "model.pt")


def plot_attacks(reports: dict, path: Path) -> None:
    names = list(next(iter(reports.values())).results)
    fig = Figure(figsize=(8, 3.5))
    ax = fig.subplots()
    at = np.arange(len(names) + 1)
    width = 0.8 / len(reports)
    for i, (code, rep) in enumerate(reports.items()):
        values = [rep.results[n].robust_accuracy for n in names] + [rep.worst_case_accuracy]
        ax.bar(at + (i - (len(reports) - 1) / 2) * width, values, width, label=f"{code} code")
    ax.set_xticks(at, names + ["worst case"], rotation=20)
    ax.set(ylabel="robust accuracy", ylim=(0, 1), title=f"Standard suite at eps {EPS}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_zero_gradients(maps: dict[str, np.ndarray], path: Path) -> None:
    fig = Figure(figsize=(3 * len(maps), 3))
    for ax, (code, m) in zip(fig.subplots(1, len(maps), squeeze=False)[0], maps.items()):
        image = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set(title=f"{code}: zero d loss / d x", xticks=[], yticks=[])
    fig.colorbar(image, ax=fig.axes, shrink=0.8, label="fraction of samples")
    fig.savefig(path, dpi=120)


def main(args) -> int:
    budget = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = data.load("digits", "test", limit=budget.samples)
    reports, maps, rows, warnings = {}, {}, [], []
    for code in CODES:
        model = trained(code, budget, out)
        attacks = standard_attacks(model, EPS, pgd_steps=budget.pgd_steps, apgd_steps=budget.apgd_steps,
                                   square_queries=budget.square_queries)
        rep = reports[code] = evaluate(model, x, y, attacks, progress=False)
        maps[code] = (input_gradient(model, x, y) == 0).float().mean(0)[0].numpy()
        pgd = rep.results[f"PGD-{budget.pgd_steps}"].robust_accuracy
        rows.append([code, f"{rep.clean_accuracy:.3f}", f"{input_gradient_sparsity(model, x, y):.3f}",
                     f"{pgd:.3f}", f"{rep.worst_case_accuracy:.3f}", f"{pgd - rep.worst_case_accuracy:+.3f}",
                     len(rep.warnings)])
        warnings += [f"{code}: {w}" for w in rep.warnings]
    print(f"\nDirect vs latency code, {budget.samples} test digits, eps {EPS} (PGD-{budget.pgd_steps}, "
          f"APGD-{budget.apgd_steps}, Square-{budget.square_queries}):\n")
    print(markdown_table(["code", "clean", "grad. sparsity", "apparent (PGD)", "worst case",
                          "apparent - worst", "masking warnings"], rows))
    print("\nPer attack (robust accuracy):\n")
    names = list(reports["direct"].results)
    print(markdown_table(["code", *names], [[c, *(f"{r.results[n].robust_accuracy:.3f}" for n in names)]
                                            for c, r in reports.items()]))
    print("\nGradient-masking checks:")
    print("\n".join(f"- {w}" for w in warnings) if warnings else "- none fired")
    plot_attacks(reports, out / "robust_accuracy_per_attack.png")
    plot_zero_gradients(maps, out / "zero_gradient_map.png")
    print(f"\nwrote {out / 'robust_accuracy_per_attack.png'}, {out / 'zero_gradient_map.png'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a reduced budget (small networks, few samples and steps)")
    p.add_argument("--out", required=True, help="output folder (figures, the two trained models)")
    return p


if __name__ == "__main__":
    raise SystemExit(run("temporal_coding", main, parser()))

"""What does each phase of robust ANN -> sparse SNN conversion (seed 001) contribute?

The pipeline of ``snn-train --pipeline convert`` (``snnkit.train.conversion``), one phase at a time, on the
embedded digits data, with the clean and PGD robust accuracy of the network after every phase:

1. a robust ANN: the SNN's non-spiking twin (ReLU for every hidden spiking layer) trained with TRADES;
2. a HYDRA mask: importance scores trained on the same robust loss choose the 90 % of the weights to prune,
   then the sparse ANN is fine-tuned with its mask frozen;
3. conversion: the weights go to an SNN of non-leaky IF neurons with reset by subtraction, and every spiking
   layer's threshold is 0.3 x the 99.7th percentile of its ANN pre-activations over the training set;
4. BPTT fine-tuning of the converted SNN with PGD adversarial training (triangle surrogate), mask frozen.

Accuracies are fractions of the digits test split (360 samples; the robust one on its first ``samples``), PGD
is Linf at eps 0.1 on pixels in [0, 1]. Prints the phase table and the thresholds; writes
``OUT/accuracy_per_phase.png`` and the converted and fine-tuned models (``OUT/converted.pt``, ``OUT/snn/``).
The full budget is the robustness benchmark's (MLP 64-512-10, T = 8, 30/10/10/30 epochs, 5 attack steps in
training); ``--quick`` trains a 64-neuron layer for 1-2 epochs per phase with 2 attack steps, the ANN phases on
the first 500 training digits.

    python examples/sparse_conversion.py --out runs/ex-convert
    python examples/sparse_conversion.py --quick --out /tmp/ex
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import snnkit
from snnkit import data
from snnkit.attack import PGD, evaluate
from snnkit.cli.common import run
from snnkit.models import build, save
from snnkit.report.writers import markdown_table
from snnkit.train import TrainConfig, train
from snnkit.train import evaluate as clean_accuracy
from snnkit.train.conversion import (CONVERSION_NEURONS, ANNTwin, calibrate_thresholds, prune_ann, train_ann,
                                    transfer)
from snnkit.train.sparsity import weight_sparsity

TRADES = "trades:beta=6,eps=0.1,steps={steps},alpha=0.025"  # the robustness benchmark's methods (steps: 5)
PGD_AT = "pgd-at:eps=0.1,steps={steps}"
EPS = 0.1


@dataclass(frozen=True)
class Budget:
    hidden: int
    train_samples: int | None  # the ANN phases train on the first N training digits (None: all 1,437)
    train_steps: int  # attack steps of TRADES and PGD-AT during training
    ann_epochs: int
    prune_epochs: int
    ann_finetune_epochs: int
    snn_epochs: int
    samples: int  # test samples attacked
    pgd_steps: int


FULL = Budget(hidden=512, train_samples=None, train_steps=5, ann_epochs=30, prune_epochs=10, ann_finetune_epochs=10,
              snn_epochs=30, samples=360, pgd_steps=20)
QUICK = Budget(hidden=64, train_samples=500, train_steps=2, ann_epochs=2, prune_epochs=1, ann_finetune_epochs=1,
               snn_epochs=1, samples=48, pgd_steps=5)


def measure(phase: str, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, budget: Budget,
            seconds: float) -> list:
    """One table row: clean accuracy on the test split, PGD robust accuracy on its first ``samples``, zero
    weights, the phase's wall time."""
    attack = PGD(net, EPS, steps=budget.pgd_steps)
    robust = evaluate(net, x[:budget.samples], y[:budget.samples], {"pgd": attack}, progress=False)
    return [phase, type(net).__name__, f"{clean_accuracy(net, x, y):.3f}", f"{robust.worst_case_accuracy:.3f}",
            f"{weight_sparsity(net)['total']:.0%}", f"{seconds:.1f}"]


def plot(rows: list[list], path: Path) -> None:
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    at = np.arange(len(rows))
    ax.bar(at - 0.2, [float(r[2]) for r in rows], 0.4, label="clean")
    ax.bar(at + 0.2, [float(r[3]) for r in rows], 0.4, label=f"PGD, eps {EPS}")
    ax.set_xticks(at, [r[0].split(":")[0] for r in rows])
    ax.set(ylabel="test accuracy", ylim=(0, 1), title="Robust ANN -> sparse SNN, phase by phase")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(args) -> int:
    budget = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = data.load("digits", "train")
    x_train, y_train = x_train[:budget.train_samples], y_train[:budget.train_samples]
    trades, pgd_at = TRADES.format(steps=budget.train_steps), PGD_AT.format(steps=budget.train_steps)
    x_test, y_test = data.load("digits", "test")
    torch.manual_seed(0)
    snn = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [budget.hidden],
                 "timesteps": 8, **CONVERSION_NEURONS})
    ann = ANNTwin(snn)
    common = dict(batch_size=64, generator=torch.Generator().manual_seed(2))
    rows = []

    def phase(name: str, run_phase, net_of=lambda: ann):
        t0 = time.perf_counter()
        run_phase()
        rows.append(measure(name, net_of(), x_test, y_test, budget, time.perf_counter() - t0))
        print(f"{name}: done ({rows[-1][-1]} s)", flush=True)

    phase("1: robust ANN (TRADES)", lambda: train_ann(ann, trades, x_train, y_train, epochs=budget.ann_epochs,
                                                       lr=2e-3, **common))
    phase("2a: HYDRA mask, 90 %", lambda: prune_ann(ann, trades, "hydra", 0.9, x_train, y_train,
                                                     epochs=budget.prune_epochs, lr=0.01, **common))
    phase("2b: ANN fine-tuned, mask frozen", lambda: train_ann(ann, trades, x_train, y_train,
                                                                epochs=budget.ann_finetune_epochs, lr=2e-3, **common))
    thresholds = calibrate_thresholds(ann, x_train, percentile=99.7, scale=0.3)
    phase("3: converted SNN", lambda: transfer(ann, snn, thresholds), lambda: snn)
    save(snn, out / "converted.pt", meta={"dataset": "digits", "converted_from": "ann"})
    finetune = TrainConfig(dataset="digits", init=str(out / "converted.pt"), method=pgd_at, epochs=budget.snn_epochs,
                           seed=0)
    phase("4: SNN fine-tuned (BPTT, PGD-AT)", lambda: train(finetune, out / "snn", progress=False),
          lambda: snnkit.load(out / "snn" / "model.pt"))

    print(f"\nAccuracy after each phase (digits test split; PGD-{budget.pgd_steps} at eps {EPS} on the first "
          f"{budget.samples} samples):\n")
    print(markdown_table(["phase", "network", "clean", f"PGD eps {EPS}", "zero weights", "phase s"], rows))
    print("\nThresholds of the converted SNN (0.3 x the 99.7th percentile of the ANN's pre-activations):\n")
    print(markdown_table(["spiking layer", "threshold"], [[n, f"{t:.4f}"] for n, t in thresholds.items()]))
    plot(rows, out / "accuracy_per_phase.png")
    print(f"\nwrote {out / 'accuracy_per_phase.png'}, {out / 'converted.pt'}, {out / 'snn' / 'model.pt'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a reduced budget (small network, 1-2 epochs per phase)")
    p.add_argument("--out", required=True, help="output folder (figure, converted and fine-tuned models)")
    return p


if __name__ == "__main__":
    raise SystemExit(run("sparse_conversion", main, parser()))

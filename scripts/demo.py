"""The main job on embedded data, as a user would run it from the command line (``make demo``).

Two spiking MLPs on digits (T=8, direct encoding) are trained with ``snn-train``: a vanilla one, and a robust
sparse one (PGD adversarial training with a 90 % HYDRA mask). Each is exported to NIR and to Loihi 2 fixed point,
deployed on every target (torch, norse, snntorch, loihi-emu, lava) over the whole test split, re-attacked where it
is deployed on Lava (transfer, Square answered by the emulator and re-checked on Lava, adaptive PGD through the
emulator) beside the reference, and reported across targets. The demo ends with the two models side by side:
``OUT/summary.md`` (the numbers of the stages above) and one ``snn-report`` over both models (``OUT/report/``:
the decision table, Pareto and accuracy-vs-eps plots, each model's non-spiking twin on a GPU), with its own small
attack budget (:data:`COMPARE_ATTACK`). Each stage is a real CLI call; the demo stops at the first failure with
that command's exit code.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TARGETS = ("torch", "norse", "snntorch", "loihi-emu", "lava")
COMMON = ["--dataset", "digits", "--model", "mlp", "--timesteps", "8", "--encoder", "direct", "--surrogate",
          "atan:alpha=2", "--epochs", "30", "--seed", "0"]
MODELS = {
    "vanilla": ("vanilla", COMMON),
    "robust-sparse": ("PGD-AT, 90 % HYDRA mask", COMMON + ["--method", "pgd-at:eps=0.1,steps=5", "--sparsity", "0.9",
                                                           "--prune", "hydra"]),
}
COMPARE_TARGETS = "torch,loihi-emu,lava"
COMPARE_ATTACK = ["--attack", "pgd,square", "--eps", "0.05,0.1", "--steps", "5", "--queries", "50", "--threads", "1"]
"""The closing report's attacks: PGD-5 and Square with 50 queries at two eps, on the first --attack-limit samples
(a small budget: the demo's full robustness evaluation is the per-model re-attack on Lava), with one torch thread
(these networks are small; two threads thrash when another job holds a core)."""


def stage(title: str, argv: list[str]) -> dict:
    print(f"\n== {title}\n$ {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    res = subprocess.run([str(BIN / argv[0]), *argv[1:]], stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        print(res.stdout)
        raise SystemExit(res.returncode)
    payload = json.loads(res.stdout)
    print(json.dumps(payload, indent=2)[:2000])
    print(f"({time.perf_counter() - t0:.1f} s)")
    return payload


def run_model(name: str, train_args: list[str], out: Path, limit: int, attack_limit: int) -> dict:
    """Train, export, deploy everywhere, re-attack on Lava and report one model; its row of the summary."""
    folder = out / name
    trained = stage(f"{name}: train", ["snn-train", *train_args, "--out", str(folder / "train"), "--json"])
    checkpoint = str(folder / "train" / "model.pt")
    stage(f"{name}: export to NIR", ["snn-export", checkpoint, "--target", "nir", "-o", str(folder / "nir"), "--json"])
    stage(f"{name}: export for Lava (Loihi 2 fixed point)", ["snn-export", checkpoint, "--target", "lava",
          "-o", str(folder / "lava"), "--json"])
    row = {"trained": trained["test_accuracy"], "train_time_s": trained["train_time_s"],
           "zero_weights": trained.get("weight_sparsity", {}).get("total", 0.0)}
    for target in TARGETS:
        res = stage(f"{name}: deploy on {target}", ["snn-deploy", checkpoint, "--target", target, "--dataset",
                    "digits", "--limit", str(limit), "--json", "--save-output", str(folder / f"deploy-{target}.npz")])
        row[target] = {k: res[k] for k in ("accuracy", "total_spikes", "total_synops", "wall_s")}
        row[target]["n_samples"] = res["n_samples"]
    attack_json = str(folder / "attack-lava.json")
    attacked = stage(f"{name}: re-attack on Lava beside the reference (eps 0.1)",
                     ["snn-attack", checkpoint, "--target", "lava", "--attack", "transfer,square,adaptive",
                      "--eps", "0.1", "--dataset", "digits", "--limit", str(attack_limit), "-o", attack_json,
                      "--json"])
    row["robust"] = {"reference": attacked["reference"]["robust_accuracy"], "lava": attacked["robust_accuracy"],
                     "bit_exact": attacked["recheck"]["outputs_bit_exact"]}
    stage(f"{name}: report across targets", ["snn-report", checkpoint, "--dataset", "digits", "--limit", str(limit),
          "--attack-json", attack_json, "-o", str(folder / "report"), "--json"])
    return row


def compare(out: Path, limit: int, attack_limit: int) -> dict:
    """Both trained models in one ``snn-report`` (``OUT/report/``), labelled by their folder names."""
    checkpoints = [str(out / name / "train" / "model.pt") for name in MODELS]
    return stage("both models: one report, decision table first",
                 ["snn-report", *checkpoints, "--labels", ",".join(MODELS), "--dataset", "digits", "--limit",
                  str(limit), "--targets", COMPARE_TARGETS, *COMPARE_ATTACK, "--attack-limit", str(attack_limit),
                  "-o", str(out / "report"), "--json"])


def side_by_side(rows: dict[str, dict], attack_limit: int) -> str:
    """The two models in one table: accuracy per target, robustness on Lava, activity and sparsity."""
    head = ["model", "zero weights"] + [f"accuracy {t}" for t in TARGETS] + [
        f"robust @0.1 reference / Lava (first {attack_limit})", "Lava == emulator", "synops / sample (Lava)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        lava = r["lava"]
        cells = [MODELS[name][0], f"{100 * r['zero_weights']:.0f} %"]
        cells += [f"{100 * r[t]['accuracy']:.2f} %" for t in TARGETS]
        cells += [f"{100 * r['robust']['reference']:.0f} % / {100 * r['robust']['lava']:.0f} %",
                  "yes" if r["robust"]["bit_exact"] else "NO", f"{lava['total_synops'] / lava['n_samples']:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--limit", type=int, default=360, help="test samples deployed on each target (default: all 360)")
    p.add_argument("--attack-limit", type=int, default=100, help="test samples attacked on Lava (default 100)")
    args = p.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    rows = {name: run_model(name, train_args, out, args.limit, args.attack_limit)
            for name, (_, train_args) in MODELS.items()}
    table = side_by_side(rows, args.attack_limit)
    (out / "summary.md").write_text(table + "\n")
    report = compare(out, args.limit, args.attack_limit)
    print("\n" + table)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s: artefacts in {out}/ (the table: {out}/summary.md; "
          f"both models in one report: {report['files']['report.html']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

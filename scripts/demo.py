"""The main job on embedded data, as a user would run it from the command line (``make demo``).

Stages: train a spiking MLP on digits (T=8, direct encoding) with ``snn-train``; export it to NIR and to Loihi 2
fixed point; deploy it on every target (torch, norse, snntorch, loihi-emu, lava) over the whole test split;
re-attack the Lava-deployed model (transfer, Square answered by the emulator and re-checked on Lava, adaptive PGD
through the emulator) beside the reference; write a report comparing the targets. Each stage is a real CLI call; the demo stops at the first failure with that
command's exit code.
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--limit", type=int, default=360, help="test samples deployed on each target (default: all 360)")
    p.add_argument("--attack-limit", type=int, default=100, help="test samples attacked on Lava (default 100)")
    args = p.parse_args()
    out = Path(args.out)
    model = out / "mlp"
    trained = stage("train a spiking MLP on digits", ["snn-train", "--dataset", "digits", "--model", "mlp",
                    "--timesteps", "8", "--encoder", "direct", "--surrogate", "atan:alpha=2", "--epochs", "30",
                    "--seed", "0", "--out", str(model / "train"), "--json"])
    checkpoint = str(model / "train" / "model.pt")
    stage("export to NIR", ["snn-export", checkpoint, "--target", "nir", "-o", str(model / "nir"), "--json"])
    stage("export for Lava (Loihi 2 fixed point)", ["snn-export", checkpoint, "--target", "lava",
          "-o", str(model / "lava"), "--json"])
    summary = {"trained": trained["test_accuracy"], "train_time_s": trained["train_time_s"]}
    for target in ("torch", "norse", "snntorch", "loihi-emu", "lava"):
        res = stage(f"deploy on {target}", ["snn-deploy", checkpoint, "--target", target, "--dataset", "digits",
                    "--limit", str(args.limit), "--json", "--save-output", str(model / f"deploy-{target}.npz")])
        summary[target] = {k: res[k] for k in ("accuracy", "total_spikes", "total_synops", "wall_s")}
    attack_json = str(out / "attack-lava.json")
    attacked = stage("re-attack the Lava-deployed model beside the reference (eps 0.1)",
                     ["snn-attack", checkpoint, "--target", "lava", "--attack", "transfer,square,adaptive",
                      "--eps", "0.1", "--dataset", "digits", "--limit", str(args.attack_limit), "-o", attack_json,
                      "--json"])
    summary["robust_accuracy_eps0.1"] = {"reference": attacked["reference"]["robust_accuracy"],
                                         "lava": attacked["robust_accuracy"]}
    stage("report across targets", ["snn-report", checkpoint, "--dataset", "digits", "--limit", str(args.limit),
          "--attack-json", attack_json, "-o", str(out / "report"), "--json"])
    print("\nsummary:", json.dumps(summary, indent=2))
    print(f"\ndemo finished: artefacts in {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

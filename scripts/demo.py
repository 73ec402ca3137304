"""The main job on embedded data, as a user would run it from the command line (``make demo``).

Stages: train a spiking MLP on digits (T=8, direct encoding) with ``snn-train``, then run every later stage
that this version provides (export, deploy on each target, attacks, report). Each stage is a real CLI call;
the demo stops at the first failure with that command's exit code.
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
    args = p.parse_args()
    out = Path(args.out)
    model = out / "mlp"
    stage("train a spiking MLP on digits", ["snn-train", "--dataset", "digits", "--model", "mlp", "--timesteps", "8",
          "--encoder", "direct", "--surrogate", "atan:alpha=2", "--epochs", "30", "--seed", "0",
          "--out", str(model), "--json"])
    print(f"\ndemo finished: artefacts in {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

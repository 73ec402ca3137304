"""Attacks on the Loihi target beside the same attack on the float reference: time per attacked sample.

    .venv/bin/python benchmarks/attack_throughput.py                       # digits MLP trained here, 64 samples
    .venv/bin/python benchmarks/attack_throughput.py --out benchmarks/results/attack_throughput.json --readme
    .venv/bin/python benchmarks/attack_throughput.py --model runs/x/model.pt --samples 32 --queries 200

One model, one set of samples, three attacks (Linf, ``--eps``):

- **PGD-50 on the reference**: white-box through the float model's own surrogate gradients;
- **adaptive PGD-50 on loihi-emu**: the same PGD through the emulator's differentiable mode (bit-identical forward
  values, straight-through gradients: ``TargetModule``), judged by the target's own outputs;
- **Square-1000 on loihi-emu**: score-based queries of the exported graph on the target (``TargetScores``).

The reference is an snnkit model: ``--model``, or a digits MLP trained here for ``--train-steps`` Adam steps (so
that a fresh clone measures without any other file). The samples are the first ``--samples`` test samples the
reference classifies correctly. Times are wall clock and CPU time of this process (medians over ``--repeats``
runs of each PGD, one Square run); the goal is the adaptive attack within 3x of the reference's time per sample.
``--readme`` regenerates README.md's attack-throughput section from the JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "attack_throughput.json"
GOAL = 3.0  # the adaptive attack's time per sample, at most this many times the reference's


def reference_model(args):
    """(model, x_test [N, 1, 8, 8], y_test, description)."""
    from snnkit import data
    from snnkit.models.build import build

    x_tr, y_tr = data.load("digits", "train")
    x_te, y_te = data.load("digits", "test")
    if args.model:
        import snnkit

        return snnkit.load(args.model, device="cpu").eval(), x_te, y_te, args.model
    torch.manual_seed(args.seed)
    model = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [128],
                   "timesteps": args.timesteps})
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    g = torch.Generator().manual_seed(args.seed)
    model.train()
    for _ in range(args.train_steps):
        idx = torch.randint(0, x_tr.shape[0], (128,), generator=g)
        loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    desc = f"snnkit digits MLP 64-128-10, T = {args.timesteps}, {args.train_steps} Adam steps (seed {args.seed})"
    return model.eval(), x_te, y_te, desc


def correct_subset(model, x, y, n):
    """The first ``n`` samples ``model`` classifies correctly."""
    with torch.no_grad():
        ok = (model(x).argmax(1) == y).nonzero().squeeze(1)
    idx = ok[:n]
    return x[idx], y[idx]


def timed(fn) -> tuple[object, float, float]:
    """``(fn(), wall seconds, CPU seconds of this process)``."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def attack_row(name: str, side: str, attack, judge, x, y, repeats: int) -> dict:
    """Run ``attack`` ``repeats`` times (after one warm-up on a few samples); robust accuracy judged by ``judge``."""
    attack(x[:4], y[:4])
    runs = [timed(lambda: attack(x, y)) for _ in range(max(repeats, 1))]
    x_adv = runs[-1][0]
    wall = statistics.median(r[1] for r in runs)
    cpu = statistics.median(r[2] for r in runs)
    with torch.no_grad():
        robust = float((judge(x_adv).argmax(1) == y).float().mean())
    n = int(x.shape[0])
    return {"attack": name, "on": side, "samples": n, "runs": len(runs), "wall_s": wall, "cpu_s": cpu,
            "ms_per_sample_wall": 1e3 * wall / n, "ms_per_sample_cpu": 1e3 * cpu / n, "robust_accuracy": robust}


def measure(args) -> dict:
    from snnkit.attack import PGD, Square, TargetModule, TargetScores
    from snnkit.export import to_nir

    model, x_te, y_te, desc = reference_model(args)
    x, y = correct_subset(model, x_te, y_te, args.samples)
    graph = to_nir(model)
    scores = TargetScores("loihi-emu", graph)
    adaptive = TargetModule("loihi-emu", graph, x)
    steps, eps, seed = args.steps, args.eps, args.seed
    rows = [attack_row(f"PGD-{steps}", "reference (float)", PGD(model, eps, steps=steps, seed=seed), model, x, y,
                       args.repeats),
            attack_row(f"adaptive PGD-{steps}", "loihi-emu (differentiable mode)",
                       PGD(adaptive, eps, steps=steps, seed=seed), scores, x, y, args.repeats),
            attack_row(f"Square-{args.queries}", "loihi-emu (queries)",
                       Square(scores, eps, n_queries=args.queries, seed=seed), scores, x, y, 1)]
    with torch.no_grad():
        clean = {"reference": float((model(x).argmax(1) == y).float().mean()),
                 "loihi-emu": float((scores(x).argmax(1) == y).float().mean())}
    ref, adapt = rows[0], rows[1]
    ratio = {"wall": adapt["ms_per_sample_wall"] / ref["ms_per_sample_wall"],
             "cpu": adapt["ms_per_sample_cpu"] / ref["ms_per_sample_cpu"]}
    load = os.getloadavg()
    return {"reference": desc, "eps": eps, "steps": steps, "queries": args.queries, "samples": int(x.shape[0]),
            "clean_accuracy": clean, "rows": rows, "adaptive_over_reference": ratio, "goal": GOAL,
            "goal_met": bool(max(ratio.values()) <= GOAL), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_average": list(load), "device": "cpu",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def report(res: dict) -> list[str]:
    """The printed table (also the README section's body)."""
    lines = [f"Measured {res['date']} on {res['cpu_count']} CPU cores ({res['cpu']}), {res['threads']} torch "
             f"thread(s), torch {res['torch']}, 1-min load average {res['load_average'][0]:.1f} at the end, by "
             f"`benchmarks/attack_throughput.py`. Reference: {res['reference']}; the first {res['samples']} test "
             f"samples it classifies correctly; Linf eps {res['eps']}. Clean accuracy on them: reference "
             f"{res['clean_accuracy']['reference']:.1%}, loihi-emu {res['clean_accuracy']['loihi-emu']:.1%}. "
             "CUDA: unmeasured (no GPU on this machine).", "",
             "| attack | on | samples | ms per sample (wall) | ms per sample (CPU) | x reference (wall / CPU) "
             "| robust accuracy |", "|---|---|---:|---:|---:|---:|---:|"]
    ref = res["rows"][0]
    for r in res["rows"]:
        lines.append(f"| {r['attack']} | {r['on']} | {r['samples']} | {r['ms_per_sample_wall']:.2f} | "
                     f"{r['ms_per_sample_cpu']:.2f} | {r['ms_per_sample_wall'] / ref['ms_per_sample_wall']:.1f} / "
                     f"{r['ms_per_sample_cpu'] / ref['ms_per_sample_cpu']:.1f} | {r['robust_accuracy']:.1%} |")
    ratio = res["adaptive_over_reference"]
    lines += ["", f"- adaptive PGD-{res['steps']} on loihi-emu within {res['goal']:g}x of PGD-{res['steps']} on the "
                  f"reference per sample: {'met' if res['goal_met'] else 'missed'} ({ratio['wall']:.2f}x wall, "
                  f"{ratio['cpu']:.2f}x CPU)"]
    return lines


def write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def write_readme_section(result: Path = RESULT) -> None:
    """README.md's ``attack-throughput`` section, from the saved result."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    begin, end = "<!-- attack-throughput:begin -->", "<!-- attack-throughput:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    body = "\n".join(report(json.loads(result.read_text())))
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(head + begin + "\n" + body + "\n" + end + tail)
    os.replace(tmp, readme)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an snnkit model file (default: train a digits MLP here)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=50, help="PGD iterations, on both sides")
    p.add_argument("--queries", type=int, default=1000, help="Square's query budget per sample")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="runs of each PGD (the median is reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--readme", action="store_true", help="regenerate README.md's section from --out (or the "
                                                         "committed result with --readme-only)")
    p.add_argument("--readme-only", action="store_true", help="only regenerate the README section")
    args = p.parse_args(argv)
    if args.readme_only:
        write_readme_section(Path(args.out) if args.out else RESULT)
        return 0
    torch.set_num_threads(args.threads)
    res = measure(args)
    print("\n".join(report(res)))
    if args.out:
        write_json(Path(args.out), res)
        if args.readme:
            write_readme_section(Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Attack throughput: PGD-20 samples/s on the torch reference, Square queries/s on loihi-emu and on Lava.

    .venv/bin/python benchmarks/attack_throughput.py                       # digits MLP trained here
    .venv/bin/python benchmarks/attack_throughput.py --model runs/x/model.pt --device cuda
    .venv/bin/python benchmarks/attack_throughput.py --skip-lava --queries 500

The reference is an snnkit model (``--model``, or a small MLP trained on ``digits`` for ``--train-steps``).
PGD-20 (Linf, random start) attacks the ``--pgd-samples`` test samples the reference classifies correctly;
its rate counts attacked samples per second of attack time. Square (Linf, ``--queries`` per sample) attacks
``--square-samples`` of them through the exported NIR graph running on each target (``TargetScores``), with the
same seed: the emulator is bit-exact with Lava, so both runs must take the same path (checked, exit code 1 if
not). Queries/s counts evaluated samples per second of target time (encoding and the target's run, Lava's
worker start and compilation included, as an attack sees them); ``attack wall`` adds Square's own work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def reference_model(args):
    """(model, x_test [N, 1, 8, 8], y_test, description)."""
    from snnkit import data
    from snnkit.models.build import build

    x_tr, y_tr = data.load("digits", "train")
    x_te, y_te = data.load("digits", "test")
    if args.model:
        import snnkit

        return snnkit.load(args.model, device=args.device).eval(), x_te, y_te, args.model
    torch.manual_seed(args.seed)
    model = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [128],
                   "timesteps": args.timesteps}).to(args.device)
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    g = torch.Generator().manual_seed(args.seed)
    model.train()
    for _ in range(args.train_steps):
        idx = torch.randint(0, x_tr.shape[0], (128,), generator=g)
        loss = F.cross_entropy(model(x_tr[idx].to(args.device)), y_tr[idx].to(args.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    desc = f"snnkit mlp [128], T={args.timesteps}, digits, {args.train_steps} Adam steps (seed {args.seed})"
    return model.eval(), x_te, y_te, desc


def correct_subset(model, x, y, n, device):
    with torch.no_grad():
        ok = (model(x.to(device)).argmax(1).cpu() == y).nonzero().squeeze(1)
    idx = ok[:n]
    return x[idx], y[idx]


def pgd_throughput(model, x, y, args) -> dict:
    from snnkit.attack import PGD

    attack = PGD(model, args.eps, steps=20)
    xd, yd = x.to(args.device), y.to(args.device)
    attack(xd[:8], yd[:8])  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    x_adv = attack(xd, yd)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        robust = float((model(x_adv).argmax(1) == yd).float().mean())
    return {"samples": int(x.shape[0]), "seconds": seconds, "samples_per_s": x.shape[0] / seconds,
            "robust_accuracy": robust}


def square_on(target_name: str, graph, x, y, args) -> tuple[dict, torch.Tensor]:
    from snnkit.attack import Square, TargetScores

    options = {"device": args.emu_device} if target_name == "loihi-emu" else {}
    scores = TargetScores(target_name, graph, **options)
    with torch.no_grad():
        clean_ok = scores(x).argmax(1) == y
    scores.queries, scores.calls, scores.seconds = 0, 0, 0.0
    attack = Square(scores, args.eps, n_queries=args.queries, seed=args.seed)
    t0 = time.perf_counter()
    x_adv = attack(x, y)
    wall = time.perf_counter() - t0
    row = {"target": target_name, "samples": int(x.shape[0]), "clean_accuracy": float(clean_ok.float().mean()),
           "queries": scores.queries, "target_calls": scores.calls, "target_seconds": scores.seconds,
           "attack_wall_s": wall, "queries_per_s": scores.queries_per_second,
           "mean_queries_per_sample": float(attack.queries.float().mean())}
    with torch.no_grad():
        row["robust_accuracy"] = float(((scores(x_adv).argmax(1) == y) & clean_ok).float().mean())
    return row, x_adv


def write_json(path: str, obj) -> None:
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=p.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, p)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an snnkit model file (default: train a digits MLP here)")
    p.add_argument("--device", default="cpu", help="device of the reference model and PGD: cpu | cuda")
    p.add_argument("--emu-device", default="cpu", help="loihi-emu device: cpu | cuda")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--pgd-samples", type=int, default=256)
    p.add_argument("--square-samples", type=int, default=16)
    p.add_argument("--queries", type=int, default=20, help="Square query budget per sample (clean query included)")
    p.add_argument("--skip-lava", action="store_true", help="only the emulator (Lava costs seconds per query batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from snnkit.export import to_nir

    model, x_te, y_te, desc = reference_model(args)
    x_pgd, y_pgd = correct_subset(model, x_te, y_te, args.pgd_samples, args.device)
    pgd = pgd_throughput(model, x_pgd, y_pgd, args)
    graph = to_nir(model.cpu())
    model.to(args.device)
    x_sq, y_sq = x_pgd[:args.square_samples], y_pgd[:args.square_samples]
    rows, advs = [], {}
    for name in ["loihi-emu"] + ([] if args.skip_lava else ["lava"]):
        row, advs[name] = square_on(name, graph, x_sq, y_sq, args)
        rows.append(row)
    same_path = len(advs) < 2 or torch.equal(advs["loihi-emu"], advs["lava"])

    load = os.getloadavg()
    print(f"reference: {desc}; eps {args.eps} (Linf); torch {torch.__version__}, {args.threads} thread(s); "
          f"{os.cpu_count()} CPU cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)")
    print(f"PGD-20 on the reference ({args.device}): {pgd['samples']} samples in {pgd['seconds']:.2f} s = "
          f"{pgd['samples_per_s']:.1f} samples/s (robust accuracy {pgd['robust_accuracy']:.1%})")
    print(f"Square-{args.queries} on {x_sq.shape[0]} samples through the exported graph:")
    print(f"  {'target':12s}{'queries':>9s}{'calls':>7s}{'target s':>10s}{'queries/s':>11s}{'attack wall s':>15s}"
          f"{'clean':>8s}{'robust':>8s}")
    for r in rows:
        print(f"  {r['target']:12s}{r['queries']:9d}{r['target_calls']:7d}{r['target_seconds']:10.2f}"
              f"{r['queries_per_s']:11.1f}{r['attack_wall_s']:15.2f}{r['clean_accuracy']:8.1%}{r['robust_accuracy']:8.1%}")
    if len(rows) == 2:
        print(f"  loihi-emu / lava queries/s: {rows[0]['queries_per_s'] / rows[1]['queries_per_s']:.0f}x; "
              f"same Square path on both: {same_path}")
    if args.out:
        write_json(args.out, {"reference": desc, "eps": args.eps, "threads": args.threads, "torch": torch.__version__,
                              "cpu_count": os.cpu_count(), "load_average": list(load),
                              "pgd20": {**pgd, "device": args.device}, "square": rows,
                              "square_queries_budget": args.queries, "same_square_path": same_path})
    return 0 if same_path else 1


if __name__ == "__main__":
    sys.exit(main())

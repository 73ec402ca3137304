"""Samples per second of the Lava target and the torch Loihi emulator on the same network and inputs.

Both run the same quantised graph on the same samples; the script checks that every layer's spike raster is
identical, then prints the throughput of each side by side (and writes it as JSON with ``--out``).

    .venv/bin/python benchmarks/lava_vs_emulator.py                    # digits MLP, 64 test samples
    .venv/bin/python benchmarks/lava_vs_emulator.py --net convnet --samples 32
    .venv/bin/python benchmarks/lava_vs_emulator.py --net cnn_sinabs --samples 8 --timesteps 8
    .venv/bin/python benchmarks/lava_vs_emulator.py --model runs/x/model.pt --device cuda

Networks: ``mlp`` / ``convnet`` are snnkit models (digits input, weights from a fixed seed scaled so that every
layer fires; or ``--model MODEL.pt``), ``cnn_sinabs`` is the NIR paper's N-MNIST CNN (Poisson event counts).
Lava's throughput is given for its run proper (``lava run``) and including the worker's start, Lava's
compilation and the file exchange (``lava total``); the emulator's is the median of ``--repeats`` warm runs.
Exit code 1 when the outputs differ.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _snnkit_model(arch: str, seed: int, timesteps: int):
    from snnkit.models.build import build

    cfg = {"arch": arch, "input_shape": [1, 8, 8], "num_classes": 10, "timesteps": timesteps,
           "hidden": [128], "channels": [8, 16], "fc": [64]}
    torch.manual_seed(seed)
    model = build(cfg).eval()
    with torch.no_grad():  # untrained weights, scaled up so that every layer spikes
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(3.0)
    return model


def network(args) -> tuple[object, np.ndarray, str]:
    """(float NIR graph, inputs [B, T, ...], description)."""
    import nir

    from snnkit.deploy.inputs import dataset_input
    from snnkit.export.exporter import to_nir

    if args.net == "cnn_sinabs":
        g = nir.read(REPO / "tests" / "data" / "nir-zoo" / "cnn_sinabs.nir")
        rng = np.random.default_rng(args.seed)
        x = rng.poisson(0.5, (args.samples, args.timesteps, 2, 34, 34)).astype(np.float32)
        return g, x, "cnn_sinabs.nir (NIR paper, N-MNIST CNN), Poisson event counts"
    if args.model:
        import snnkit

        model = snnkit.load(args.model)
        desc = f"{args.model}"
    else:
        model = _snnkit_model(args.net, args.seed, args.timesteps)
        desc = f"snnkit {args.net} (digits shape, seed {args.seed}, untrained weights x3)"
    g = to_nir(model)
    data = dataset_input("digits", g.metadata, tuple(int(s) for s in model.config["input_shape"]),
                         limit=args.samples)
    return g, data.x, desc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", choices=["mlp", "convnet", "cnn_sinabs"], default="mlp")
    p.add_argument("--model", help="an snnkit model file instead of --net")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="emulator device: cpu | cuda")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the emulator (default 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tile", type=int, default=16,
                   help="also time the emulator on the inputs repeated this many times (a larger batch)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--readme", action="store_true",
                   help="regenerate README.md's lava-vs-emulator section from benchmarks/results/lava_vs_emulator_*.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from snnkit.deploy.lava.target import LavaTarget
    from snnkit.deploy.loihi.emulator import LoihiEmulatorTarget
    from snnkit.deploy.loihi.prepare import prepare_graph

    g, x, desc = network(args)
    lg = prepare_graph(g, x)
    n = x.shape[0]
    steps = lg.steps_out(x.shape[1])

    t0 = time.perf_counter()
    lava = LavaTarget().run_quantised(lg, g, x, record=True)
    lava_total = time.perf_counter() - t0

    emu_target = LoihiEmulatorTarget(device=args.device, batch_size=max(n, 1))
    emu = emu_target.run_quantised(lg, g, x, record=True)  # warm-up (and the run that is compared)
    runs = [emu_target.run_quantised(lg, g, x) for _ in range(args.repeats)]
    emu_wall = statistics.median(r.wall_s for r in runs)  # the run's wall clock, and its thread's CPU time
    emu_cpu = statistics.median(r.info["thread_cpu_s"] for r in runs)

    tiled = np.concatenate([x] * max(args.tile, 1))
    big = LoihiEmulatorTarget(device=args.device, batch_size=tiled.shape[0])
    big.run_quantised(lg, g, tiled)
    tiled_wall = statistics.median(big.run_quantised(lg, g, tiled).wall_s for _ in range(args.repeats))

    identical = all(np.array_equal(lava.records[k], emu.records[k]) for k in lava.records)
    identical = identical and np.array_equal(lava.outputs, emu.outputs)
    res = {
        "network": desc, "layers": [f"{layer.name}:{layer.kind}{list(layer.shape)}" for layer in lg.layers],
        "samples": n, "timesteps": int(x.shape[1]), "steps_per_sample": steps, "lava_processes": lava.info["processes"],
        "identical_rasters": bool(identical), "spikes": lava.total_spikes,
        "lava_run_s": lava.wall_s, "lava_total_s": lava_total, "emulator_s": emu_wall,
        "lava_samples_per_s": n / lava.wall_s, "lava_total_samples_per_s": n / lava_total,
        "emulator_samples_per_s": n / emu_wall, "speedup_vs_lava_run": lava.wall_s / emu_wall,
        "emulator_cpu_s": emu_cpu, "emulator_samples_per_cpu_s": n / emu_cpu,
        "speedup_vs_lava_total": lava_total / emu_wall, "emulator_device": args.device,
        "emulator_tiled_samples": int(tiled.shape[0]), "emulator_tiled_samples_per_s": tiled.shape[0] / tiled_wall,
        "emulator_threads": args.threads, "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    print(f"network: {desc}")
    print(f"  {n} samples x {x.shape[1]} steps (+{lg.delay} pipeline) = {n * steps} Lava steps, "
          f"{lava.info['processes']} Lava processes, {lava.total_spikes} spikes")
    print(f"  rasters of all {len(lg.layers)} layers identical: {identical}")
    print(f"  {'':22s}{'seconds':>10s}{'samples/s':>12s}")
    print(f"  {'lava (run)':22s}{lava.wall_s:10.3f}{res['lava_samples_per_s']:12.1f}")
    print(f"  {'lava (total)':22s}{lava_total:10.3f}{res['lava_total_samples_per_s']:12.1f}")
    print(f"  {'loihi-emu (' + args.device + ')':22s}{emu_wall:10.4f}{res['emulator_samples_per_s']:12.1f}")
    print(f"  {'loihi-emu, CPU time':22s}{emu_cpu:10.4f}{res['emulator_samples_per_cpu_s']:12.1f}"
          "   (the same run, CPU time of its thread)")
    print(f"  {'loihi-emu, batch ' + str(tiled.shape[0]):22s}{tiled_wall:10.4f}"
          f"{res['emulator_tiled_samples_per_s']:12.1f}")
    print(f"  speed-up: {res['speedup_vs_lava_run']:.0f}x over Lava's run, "
          f"{res['speedup_vs_lava_total']:.0f}x over its total")
    if args.out:
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=2))
        os.replace(tmp, args.out)
    if args.readme:
        write_readme_section()
    return 0 if identical else 1


SPEEDUP_GOAL = 100  # the emulator at least this many times Lava's run, on every network


def write_readme_section() -> None:
    """The README table, from every saved result (one row per network), with the goals marked met or missed:
    at least ``SPEEDUP_GOAL`` x Lava's run, and samples/s at the large batch not below the small batch's."""
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "benchmarks" / "results").glob("lava_vs_emulator_*.json"))
    results = [json.loads(f.read_text()) for f in files]
    dates = sorted(r.get("date", "?") for r in results)
    rows = [f"Measured {dates[0]} to {dates[-1]} on {results[0].get('cpu_count', '?')} CPU cores shared with other "
            f"jobs (1-min load in the last column), emulator on the CPU with {results[0]['emulator_threads']} torch "
            f"thread, torch {results[0]['torch']}; wall clock, medians; CUDA: unmeasured (no GPU on this machine).",
            "",
            "| network | samples x steps | Lava processes | identical rasters | Lava samples/s (run / incl. start) "
            "| loihi-emu samples/s, small -> large batch | loihi-emu samples per CPU-second (small batch) "
            "| speed-up (run / incl. start) | 1-min load |",
            "|---|---|---|---|---|---|---|---|---|"]
    goals = []
    for r in results:
        large = r["emulator_tiled_samples_per_s"]
        rows.append(f"| {r['network']} | {r['samples']} x {r['timesteps']} | {r['lava_processes']} | "
                    f"{r['identical_rasters']} | {r['lava_samples_per_s']:.1f} / "
                    f"{r['lava_total_samples_per_s']:.1f} | "
                    f"{r['emulator_samples_per_s']:.0f} ({r['samples']}) -> {large:.0f} "
                    f"({r['emulator_tiled_samples']}) | {r['emulator_samples_per_cpu_s']:.0f} | "
                    f"{r['speedup_vs_lava_run']:.0f}x / {r['speedup_vs_lava_total']:.0f}x | "
                    f"{r['load_average'][0]:.1f} |")
        fast = r["speedup_vs_lava_run"] >= SPEEDUP_GOAL
        flat = large >= r["emulator_samples_per_s"]
        goals.append(f"- {r['network'].split(' (')[0]}: at least {SPEEDUP_GOAL}x Lava's run: "
                     f"{'met' if fast else 'missed'} ({r['speedup_vs_lava_run']:.0f}x); samples/s not falling with "
                     f"the batch: {'met' if flat else 'missed'} ({large / r['emulator_samples_per_s']:.2f}x at "
                     f"{r['emulator_tiled_samples']} samples)")
    readme = root / "README.md"
    text = readme.read_text()
    begin, end = "<!-- lava-vs-emulator:begin -->", "<!-- lava-vs-emulator:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(head + begin + "\n" + "\n".join(rows + [""] + goals) + "\n" + end + tail)
    os.replace(tmp, readme)


if __name__ == "__main__":
    sys.exit(main())

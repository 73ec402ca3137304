"""Deployed robustness on digits: which robust training keeps its robustness on Loihi 2, and at what energy.

The models of ``benchmarks/robustness`` (trained there with the same seeds and reused: vanilla, PGD-AT, TRADES,
MPD-SGR, TMI, MPD-SGR + PGD-AT, the robust ANN-to-SNN conversion dense / 90 % / 99 % sparse) and a HYDRA 90 %
+ PGD-AT model are exported to NIR and run twice, side by side on the same test samples:

- **reference**: the float model, attacked white-box (PGD-20 and APGD-CE through its own surrogate) and with the
  attacks the target gets;
- **Loihi 2** (``loihi-emu``, bit-identical to Lava's fixed-point simulation): transfer from the reference (PGD
  crafted on the model, its non-spiking twin and its rate view), the surrogate ensemble as a transfer attack (at
  the largest eps), Square on the target and adaptive PGD through the emulator's differentiable mode.

Robust accuracy is the per-sample worst case over a side's attacks at each eps. On the first seed the largest
eps is run with ``--target lava`` instead: the emulator answers the queries, and the clean inputs and every
final adversarial example are re-run on Lava, whose verdicts are reported and compared bit for bit.

Per model: clean and robust accuracy on both sides, spikes / synaptic ops / neuron updates per sample on Loihi,
energy per sample under every energy model with figures (``snnkit.energy``), and the MACs of the non-spiking twin
(one dense forward pass: what an ANN of the same weights costs on a conventional processor).

Every model is also fine-tuned for Loihi (``+ QAT``: ``snn-train --init MODEL.pt --qat loihi`` with the model's
own ``--method``, masks kept; regularisers do not compose with QAT and are left out of its fine-tuning) and
measured the same way.

Each (model, seed) is one job (``--jobs`` run side by side, one thread each); its records are cached in
``WORK/deployed/`` under the budget and the model file's digest, so an interrupted run resumes where it stopped.

Writes ``results.json`` here and regenerates the README section between ``<!-- deployed-robustness:begin -->``
and ``<!-- deployed-robustness:end -->`` (``--quick``: a reduced run into ``--out``, for the tests).

    python benchmarks/deployed_robustness/run.py [--seeds 0 1 2] [--only vanilla converted-90] [--jobs 2] [--no-qat]
    python benchmarks/deployed_robustness/run.py --quick --out DIR     # what the tests run
    python benchmarks/deployed_robustness/run.py --table     # the README section from the committed results.json
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from snnkit import data, load
from snnkit.attack import APGD, PGD, evaluate
from snnkit.attack.reattack import reattack
from snnkit.attack.registry import Settings
from snnkit.deploy.base import REFERENCE, get_target
from snnkit.deploy.inputs import encode
from snnkit.energy import builtin_models, energy_of
from snnkit.export import to_nir
from snnkit.report.metrics import static_metrics
from snnkit.report.writers import markdown_table
from snnkit.train import TrainConfig, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _robustness_benchmark():
    """``benchmarks/robustness/run.py`` as a module: its model recipes and trained-model cache are reused."""
    spec = importlib.util.spec_from_file_location("robustness_run", ROOT / "benchmarks" / "robustness" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROB = _robustness_benchmark()
FROM_ROBUSTNESS = ["vanilla", "pgd-at", "trades", "mpd-sgr", "tmi", "mpd-sgr+at", "converted-dense", "converted-90",
                   "converted-99"]
EXTRA = {"hydra-90+at": ("HYDRA 90 % + PGD-AT", {"method": ROB.PGD_AT, "sparsity": 0.9, "prune": "hydra",
                                                  "prune_epochs": 8})}
LABELS = {**{n: ROB.MODELS[n][0] for n in FROM_ROBUSTNESS}, **{n: v[0] for n, v in EXTRA.items()}}
LOIHI_ENERGY = "loihi1-davies2018"  # the table's energy column (every built-in model is in results.json)
TWIN_ENERGY = "horowitz45-fp32"  # the non-spiking twin's MACs on a conventional processor
QAT_EPOCHS, QAT_LR = 5, 1e-4  # benchmarks/loihi_qat.py's fine-tuning


@dataclass(frozen=True)
class Budget:
    """How hard and on how much each model is attacked."""

    eps: tuple[float, ...] = (0.03, 0.06, 0.1)
    samples: int | None = 200  # the first N test digits (None: all 360)
    pgd_steps: int = 20  # white-box PGD on the reference
    apgd_steps: int = 50
    target_steps: int = 20  # PGD crafting on each transfer source, and PGD through the differentiable emulator
    square_queries: int = 300
    epochs: int | None = None  # None: the robustness benchmark's own training


FULL = Budget()
QUICK = Budget(eps=(0.1,), samples=24, pgd_steps=3, apgd_steps=3, target_steps=2, square_queries=10, epochs=1)


def trained(name: str, seed: int, work: Path, budget: Budget) -> Path:
    """The model's folder: the robustness benchmark's (reused when unchanged), or trained here."""
    if budget.epochs is None and name in ROB.MODELS:
        return ROB.trained(name, seed, work, retrain=False)[0]
    out = work / (f"{name}-seed{seed}" + ("-quick" if budget.epochs else ""))
    if (out / "model.pt").is_file():
        return out
    cfg, conv = base_config(name, seed)
    if budget.epochs:
        cfg = replace(cfg, epochs=budget.epochs, prune_epochs=min(cfg.prune_epochs, budget.epochs))
        conv = conv and replace(conv, ann_epochs=budget.epochs, prune_epochs=budget.epochs,
                                ann_finetune_epochs=budget.epochs)
    if conv is None:
        train(cfg, out, progress=False)
    else:
        from snnkit.train.conversion import convert_pipeline

        convert_pipeline(cfg, conv, out, progress=False)
    return out


def base_config(name: str, seed: int):
    """The training recipe of model ``name`` (``TrainConfig`` and the conversion's config, or None)."""
    if name in ROB.MODELS:
        return ROB.train_config(name, seed)
    return TrainConfig(dataset="digits", model={"arch": "mlp", "hidden": [512], "timesteps": 8},
                       epochs=ROB.EPOCHS, batch_size=64, lr=2e-3, seed=seed, **EXTRA[name][1]), None


def qat_tuned(name: str, seed: int, folder: Path, budget: Budget) -> Path:
    """``folder``'s model fine-tuned through the Loihi 2 forward pass (``--qat loihi``) with its own ``--method``
    (regularisers do not compose with QAT); masks stay as they are."""
    out = folder.parent / f"{folder.name}+qat"
    if (out / "model.pt").is_file():
        return out
    method = base_config(name, seed)[0].method
    cfg = TrainConfig(dataset="digits", init=str(folder / "model.pt"), qat="loihi", method=method,
                      epochs=budget.epochs or QAT_EPOCHS, lr=QAT_LR, batch_size=64, seed=seed)
    train(cfg, out, progress=False)
    return out


def _worst(*correct: np.ndarray) -> float:
    """Fraction of samples right under every attack (the per-sample worst case)."""
    return float(np.logical_and.reduce([c.astype(bool) for c in correct]).mean())


def evaluate_model(folder: Path, x: torch.Tensor, y: torch.Tensor, budget: Budget, lava_check: bool) -> dict:
    """Everything the table shows for one trained model (see the module docstring)."""
    model = load(folder / "model.pt")
    graph = to_nir(model)
    out: dict = {"eps": {}, "lava": None}
    emu = get_target("loihi-emu")
    for eps in budget.eps:
        white = evaluate(model, x, y, {f"PGD-{budget.pgd_steps}": PGD(model, eps, steps=budget.pgd_steps),
                                       f"APGD-CE-{budget.apgd_steps}": APGD(model, eps, steps=budget.apgd_steps)},
                         progress=False)
        names = ["transfer", "square", "adaptive"] + (["ensemble"] if eps == max(budget.eps) else [])
        settings = Settings(eps=eps, queries=budget.square_queries, progress=False, steps=budget.target_steps)
        on_lava = lava_check and eps == max(budget.eps)
        run = reattack(model, graph, get_target("lava") if on_lava else emu, names, x, y, settings)
        arr = run.arrays
        ref_correct = [arr["reference_correct"][i] for i in range(len(arr["reference_attacks"]))]
        ref_correct += [r.correct.numpy() for r in white.results.values()]
        tgt_correct = [arr["target_correct"][i] for i in range(len(arr["target_attacks"]))]
        out["eps"][str(eps)] = {
            "reference": {"clean": float(arr["reference_clean_correct"].mean()), "worst": _worst(*ref_correct),
                          "attacks": {**{a["name"]: a["robust_accuracy"] for a in run.summary["reference"]["attacks"]},
                                      **{n: r.robust_accuracy for n, r in white.results.items()}}},
            "loihi": {"clean": float(arr["target_clean_correct"].mean()), "worst": _worst(*tgt_correct),
                      "attacks": {a["name"]: a["robust_accuracy"] for a in run.summary["attacks"]}},
            "seconds": run.summary["wall_s"] + sum(r.seconds for r in white.results.values()),
        }
        if on_lava:
            check = run.summary["recheck"]
            out["lava"] = {"eps": eps, "samples": check["samples"], "outputs_bit_exact": check["outputs_bit_exact"],
                           "verdicts_agree": check["verdicts_agree"], "lava_wall_s": check["target_wall_s"]}
    encoded = encode(x.numpy(), dict(graph.metadata))
    deployed = emu.run(graph, encoded)
    n = int(x.shape[0])
    out["per_sample"] = {k: v / n for k, v in deployed.totals().items()}
    out["energy_per_sample_j"] = {m.name: energy_of(deployed, m).per_sample_j for m in builtin_models().values()
                                  if m.available}
    out["ann_twin_macs"] = int(static_metrics(graph).dense_ops_per_step)
    out["reference_accuracy_full_t"] = float((get_target(REFERENCE, device="cpu").run(graph, encoded)
                                              .predictions(encoded.shape[1]) == y.numpy()).mean())
    return out


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(per_seed: dict[str, dict], budget: Budget) -> dict:
    """Mean and standard deviation over seeds."""
    recs = list(per_seed.values())
    out: dict = {"eps": {}}
    for eps in map(str, budget.eps):
        out["eps"][eps] = {side: {k: _ms([r["eps"][eps][side][k] for r in recs]) for k in ("clean", "worst")}
                           for side in ("reference", "loihi")}
    out["per_sample"] = {k: _ms([r["per_sample"][k] for r in recs]) for k in recs[0]["per_sample"]}
    out["energy_per_sample_j"] = {k: _ms([r["energy_per_sample_j"][k] for r in recs])
                                  for k in recs[0]["energy_per_sample_j"]}
    out["ann_twin_macs"] = recs[0]["ann_twin_macs"]
    out["ann_twin_energy_j"] = out["ann_twin_macs"] * builtin_models()[TWIN_ENERGY].pj("mac") * 1e-12
    return out


def _pct(ms: tuple[float, float], n: int) -> str:
    return f"{100 * ms[0]:.1f}" + (f" ± {100 * ms[1]:.1f}" if n > 1 else "")


def table(results: dict) -> str:
    cfg = results["config"]
    n, eps = len(cfg["seeds"]), [str(e) for e in cfg["budget"]["eps"]]  # n: seeds asked for
    top = eps[-1]
    head = ["model", "clean ref", "clean Loihi"] + [f"robust {e} ref / Loihi" for e in eps] + [
        f"Loihi cost at {top}", "synops / sample", "spikes / sample", "energy / sample (Loihi 1)", "ANN twin MACs",
        "ANN twin energy (fp32, 45 nm)"]
    rows = []
    for name, rec in results["models"].items():
        s = rec["summary"]
        e = s["eps"]
        n = len(rec["per_seed"])
        label = rec["label"] + ("" if n == len(cfg["seeds"]) else f" (seed {', '.join(rec['per_seed'])} only)")
        row = [label, _pct(e[eps[0]]["reference"]["clean"], n), _pct(e[eps[0]]["loihi"]["clean"], n)]
        row += [f"{_pct(e[k]['reference']['worst'], n)} / {_pct(e[k]['loihi']['worst'], n)}" for k in eps]
        row.append(f"{100 * (e[top]['loihi']['worst'][0] - e[top]['reference']['worst'][0]):+.1f}")
        row += [f"{s['per_sample']['synops'][0]:,.0f}", f"{s['per_sample']['spikes'][0]:,.0f}"]
        row.append(f"{1e9 * s['energy_per_sample_j'][LOIHI_ENERGY][0]:.2f} nJ")
        row.append(f"{s['ann_twin_macs']:,}")
        row.append(f"{1e9 * s['ann_twin_energy_j']:.2f} nJ")
        rows.append(row)
    lava = [f"{rec['label']} (eps {r['lava']['eps']}, {r['lava']['samples']} inputs): "
            f"{'bit-exact' if r['lava']['outputs_bit_exact'] else 'NOT bit-exact'}"
            for rec in results["models"].values() for r in rec["per_seed"].values() if r.get("lava")]
    b = cfg["budget"]
    intro = (f"Digits, first {cfg['n_test']} test samples, MLP 64-512-10 (T = 8), seeds {', '.join(map(str, cfg['seeds']))}"
             + (" (mean ± std)" if n > 1 else "") + "; accuracy in %, Linf eps on pixels in [0, 1]. *robust*: the "
             f"per-sample worst case over a side's attacks. Reference: PGD-{b['pgd_steps']}, APGD-CE-{b['apgd_steps']} "
             f"(white-box) and the target's attacks; Loihi (loihi-emu, bit-exact with Lava): transfer (PGD-"
             f"{b['target_steps']} on the model, its twin and its rate view), Square-{b['square_queries']}, adaptive "
             f"PGD-{b['target_steps']} through the differentiable emulator, and the surrogate ensemble at eps {top}. "
             f"*Loihi cost*: Loihi's robust accuracy minus the reference's at eps {top}. Energy per sample: Loihi 1 "
             f"figures of Davies et al. 2018 for the SNN on Loihi, Horowitz 2014 (45 nm, fp32 MAC) for the twin; every "
             f"built-in energy model is in results.json. *+ QAT*: the model fine-tuned for {cfg['qat']['epochs']} epochs "
             f"through the Loihi 2 forward pass (`--qat loihi --lr {cfg['qat']['lr']:g}`, its own `--method`). "
             f"Measured {cfg['date']} on {cfg['machine']}: "
             + (f"assembled from the records of earlier runs (`--cached-only`), " if cfg.get("cached_only") else
                f"{cfg['wall_time_s'] / 60:.0f} min wall time with {cfg['jobs']} jobs side by side, ")
             + f"{cfg['core_time_s'] / 60:.0f} core-minutes of training, QAT and evaluation as each record measured "
             f"them (models of `benchmarks/robustness` reused as trained there"
             + (f"; {cfg['reused_records']} records reused from an interrupted run" if cfg["reused_records"] else "")
             + "; `python benchmarks/deployed_robustness/run.py --jobs 2`).")
    parts = [intro, "", markdown_table(head, rows)]
    if lava:
        parts += ["", "Re-checked on Lava (first seed, largest eps; clean inputs and every final adversarial example): "
                  + "; ".join(lava) + "."]
    notes = HERE / "notes.md"
    if notes.is_file() and not cfg["quick"]:
        parts += ["", notes.read_text().strip()]
    return "\n".join(parts)


@dataclass(frozen=True)
class Job:
    """One model and seed: trained (or reused), evaluated, fine-tuned with QAT and evaluated again."""

    name: str
    seed: int
    qat: bool
    lava_check: bool
    work: Path
    budget: Budget
    threads: int = 1
    cached_only: bool = False  # use the records already measured; measure nothing


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_job(job: Job) -> list[tuple[str, dict]]:
    """``[(variant, record)]`` for the job's model and, with ``job.qat``, its QAT fine-tuning; records come from
    ``WORK/deployed/`` when the budget and the model file are unchanged."""
    torch.set_num_threads(job.threads)
    x, y = data.load("digits", "test", limit=job.budget.samples)
    t0 = time.perf_counter()
    folder = job.work / (f"{job.name}-seed{job.seed}" + ("-quick" if job.budget.epochs else "")) if job.cached_only \
        else trained(job.name, job.seed, job.work, job.budget)
    out = []
    for variant in [job.name] + ([f"{job.name}+qat"] if job.qat else []):
        t1 = time.perf_counter()
        if job.cached_only:
            model_dir = folder.parent / f"{folder.name}+qat" if variant.endswith("+qat") else folder
            if not (model_dir / "model.pt").is_file():
                continue
        else:
            model_dir = qat_tuned(job.name, job.seed, folder, job.budget) if variant.endswith("+qat") else folder
        prepared = time.perf_counter() - (t0 if variant == job.name else t1)
        lava = job.lava_check and variant == job.name
        key = json.loads(json.dumps({"budget": asdict(job.budget), "lava_check": lava,
                                     "model": _digest(model_dir / "model.pt")}))
        cache = job.work / "deployed" / f"{variant}-seed{job.seed}{'-quick' if job.budget.epochs else ''}.json"
        cached = json.loads(cache.read_text()) if cache.is_file() else None
        if cached and cached["key"] == key:
            rec = dict(cached["record"], reused=True)
        elif job.cached_only:
            continue
        else:
            t2 = time.perf_counter()
            rec = evaluate_model(model_dir, x, y, job.budget, lava)
            rec["seconds"] = {"train": prepared, "evaluate": time.perf_counter() - t2}
            cache.parent.mkdir(parents=True, exist_ok=True)
            ROB._atomic_text(cache, json.dumps({"key": key, "record": rec}, indent=1))
        top = rec["eps"][str(max(job.budget.eps))]
        took = "reused" if rec.get("reused") else f"{sum(rec['seconds'].values()):.0f} s"
        print(f"{variant} seed {job.seed}: clean {top['reference']['clean']:.3f} / {top['loihi']['clean']:.3f}, "
              f"robust@{max(job.budget.eps)} {top['reference']['worst']:.3f} / {top['loihi']['worst']:.3f} ({took})",
              flush=True)
        out.append((variant, rec))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", choices=list(LABELS), help="run only these models (the others' results "
                   "in the output's results.json are kept)")
    p.add_argument("--work", default=str(ROOT / "runs" / "robustness"), help="folder of trained models (shared "
                   "with benchmarks/robustness) and of the cached records (WORK/deployed)")
    p.add_argument("--quick", action="store_true", help="a reduced run (1-epoch models, 24 samples, one eps, tiny "
                   "attack budgets) for the tests; needs --out")
    p.add_argument("--out", help="where results.json and RESULTS.md go (default: here and the README)")
    p.add_argument("--no-lava", action="store_true", help="skip the Lava re-check on the first seed")
    p.add_argument("--no-qat", action="store_true", help="skip the QAT fine-tuned variants")
    p.add_argument("--cached-only", action="store_true", help="build the results from the records already measured "
                   "in WORK/deployed (an interrupted run's); models or seeds without one are left out and say so")
    p.add_argument("--jobs", type=int, default=1, help="models evaluated side by side (one thread each)")
    p.add_argument("--table", action="store_true", help="only regenerate the README section from the committed "
                   "results.json")
    args = p.parse_args(argv)
    if args.table:
        write_readme(table(json.loads((HERE / "results.json").read_text())))
        return 0
    if args.quick and not args.out:
        p.error("--quick needs --out (the committed results are full runs)")
    budget = QUICK if args.quick else FULL
    work = Path(args.work)
    names = args.only or list(LABELS)
    out_dir = Path(args.out) if args.out else HERE
    previous = json.loads((out_dir / "results.json").read_text()) if args.only and (out_dir / "results.json").is_file() \
        else {"models": {}, "config": {}}
    jobs = [Job(name, seed, not args.no_qat, i == 0 and not args.no_lava, work, budget, cached_only=args.cached_only)
            for name in names for i, seed in enumerate(args.seeds)]
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(run_job, jobs))
    else:
        done = [run_job(job) for job in jobs]
    per_variant: dict[str, dict] = {}
    for job, records in zip(jobs, done):
        for variant, rec in records:
            per_variant.setdefault(variant, {})[str(job.seed)] = rec
    models = dict(previous["models"])  # with --only, the other models' results are kept
    models.update({v: {"label": label(v), "per_seed": recs, "summary": summarise(recs, budget)}
                   for v, recs in per_variant.items()})
    order = [v for n in LABELS for v in (n, f"{n}+qat")]
    models = {k: models[k] for k in order if k in models}
    records = [r for m in models.values() for r in m["per_seed"].values()]
    results = {"config": {"seeds": args.seeds, "budget": asdict(budget), "n_test": int(budget.samples or 360),
                          "quick": args.quick, "date": time.strftime("%Y-%m-%d"), "jobs": args.jobs,
                          "cached_only": args.cached_only,
                          "qat": {"epochs": budget.epochs or QAT_EPOCHS, "lr": QAT_LR},
                          "wall_time_s": time.perf_counter() - t0 + previous["config"].get("wall_time_s", 0.0),
                          "core_time_s": sum(sum(r["seconds"].values()) for r in records),
                          "reused_records": sum(bool(r.get("reused")) for r in records),
                          "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                                     "one thread per job"},
               "models": models}
    out_dir.mkdir(parents=True, exist_ok=True)
    ROB._atomic_text(out_dir / "results.json", json.dumps(results, indent=2))
    text = table(results)
    if args.out:
        ROB._atomic_text(out_dir / "RESULTS.md", text + "\n")
    else:
        write_readme(text)
    print(text)
    return 0


def label(variant: str) -> str:
    return LABELS[variant.removesuffix("+qat")] + (" + QAT" if variant.endswith("+qat") else "")


def write_readme(text: str) -> None:
    begin, end = "<!-- deployed-robustness:begin -->", "<!-- deployed-robustness:end -->"
    readme = ROOT / "README.md"
    body = readme.read_text()
    if begin not in body or end not in body:
        sys.exit(f"{readme}: no {begin} ... {end} section to regenerate")
    head, rest = body.split(begin, 1)
    _, tail = rest.split(end, 1)
    ROB._atomic_text(readme, f"{head}{begin}\n{text}\n{end}{tail}")


if __name__ == "__main__":
    raise SystemExit(main())

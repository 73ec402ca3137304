"""Robustness benchmark on digits: robust training methods against one attack protocol.

Every model is the digits MLP (64-512-10, T = 8, direct input) trained with the same seeds, epochs, batch
size and learning rate; only the method differs:

vanilla, PGD-AT, TRADES, MPD-SGR, TMI, MPD-SGR + PGD-AT, and robust ANN -> SNN conversion at 90 % and 99 %
sparsity (HYDRA masks; IF neurons with reset by subtraction, triangle surrogate), plus three controls: PGD-AT with
the converted models' neurons (dense, trained from scratch), the conversion pipeline without pruning, and a
vanilla model with the latency (time-to-first-spike) code for the gradient-sparsity comparison of seed 000.

Each is attacked on the whole test split (360 samples, pixels in [0, 1]) with FGSM, PGD-20 and APGD-CE (100
steps) at eps 0.03, 0.06 and 0.1 (Linf), BPTT through the model's own surrogate, plus an ensemble of PGD-20
runs (through the triangle, rectangular, straight-through, fast-sigmoid and the model's own surrogate, and a
transfer from the model's rate twin, ``snnkit.train.conversion.RateTwin``; the per-sample worst case, judged on
the unchanged model) and the black-box Square attack (1,000 queries) at eps 0.1 as gradient-masking checks.
``worst@0.1`` is the per-sample worst case over every attack at 0.1.

Writes ``results.json`` beside this file and regenerates the table between ``<!-- robustness:begin -->`` and
``<!-- robustness:end -->`` in the repository's README.md (``RESULTS.md`` here when README.md has no such
section). Trained models go to ``--work`` (default ``runs/robustness``) and are reused when their training
config is unchanged (``--retrain`` forces training).

    python benchmarks/robustness/run.py [--seeds 0 1 2] [--only vanilla mpd-sgr] [--retrain] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from snnkit import data, load
from snnkit.attack import APGD, FGSM, PGD, Square, SurrogateEnsemble, evaluate
from snnkit.train import TrainConfig, train
from snnkit.train.conversion import ConversionConfig, RateTwin, convert_pipeline
from snnkit.report.writers import markdown_table
from snnkit.train.regularizers import MPDSGR

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EPS = (0.03, 0.06, 0.1)
EPOCHS = 30
TRAIN_EPS = 0.1  # the adversarial training radius (the largest evaluation eps)
PGD_AT = f"pgd-at:eps={TRAIN_EPS},steps=5"
TRADES = f"trades:beta=6,eps={TRAIN_EPS},steps=5,alpha=0.025"
MPD = "mpd-sgr:eta=0.5"
CONVERT_SNN = {"neuron": "if", "reset": "subtract", "surrogate": "triangle:gamma=1"}
ENSEMBLE = ("triangle:gamma=1", "rectangular:width=1", "straight_through", "fast_sigmoid:k=25")

# name -> (label, TrainConfig overrides, conversion config or None)
MODELS: dict[str, tuple[str, dict, dict | None]] = {
    "vanilla": ("vanilla (BPTT, atan)", {}, None),
    "pgd-at": ("PGD-AT", {"method": PGD_AT}, None),
    "trades": ("TRADES (beta 6)", {"method": TRADES}, None),
    "mpd-sgr": ("MPD-SGR", {"regs": [MPD]}, None),
    "tmi": ("TMI (lambda 0.05)", {"regs": ["tmi:lambda=0.05"]}, None),
    "mpd-sgr+at": ("MPD-SGR + PGD-AT", {"method": PGD_AT, "regs": [MPD]}, None),
    "pgd-at-if": ("PGD-AT, IF neurons (control)", {"method": PGD_AT, "model": CONVERT_SNN}, None),
    "converted-90": ("converted, 90 % sparse", {"method": PGD_AT, "model": CONVERT_SNN},
                     {"sparsity": 0.9, "ann_method": TRADES}),
    "converted-99": ("converted, 99 % sparse", {"method": PGD_AT, "model": CONVERT_SNN},
                     {"sparsity": 0.99, "ann_method": TRADES}),
    "converted-dense": ("converted, dense (control)", {"method": PGD_AT, "model": CONVERT_SNN},
                        {"sparsity": 0.0, "ann_method": TRADES}),
    "vanilla-latency": ("vanilla, latency code", {"model": {"encoder": {"name": "latency"}}}, None),
}


def train_config(name: str, seed: int) -> tuple[TrainConfig, ConversionConfig | None]:
    _, overrides, conversion = MODELS[name]
    model = {"arch": "mlp", "hidden": [512], "timesteps": 8, **overrides.get("model", {})}
    cfg = TrainConfig(dataset="digits", model=model, epochs=EPOCHS, batch_size=64, lr=2e-3, seed=seed,
                      **{k: v for k, v in overrides.items() if k != "model"})
    conv = None
    if conversion is not None:
        conv = ConversionConfig(ann_epochs=EPOCHS, prune="hydra", prune_epochs=10, ann_finetune_epochs=10,
                                ann_lr=2e-3, **conversion)
    return cfg, conv


def trained(name: str, seed: int, work: Path, retrain: bool) -> tuple[Path, dict]:
    """Train (or reuse) one model; returns its folder and metrics (with the conversion record, if any)."""
    cfg, conv = train_config(name, seed)
    out = work / f"{name}-seed{seed}"
    stamp = {"train": asdict(cfg), "conversion": asdict(conv) if conv else None}
    stamp_file = out / "benchmark-config.json"
    if not retrain and (out / "model.pt").is_file() and stamp_file.is_file() \
            and json.loads(stamp_file.read_text()) == json.loads(json.dumps(stamp)):
        metrics = json.loads((out / "metrics.json").read_text())
        if conv is not None:
            metrics["conversion"] = json.loads((out / "conversion.json").read_text())
        return out, metrics
    if conv is None:
        metrics = train(cfg, out, progress=False)
    else:
        metrics = convert_pipeline(cfg, conv, out, progress=False)
    stamp_file.write_text(json.dumps(stamp, indent=2))
    return out, metrics


def attacks(model, eps: float) -> dict:
    out = {f"FGSM@{eps}": FGSM(model, eps), f"PGD-20@{eps}": PGD(model, eps, steps=20),
           f"APGD-CE@{eps}": APGD(model, eps, loss="ce", steps=100)}
    if eps == max(EPS):
        out[f"Ensemble-PGD-20@{eps}"] = SurrogateEnsemble(model, lambda m: PGD(m, eps, steps=20), ENSEMBLE,
                                                          {"rate twin": RateTwin(model)})
        out[f"Square-1000@{eps}"] = Square(model, eps, n_queries=1000)
    return out


def hidden_statistics(model, x: torch.Tensor) -> dict:
    """Mean MPD overlap (``Omega``, gamma = each layer's surrogate support) and mean firing rate of the hidden
    spiking layers on ``x``."""
    with torch.no_grad():
        run = model.run(x)
        overlaps = MPDSGR(eta=1.0).overlaps(model, run)
    hidden = list(overlaps)
    return {"mpd_overlap": statistics.fmean(float(o.mean()) for o in overlaps.values()),
            "hidden_rate": statistics.fmean(float(run.spikes[n].mean()) for n in hidden)}


def attack_model(folder: Path, x: torch.Tensor, y: torch.Tensor) -> dict:
    model = load(folder / "model.pt")
    t0 = time.perf_counter()
    result: dict = {"robust_accuracy": {}, "warnings": [], **hidden_statistics(model, x)}
    for eps in EPS:
        report = evaluate(model, x, y, attacks(model, eps), progress=False, check_gradients=eps == EPS[0])
        result["clean_accuracy"] = report.clean_accuracy
        if report.gradient_sparsity is not None:
            result["gradient_sparsity_attacked"] = report.gradient_sparsity
        for name, r in report.results.items():
            result["robust_accuracy"][name] = r.robust_accuracy
        result["robust_accuracy"][f"worst@{eps}"] = report.worst_case_accuracy
        result["warnings"] += report.warnings
    result["eval_time_s"] = time.perf_counter() - t0
    return result


def train_seconds(metrics: dict) -> float:
    """Training time of a model: its SNN epochs, plus the ANN phases of a conversion."""
    phases = metrics.get("conversion", {})
    return metrics["train_time_s"] + sum(phases[k]["time_s"] for k in ("ann_train", "ann_prune", "ann_finetune")
                                         if k in phases)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(per_seed: dict[int, dict]) -> dict:
    """Mean and standard deviation over seeds of every number in the per-seed records."""
    first = next(iter(per_seed.values()))
    out = {"clean_accuracy": _mean_std([r["clean_accuracy"] for r in per_seed.values()]),
           "gradient_sparsity": _mean_std([r["gradient_sparsity"] for r in per_seed.values()]),
           "weight_sparsity": _mean_std([r["weight_sparsity"] for r in per_seed.values()]),
           "train_time_s": _mean_std([r["train_time_s"] for r in per_seed.values()]),
           "mpd_overlap": _mean_std([r["mpd_overlap"] for r in per_seed.values()]),
           "hidden_rate": _mean_std([r["hidden_rate"] for r in per_seed.values()]),
           "robust_accuracy": {k: _mean_std([r["robust_accuracy"][k] for r in per_seed.values()])
                               for k in first["robust_accuracy"]}}
    return out


def _fmt(ms: tuple[float, float], n_seeds: int) -> str:
    mean, std = ms
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n_seeds > 1 else "")


def findings(results: dict) -> list[str]:
    """The acceptance comparisons, computed from the numbers (never typed in)."""
    models = results["models"]
    lines = []
    if "vanilla" not in models:
        return lines
    van = models["vanilla"]["summary"]
    pgd_key = f"PGD-20@{max(EPS)}"
    v_pgd = van["robust_accuracy"][pgd_key][0]
    for name in ("pgd-at", "trades", "mpd-sgr", "tmi", "mpd-sgr+at", "pgd-at-if", "converted-dense", "converted-90",
                 "converted-99"):
        if name not in models:
            continue
        s = models[name]["summary"]
        d_rob = 100 * (s["robust_accuracy"][pgd_key][0] - v_pgd)
        d_clean = 100 * (s["clean_accuracy"][0] - van["clean_accuracy"][0])
        d_worst = 100 * (s["robust_accuracy"][f"worst@{max(EPS)}"][0] - van["robust_accuracy"][f"worst@{max(EPS)}"][0])
        lines.append(f"- {MODELS[name][0]} vs vanilla: PGD-20 at eps {max(EPS)} {d_rob:+.1f} points, worst case "
                     f"{d_worst:+.1f} points, clean {d_clean:+.1f} points.")
    if "mpd-sgr" in models:
        s = models["mpd-sgr"]["summary"]
        lines.append(f"- Hidden layer, test set: MPD overlap with the surrogate's support {van['mpd_overlap'][0]:.2f} "
                     f"(vanilla) -> {s['mpd_overlap'][0]:.2f} (MPD-SGR); firing rate {van['hidden_rate'][0]:.3f} -> "
                     f"{s['hidden_rate'][0]:.3f}.")
        gain = s["robust_accuracy"][pgd_key][0] - v_pgd
        loss = van["clean_accuracy"][0] - s["clean_accuracy"][0]
        ok = gain > 0 and loss <= 0.02
        lines.append(f"- Acceptance (MPD-SGR beats vanilla under PGD-20 at eps {max(EPS)} with at most 2 points of "
                     f"clean accuracy lost): {'met' if ok else 'NOT met'} ({100 * gain:+.1f} points robust, "
                     f"{-100 * loss:+.1f} points clean).")
    if "mpd-sgr+at" in models and "pgd-at" in models:
        a, b = models["pgd-at"]["summary"], models["mpd-sgr+at"]["summary"]
        lines.append(f"- MPD-SGR + PGD-AT vs PGD-AT: PGD-20 at eps {max(EPS)} "
                     f"{100 * (b['robust_accuracy'][pgd_key][0] - a['robust_accuracy'][pgd_key][0]):+.1f} points, "
                     f"worst case {100 * (b['robust_accuracy'][f'worst@{max(EPS)}'][0] - a['robust_accuracy'][f'worst@{max(EPS)}'][0]):+.1f}"
                     f" points, clean {100 * (b['clean_accuracy'][0] - a['clean_accuracy'][0]):+.1f} points.")
    for name in ("converted-dense", "converted-90", "converted-99"):
        if name in models:
            seeds = models[name]["per_seed"].values()
            after = statistics.fmean(r["converted_test_accuracy"] for r in seeds)
            lines.append(f"- {MODELS[name][0]}: clean accuracy right after weight transfer and thresholds (before SNN "
                         f"fine-tuning) {100 * after:.1f} %, after fine-tuning "
                         f"{100 * models[name]['summary']['clean_accuracy'][0]:.1f} %.")
    for name, rec in models.items():
        warned = sorted({w.split(" (")[0] for r in rec["per_seed"].values() for w in r["warnings"]})
        if warned:
            lines.append(f"- Gradient-masking checks fired for {MODELS[name][0]}: {'; '.join(warned)}.")
    if "vanilla-latency" in models:
        lat = models["vanilla-latency"]["summary"]
        lines.append(f"- Gradient sparsity (fraction of zero entries of d loss / d input, test set): direct code "
                     f"{van['gradient_sparsity'][0]:.3f}, latency code {lat['gradient_sparsity'][0]:.3f}.")
    return lines


def table(results: dict) -> str:
    seeds = results["config"]["seeds"]
    n = len(seeds)
    cols = [f"{a}@{e}" for e in EPS for a in ("FGSM", "PGD-20", "APGD-CE")]
    cols += [f"Ensemble-PGD-20@{max(EPS)}", f"Square-1000@{max(EPS)}", f"worst@{max(EPS)}"]
    head = ["model", "clean"] + [c.replace("@", " ") for c in cols] + ["grad. sparsity", "weights zero",
                                                                        "train s"]
    rows = []
    for name, rec in results["models"].items():
        s = rec["summary"]
        row = [MODELS[name][0], _fmt(s["clean_accuracy"], n)]
        row += [_fmt(s["robust_accuracy"][c], n) if c in s["robust_accuracy"] else "" for c in cols]
        row += [f"{s['gradient_sparsity'][0]:.3f}", f"{100 * s['weight_sparsity'][0]:.0f} %",
                f"{s['train_time_s'][0]:.0f}"]
        rows.append(row)
    cfg = results["config"]
    intro = (f"Digits test split ({cfg['n_test']} samples), MLP 64-512-10, T = 8, {EPOCHS} epochs, seeds "
             f"{', '.join(map(str, seeds))} (mean" + (" ± std" if n > 1 else "") + "); accuracy in %, Linf eps "
             f"on pixels in [0, 1]. Adversarial training at eps {TRAIN_EPS} (PGD-AT: 5 steps; TRADES: 5 steps of "
             f"0.025); MPD-SGR `{MPD}`. Measured {cfg['date']} on {cfg['machine']}: {cfg['total_time_s'] / 60:.1f} "
             f"min wall clock, {cfg['total_cpu_s'] / 60:.1f} min CPU (`python benchmarks/robustness/run.py`).")
    notes = HERE / "notes.md"
    parts = [intro, "", markdown_table(head, rows), "", "\n".join(findings(results))]
    if notes.is_file():
        parts += ["", notes.read_text().strip()]
    return "\n".join(parts)


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_markdown(text: str) -> Path:
    """Replace README.md's marked section (or write RESULTS.md here when there is none)."""
    begin, end = "<!-- robustness:begin -->", "<!-- robustness:end -->"
    readme = ROOT / "README.md"
    if readme.is_file():
        body = readme.read_text()
        if begin in body and end in body and body.index(begin) < body.index(end):
            head, rest = body.split(begin, 1)
            _, tail = rest.split(end, 1)
            _atomic_text(readme, f"{head}{begin}\n{text}\n{end}{tail}")
            return readme
    target = HERE / "RESULTS.md"
    _atomic_text(target, f"# Robustness on digits\n\n{text}\n")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", choices=list(MODELS), help="run only these models (results of the others "
                   "are kept from results.json)")
    p.add_argument("--work", default=str(ROOT / "runs" / "robustness"), help="folder for trained models")
    p.add_argument("--retrain", action="store_true", help="train even when a model with the same config exists")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the tensors are small, and "
                   "on a busy machine a second thread makes every step several times slower)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    x, y = data.load("digits", "test")
    results_file = HERE / "results.json"
    previous = json.loads(results_file.read_text()) if results_file.is_file() and args.only else {"models": {}}
    t_start, cpu_start = time.perf_counter(), time.process_time()
    models = dict(previous.get("models", {}))
    for name in args.only or list(MODELS):
        per_seed = {}
        for seed in args.seeds:
            folder, metrics = trained(name, seed, work, args.retrain)
            record = attack_model(folder, x, y)
            record.update(train_time_s=train_seconds(metrics), gradient_sparsity=metrics["gradient_sparsity"],
                          weight_sparsity=metrics["weight_sparsity"]["total"],
                          test_accuracy_at_training=metrics["test_accuracy"])
            if metrics.get("conversion"):
                record["converted_test_accuracy"] = metrics["conversion"]["converted_test_accuracy"]
                record["thresholds"] = metrics["conversion"]["thresholds"]
            per_seed[seed] = record
            print(f"{name} seed {seed}: clean {record['clean_accuracy']:.3f}, PGD-20@{max(EPS)} "
                  f"{record['robust_accuracy'][f'PGD-20@{max(EPS)}']:.3f}, worst {record['robust_accuracy'][f'worst@{max(EPS)}']:.3f}"
                  f" (eval {record['eval_time_s']:.0f} s)", flush=True)
        models[name] = {"label": MODELS[name][0], "config": json.loads(json.dumps(asdict(train_config(name, args.seeds[0])[0]))),
                        "per_seed": per_seed, "summary": summarise(per_seed)}
    total, total_cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    ordered = {k: models[k] for k in MODELS if k in models}
    results = {"config": {"seeds": args.seeds, "eps": list(EPS), "epochs": EPOCHS, "n_test": len(x),
                          "date": time.strftime("%Y-%m-%d"), "total_time_s": total + (
                              previous.get("config", {}).get("total_time_s", 0.0) if args.only else 0.0),
                          "total_cpu_s": total_cpu + (
                              previous.get("config", {}).get("total_cpu_s", 0.0) if args.only else 0.0),
                          "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                                     f"{torch.get_num_threads()} threads"},
               "models": ordered}
    _atomic_text(results_file, json.dumps(results, indent=2))
    target = write_markdown(table(results))
    print(f"results: {results_file}; table: {target}; {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

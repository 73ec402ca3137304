"""``snn-report``: deploy one or several models on several targets, compare them with the torch reference and
with each model's non-spiking twin on a GPU, and write ``OUTDIR/report.json``, ``report.md`` (plots in
``OUTDIR/plots/``) and a self-contained ``report.html``.

    snn-report vanilla/model.pt pgd-at/model.pt converted/model.pt --labels vanilla,pgd-at,converted \
        --dataset digits --targets torch,loihi-emu,lava --attack pgd,square --eps 0.03,0.06,0.1 -o report/

The report opens with the decision table (models x targets: accuracy, robust accuracy at every eps, spikes,
synaptic ops, MACs and neuron updates per inference, energy per inference under every energy model, energy
measured on a GPU where there is one, memory footprint; the best value of each column in bold), the Pareto plot
of accuracy against energy and the accuracy-vs-eps curves. Then per model: agreement with the reference, energy,
memory per target (what the target stores), the GPU baseline (the twin's MACs costed from published figures,
and measured with NVML where a CUDA device is present), per-layer counts, NeuroBench-style metrics,
robustness, rasters. The energy models' figures and sources are in the appendix.

Robustness comes from ``snn-attack --json`` files (``--attack-json``) and from the report's own attacks
(``--attack NAMES --eps LIST``): per model and eps the reference is attacked once, every target that ran is
re-attacked through what it offers, and the twin is attacked white-box. The report's budgets are smaller than
snn-attack's (defaults: the first 100 samples, 10 gradient steps, 100 Square queries; --attack-limit, --steps,
--queries) and are stated in the report. A target that cannot run is listed with the reason.

Exit status: 0; 2 for bad input (one line); 1 when the reference itself could not run for a model (the report is
written and shows why, but it holds no agreement figures).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from snnkit.cli.common import add_json_flag, add_threads_flag, apply_threads, check_data_dir, emit, run


def parser() -> argparse.ArgumentParser:
    from snnkit.attack.registry import ATTACKS
    from snnkit.deploy.base import REFERENCE, target_names
    from snnkit.report.robustness import REPORT_LIMIT, REPORT_QUERIES, REPORT_STEPS

    names = ",".join(target_names())
    p = argparse.ArgumentParser(prog="snn-report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.pt", nargs="+", help="model file(s) written by snn-train")
    p.add_argument("--labels", metavar="NAME[,NAME...]",
                   help="comma-separated names of the models, in order (default: each model's folder name)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="named data set; its test split is used")
    src.add_argument("--input", metavar="X.npy", help="encoded input [B, T, ...] or [T, ...] (as snn-deploy --input)")
    src.add_argument("--raw-input", metavar="X.npy",
                     help="raw input [N, ...] in [0, 1] (e.g. adversarial examples), encoded with the model's encoder")
    p.add_argument("--input-labels", metavar="Y.npy",
                   help="labels [N] for --input/--raw-input (accuracy and attacks need them)")
    p.add_argument("--limit", type=int, help="--dataset: the first N test samples only")
    p.add_argument("--data-dir", help="folder of the data set's released files (the layouts snn-train --help lists)")
    p.add_argument("--targets", default=names,
                   help=f"comma-separated targets (default: all: {names}); {REFERENCE} always runs as the reference")
    p.add_argument("--attack", metavar="NAME[,NAME...]",
                   help=f"attack every model here, at every --eps: {', '.join(ATTACKS)}")
    p.add_argument("--eps", metavar="EPS[,EPS...]", help="comma-separated perturbation budgets for --attack")
    p.add_argument("--attack-limit", type=int, help=f"samples attacked per model, target and eps: the first N of the "
                                                    f"report's samples (default {REPORT_LIMIT})")
    p.add_argument("--steps", type=int, help=f"iterations of every gradient attack (default {REPORT_STEPS})")
    p.add_argument("--queries", type=int, help=f"Square's query budget per sample (default {REPORT_QUERIES})")
    p.add_argument("--seed", type=int, default=0, help="seed of every attack (default 0)")
    p.add_argument("--attack-json", action="extend", nargs="+", default=[], metavar="FILE",
                   help="snn-attack --json output file(s) to include (robust accuracy vs eps); with several models "
                        "each file is matched to the model it names")
    p.add_argument("--energy-model", action="extend", nargs="+", metavar="NAME|FILE",
                   help="built-in energy model name(s) or model file(s) with the schema of snnkit/energy/figures.json "
                        "(default: every built-in model)")
    p.add_argument("--device", help="device for the targets that take one (torch, loihi-emu) and the attacks: cpu | "
                   "cuda | auto (default: each target's own; attacks on cpu)")
    p.add_argument("--no-gpu-measure", action="store_true",
                   help="do not measure energy with NVML even where a CUDA device is present")
    p.add_argument("--no-raster", action="store_true", help="skip the one-sample recording run per target")
    add_threads_flag(p)
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(p)
    return p


HEADLINE_MODELS = ("horowitz45-fp32", "loihi1-davies2018", "truenorth")
"""Energy models shown in the one-line-per-target text output (when present); the report has all of them."""


def _human(s: dict) -> str:
    from snnkit.report.writers import fmt_joules

    lines = [f"snn-report: {len(s['models'])} model(s), {s['n_samples']} samples from {s['data']}"]
    for m in s["models"]:
        lines.append(f"{m['label']} ({m['path']})")
        for t in m["targets"]:
            if t["status"] != "ok":
                lines.append(f"  {t['name']:<10} {t['status']}: {t['reason']}")
                continue
            acc = "n/a" if t["accuracy"] is None else f"{t['accuracy']:.4f}"
            agree = t.get("agreement_predictions")
            avail = {k: v for k, v in t.get("energy_per_sample_j", {}).items() if v is not None}
            shown = [k for k in HEADLINE_MODELS if k in avail] or list(avail)
            energy = ", ".join(f"{k} {fmt_joules(avail[k])}" for k in shown[:3])
            robust = ", ".join(f"@{e:g} {v:.3f}" for e, v in t.get("robust", []) if v is not None)
            lines.append(f"  {t['name']:<10} accuracy {acc}, agreement {agree:.4f}, {t['samples_per_s']:.1f} samples/s"
                         + (f", robust {robust}" if robust else "") + (f"; energy/sample: {energy}" if energy else ""))
        g = m.get("gpu") or {}
        if g.get("defined"):
            acc = "n/a" if g.get("accuracy") is None else f"{g['accuracy']:.4f}"
            energy = ", ".join(f"{k} {fmt_joules(v)}" for k, v in g.get("energy_per_sample_j", {}).items()
                               if v is not None)
            measured = "; ".join(f"{k} " + (fmt_joules(v) if isinstance(v, float) else v)
                                 for k, v in g["measured"].items())
            lines.append(f"  {'gpu-twin':<10} accuracy {acc}, {g['macs_per_sample']:,} MACs/sample"
                         + (f"; energy/sample: {energy}" if energy else "") + f"; on a GPU: {measured}")
        elif g:
            lines.append(f"  {'gpu-twin':<10} not defined: {g.get('reason')}")
    lines.append("(every energy model, with its figures and sources, is in the report)")
    lines.append(f"wrote {s['files']['report.md']}, {s['files']['report.html']}, {s['files']['report.json']} "
                 f"in {s['wall_s']:.1f} s")
    return "\n".join(lines)


def _floats(text: str, flag: str) -> list[float]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise ValueError(f"{flag}: {part!r} is not a number") from None
        if not v > 0 or v != v or v == float("inf"):
            raise ValueError(f"{flag}: every value must be a positive number, got {part}")
        out.append(v)
    if not out:
        raise ValueError(f"{flag}: no value given")
    return sorted(dict.fromkeys(out))


def _labels(args: argparse.Namespace) -> list[str]:
    from snnkit.report.collect import model_label

    if args.labels is None:
        labels = [model_label(m) for m in args.model]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"several models would be labelled {dup[0]!r} (their folder name); give --labels")
        return labels
    labels = [x.strip() for x in args.labels.split(",")]
    if len(labels) != len(args.model) or not all(labels):
        raise ValueError(f"--labels: {len(args.model)} model(s) need {len(args.model)} non-empty comma-separated "
                         f"names, got {args.labels!r}")
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"--labels: {dup[0]!r} is given twice; labels must be unique")
    return labels


def _attack_files(args: argparse.Namespace) -> dict[str, list[str]]:
    """The ``--attack-json`` files of each model (by path); with one model, all of them."""
    from snnkit.report.attacks import read_attack_file

    out: dict[str, list[str]] = {m: [] for m in args.model}
    for f in args.attack_json:
        records = read_attack_file(f)  # a malformed file fails here, before any work
        if len(args.model) == 1:
            out[args.model[0]].append(f)
            continue
        named = {r.model for r in records if r.model}
        if not named:
            raise ValueError(f"{f}: names no model; with several models each attack file must be snn-attack output, "
                             "which names the model it attacked")
        match = [m for m in args.model if any(Path(n).resolve() == Path(m).resolve() for n in named)]
        if not match:
            raise ValueError(f"{f}: attacked {sorted(named)[0]}, which is not one of the report's models")
        out[match[0]].append(f)
    return out


def _main(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    import snnkit
    from snnkit.attack.registry import Settings, parse_attacks
    from snnkit.cli.attack import SETTING_FLAGS
    from snnkit.deploy.base import REFERENCE, make_target, target_names
    from snnkit.outdir import writing
    from snnkit.deploy.torch_target import resolve_device
    from snnkit.energy import resolve_models
    from snnkit.export import to_nir
    from snnkit.report.collect import build_comparison, inputs_from_dataset, inputs_from_file
    from snnkit.report.robustness import REPORT_LIMIT, REPORT_QUERIES, REPORT_STEPS, AttackPlan
    from snnkit.report.writers import write_report

    t_start = time.perf_counter()
    apply_threads(args.threads)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    available = target_names()
    unknown = [t for t in targets if t not in available]
    if unknown or not targets:
        raise ValueError(f"unknown target(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(available)}")
    if args.limit is not None and (args.limit < 1 or not args.dataset):
        raise ValueError("--limit needs --dataset and a positive N")
    if args.input_labels and not (args.input or args.raw_input):
        raise ValueError("--input-labels goes with --input or --raw-input (data sets bring their labels)")
    check_data_dir(args.data_dir, args.dataset)
    if args.device:
        resolve_device(args.device)  # the torch reference runs on it: an unavailable device fails before any work
    resolve_models(args.energy_model)  # fail on a bad model file before any work
    labels = _labels(args)
    attack_files = _attack_files(args)

    plan = None
    if args.attack or args.eps:
        if not (args.attack and args.eps):
            raise ValueError("--attack and --eps go together (the attacks and the budgets to run them at)")
        attacks = parse_attacks(args.attack)
        eps = _floats(args.eps, "--eps")
        if args.input:
            raise ValueError("--attack needs samples before encoding: --dataset, or --raw-input with --input-labels")
        if args.raw_input and not args.input_labels:
            raise ValueError("--attack needs labels: give --input-labels with --raw-input")
        if args.attack_limit is not None and args.attack_limit < 1:
            raise ValueError(f"--attack-limit must be >= 1, not {args.attack_limit}")
        from snnkit.attack.registry import readers
        from snnkit.cli.common import either

        for flag in ("--steps", "--queries"):
            users = readers(SETTING_FLAGS[flag])
            if getattr(args, flag.lstrip("-")) is not None and not set(users) & set(attacks):
                raise ValueError(f"{flag} needs --attack {either(users)}")
        settings = Settings(eps=eps[0], steps=REPORT_STEPS if args.steps is None else args.steps,
                            queries=REPORT_QUERIES if args.queries is None else args.queries, seed=args.seed,
                            device=str(resolve_device(args.device or "cpu")), progress=False)
        plan = AttackPlan(attacks=attacks, eps=eps, limit=args.attack_limit or REPORT_LIMIT, settings=settings)
    else:
        for flag in ("--attack-limit", "--steps", "--queries"):
            if getattr(args, flag.lstrip("-").replace("-", "_")) is not None:
                raise ValueError(f"{flag} needs --attack and --eps")

    entries = []
    for path, label in zip(args.model, labels):
        model = snnkit.load(path)
        try:
            graph = to_nir(model)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if args.dataset:
            inputs = inputs_from_dataset(graph, args.dataset, limit=args.limit, data_dir=args.data_dir)
        else:
            inputs = inputs_from_file(graph, args.input or args.raw_input, labels=args.input_labels,
                                      raw=bool(args.raw_input))
        entries.append({"label": label, "path": path, "model": model, "graph": graph, "inputs": inputs,
                        "attack_files": attack_files[path]})

    def progress(names):
        return tqdm(names, desc="targets", unit="target", file=sys.stderr, disable=True if args.no_progress else None)

    def log(message: str) -> None:
        if not args.no_progress:
            print(f"snn-report [{time.perf_counter() - t_start:6.1f} s]: {message}", file=sys.stderr, flush=True)

    with writing(args.out):  # one command at a time on a folder
        report = build_comparison(entries, targets, energy_models=args.energy_model, attack_plan=plan,
                                  measure_gpu=not args.no_gpu_measure,
                                  make_target=lambda name: make_target(name, device=args.device),
                                  raster=not args.no_raster, progress=progress, log=log)
        files = write_report(report, args.out)
    d = report.data
    eps = d["summary"]["eps"]
    rows = {(r["model"], r["target"]): r for r in d["summary"]["rows"]}
    summary = {
        "out": str(args.out), "files": files, "data": d["models"][0]["data"]["source"],
        "n_samples": d["models"][0]["data"]["n_samples"], "run_time_s": d["run_time_s"],
        "wall_s": time.perf_counter() - t_start, "attack": d["attack"],
        "models": [{
            "label": m["label"], "path": m["model"]["path"],
            "targets": [
                {"name": t["name"], "status": t["status"],
                 **({"reason": t["reason"]} if t["status"] != "ok" else {
                     "accuracy": t["accuracy"], "agreement_predictions": t.get("agreement", {}).get("predictions"),
                     "agreement_output_spikes": t.get("agreement", {}).get("output_spikes"),
                     "samples_per_s": t["samples_per_s"], "wall_s": t["wall_s"], **t["counts"],
                     "energy_per_sample_j": {k: v.get("per_sample_j") for k, v in t["energy"].items()},
                     "memory_bytes": t["footprint"].get("bytes"),
                     "robust": list(zip(eps, rows[(m["label"], t["name"])]["robust"]))})}
                for t in m["targets"]],
            "gpu": _gpu_summary(m.get("gpu")),
        } for m in d["models"]],
    }
    summary["wall_s"] = time.perf_counter() - t_start
    emit(summary, args.json, _human)
    failed = [(m["label"], t.get("reason")) for m in summary["models"] for t in m["targets"]
              if t["name"] == REFERENCE and t["status"] != "ok"]
    if failed:  # the report is written (it shows the failure), but nothing was compared with the reference
        print("snn-report: the reference target failed for " + "; ".join(f"{label} ({reason})" for label, reason
                                                                          in failed)
              + f": the report in {args.out} has no agreement figures", file=sys.stderr)
        return 1
    return 0


def _gpu_summary(g: dict | None) -> dict | None:
    if not g:
        return None
    if not g.get("defined"):
        return {"defined": False, "reason": g.get("reason")}
    measured = {k: (v["per_sample_j"] if v.get("status") == "measured" else f"not measured: {v.get('reason')}")
                for k, v in g.get("measured", {}).items()}
    return {"defined": True, "accuracy": g.get("accuracy"), "macs_per_sample": g["macs_per_sample"],
            "energy_per_sample_j": {k: v.get("per_sample_j") for k, v in g.get("energy", {}).items()},
            "memory_bytes": g.get("footprint", {}).get("bytes"), "measured": measured}


def main(argv: list[str] | None = None) -> int:
    return run("snn-report", _main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""``snn-report``: deploy a model on several targets, compare them with the torch reference and write
``OUTDIR/report.json``, ``report.md`` (plots in ``OUTDIR/plots/``) and a self-contained ``report.html``.

Per target: accuracy, agreement with the reference (predictions and output spike trains), spikes, synaptic
ops, MACs and neuron updates (per layer), wall time and samples/s, NeuroBench-style metrics, the energy per
sample under published energy models (each figure with its source), a spike raster of one sample, and
robust accuracy vs eps from ``snn-attack --json`` files. A target that cannot run is listed with the reason.
"""
from __future__ import annotations

import argparse
import sys

from snnkit.cli.common import add_json_flag, check_data_dir, emit, run


def parser() -> argparse.ArgumentParser:
    from snnkit.deploy.base import REFERENCE, target_names

    names = ",".join(target_names())
    p = argparse.ArgumentParser(prog="snn-report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.pt", help="model file written by snn-train")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="named data set; its test split is used")
    src.add_argument("--input", metavar="X.npy", help="encoded input [B, T, ...] or [T, ...] (as snn-deploy --input)")
    src.add_argument("--raw-input", metavar="X.npy",
                     help="raw input [N, ...] in [0, 1] (e.g. adversarial examples), encoded with the model's encoder")
    p.add_argument("--labels", metavar="Y.npy", help="labels [N] for --input/--raw-input (accuracy needs them)")
    p.add_argument("--limit", type=int, help="--dataset: the first N test samples only")
    p.add_argument("--data-dir", help="folder holding MNIST/Fashion-MNIST IDX files or CIFAR-10 batches")
    p.add_argument("--targets", default=names,
                   help=f"comma-separated targets (default: all: {names}); {REFERENCE} always runs as the reference")
    p.add_argument("--attack-json", action="extend", nargs="+", default=[], metavar="FILE",
                   help="snn-attack --json output file(s) to include (robust accuracy vs eps)")
    p.add_argument("--energy-model", action="extend", nargs="+", metavar="NAME|FILE",
                   help="built-in energy model name(s) or model file(s) with the schema of snnkit/energy/figures.json "
                        "(default: every built-in model)")
    p.add_argument("--device", help="device for the targets that take one (torch, loihi-emu): cpu | cuda | auto "
                   "(default: each target's own)")
    p.add_argument("--no-raster", action="store_true", help="skip the one-sample recording run per target")
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(p)
    return p


HEADLINE_MODELS = ("horowitz45-fp32", "loihi1-davies2018", "truenorth")
"""Energy models shown in the one-line-per-target text output (when present); the report has all of them."""


def _human(s: dict) -> str:
    from snnkit.report.writers import fmt_joules

    lines = [f"snn-report: {s['n_samples']} samples from {s['data']}"]
    for t in s["targets"]:
        if t["status"] != "ok":
            lines.append(f"  {t['name']:<10} {t['status']}: {t['reason']}")
            continue
        acc = "n/a" if t["accuracy"] is None else f"{t['accuracy']:.4f}"
        agree = t.get("agreement_predictions")
        avail = {k: v for k, v in t.get("energy_per_sample_j", {}).items() if v is not None}
        shown = [k for k in HEADLINE_MODELS if k in avail] or list(avail)
        e = [(k, avail[k]) for k in shown[:3]]
        energy = ", ".join(f"{k} {fmt_joules(v)}" for k, v in e)
        lines.append(f"  {t['name']:<10} accuracy {acc}, agreement {agree:.4f}, {t['samples_per_s']:.1f} samples/s"
                     + (f"; energy/sample: {energy}" if energy else ""))
    lines.append("(every energy model, with its figures and sources, is in the report)")
    lines.append(f"wrote {s['files']['report.md']}, {s['files']['report.html']}, {s['files']['report.json']}")
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    import snnkit
    from snnkit.deploy.base import make_target, target_names
    from snnkit.deploy.torch_target import resolve_device
    from snnkit.energy import resolve_models
    from snnkit.export import to_nir
    from snnkit.report.attacks import read_attack_files
    from snnkit.report.collect import build_report, inputs_from_dataset, inputs_from_file
    from snnkit.report.writers import write_report

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    available = target_names()
    unknown = [t for t in targets if t not in available]
    if unknown or not targets:
        raise ValueError(f"unknown target(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(available)}")
    if args.limit is not None and (args.limit < 1 or not args.dataset):
        raise ValueError("--limit needs --dataset and a positive N")
    if args.labels and not (args.input or args.raw_input):
        raise ValueError("--labels goes with --input or --raw-input (data sets bring their labels)")
    check_data_dir(args.data_dir, args.dataset)
    if args.device:
        resolve_device(args.device)  # the torch reference runs on it: an unavailable device fails before any work
    resolve_models(args.energy_model)  # fail on a bad model file before any work
    read_attack_files(args.attack_json)

    model = snnkit.load(args.model)
    try:
        graph = to_nir(model)
    except ValueError as exc:
        raise ValueError(f"{args.model}: {exc}") from None
    if args.dataset:
        inputs = inputs_from_dataset(graph, args.dataset, limit=args.limit, data_dir=args.data_dir)
    else:
        inputs = inputs_from_file(graph, args.input or args.raw_input, labels=args.labels, raw=bool(args.raw_input))

    def progress(names):
        return tqdm(names, desc="targets", unit="target", file=sys.stderr, disable=True if args.no_progress else None)

    report = build_report(model, graph, inputs, targets, model_path=args.model, energy_models=args.energy_model,
                     attack_files=args.attack_json, make_target=lambda name: make_target(name, device=args.device),
                     raster=not args.no_raster, progress=progress)
    files = write_report(report, args.out)
    d = report.data
    summary = {
        "out": str(args.out), "files": files, "data": d["data"]["source"], "n_samples": d["data"]["n_samples"],
        "targets": [
            {"name": t["name"], "status": t["status"],
             **({"reason": t["reason"]} if t["status"] != "ok" else {
                 "accuracy": t["accuracy"], "agreement_predictions": t.get("agreement", {}).get("predictions"),
                 "agreement_output_spikes": t.get("agreement", {}).get("output_spikes"),
                 "samples_per_s": t["samples_per_s"], "wall_s": t["wall_s"], **t["counts"],
                 "energy_per_sample_j": {k: v.get("per_sample_j") for k, v in t["energy"].items()}})}
            for t in d["targets"]],
    }
    emit(summary, args.json, _human)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run("snn-report", _main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

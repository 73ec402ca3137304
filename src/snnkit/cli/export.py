"""``snn-export``: write a trained model as a NIR graph, plus what a target needs, plus an export report.

Always writes ``OUTDIR/model.nir`` (``nir.write``) and ``OUTDIR/export_report.json`` (node mapping, lossy cases as
warnings, the checks below). ``--target``:

- ``nir``: nothing more.
- ``onnx``: ``OUTDIR/model.onnx``, the non-spiking twin (same weights, one step, rate functions for the neurons),
  checked with ``onnx.checker``. Models without a twin (latency code, recurrent graphs) are told so (exit 2).
- a deployment target that loads files of its own (``Target.export``): what it writes, e.g. ``norse`` /
  ``snntorch``: ``OUTDIR/model_<target>.nir``, the graph rewritten for that framework's importer (the
  work-arounds are listed in the report); ``lava``: ``OUTDIR/loihi/``, the graph quantised to Loihi 2 fixed point,
  and lava-dl's netx HDF5 where the graph fits it. Then a check that the target (or its bit-exact query proxy),
  fed the same encoded probe samples, gives the reference's output spikes, and the target's own check of its
  files (``lava``: the netx file loaded by lava-dl's netx on Lava, compared bit for bit with loihi-emu on the
  same parameters, and its accuracy beside the lava target's and the reference's).

Every export also checks the round trip model -> NIR file -> snnkit on the probe samples (bit-identical outputs
expected).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from snnkit.cli.common import add_json_flag, check_data_dir, emit, run
from snnkit.graph.errors import first_line

FORMATS = ("nir", "onnx")
"""What snn-export writes without a target: the NIR graph alone, or with the ANN twin as ONNX."""


def choices() -> list[str]:
    """``--target`` values: the formats, then every target that writes files of its own."""
    from snnkit.deploy.base import exports, target_names

    return [*FORMATS, *(t for t in target_names() if exports(t))]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snn-export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.pt", help="model file written by snn-train")
    p.add_argument("--target", required=True, choices=choices(), help="what to export for (see above)")
    p.add_argument("-o", "--out", metavar="OUTDIR",
                   help="output folder (default: export-<target> next to the model file)")
    p.add_argument("--dt", type=float, help="step length in seconds written to the graph (default: the model's)")
    p.add_argument("--probe", type=int, default=64,
                   help="samples used for the round-trip and target checks (default 64; 0 skips the checks)")
    p.add_argument("--data-dir", help="data folder, for models trained on a data set read from files")
    add_json_flag(p)
    return p


def _probe_samples(model, meta: dict, n: int, data_dir: str | None):
    """``n`` test samples of the model's data set when it can be loaded, else uniform random inputs."""
    import torch

    from snnkit import data

    name = meta.get("dataset")
    if name:
        try:
            x, y = data.load(name, "test", limit=n, data_dir=data_dir, timesteps=model.timesteps)
            return x, y, f"{name} test split, first {len(x)}"
        except data.DataError:
            pass
    g = torch.Generator().manual_seed(0)
    return torch.rand((n, *model.config["input_shape"]), generator=g), None, f"{n} uniform random samples"


def _twin_check(model, graph, x, y) -> dict:
    """How the twin's class decisions compare with the spiking model's on the probe samples."""
    import torch

    from snnkit.export.onnx_twin import ann_twin

    with torch.no_grad():
        snn = model(x).argmax(1)
        twin = ann_twin(graph)(x).argmax(1)
    out = {"predictions_equal_to_snn": float((snn == twin).float().mean())}
    if y is not None:
        out.update(snn_accuracy=float((snn == y).float().mean()), twin_accuracy=float((twin == y).float().mean()))
    return out


def _round_trip(model, path: Path, x) -> dict:
    import torch

    from snnkit.export.executor import from_nir
    from snnkit.graph import read_nir

    net = from_nir(read_nir(path))
    with torch.no_grad():
        inp = model.encoder(x)
        ref = model.layers(inp)
        got = net(inp)
    mismatched = int((ref != got).sum())
    return {"samples": int(len(x)), "identical": mismatched == 0, "mismatched_outputs": mismatched,
            "outputs": int(ref.numel())}


def _target_check(graph, target, x_enc, y, report) -> dict:
    """Run the reference and ``target`` (through its query proxy when it has one: bit-identical outputs) on the
    encoded probe; how far they agree, and with labels ``y`` the accuracy each reaches (the expected gap)."""
    from snnkit.deploy.base import REFERENCE, get_target

    runner = target.query_proxy() or target
    ref = get_target(REFERENCE, device="cpu").run(graph, x_enc)
    res = runner.run(graph, x_enc)
    for w in res.info.get("warnings", []):
        report.warn(f"{target.name}: {w}")
    for c in res.info.get("rewrites", []):
        report.note(f"{target.name} rewrite: {c}")
    T = x_enc.shape[1]
    out_ref, out = ref.aligned_outputs(T), res.aligned_outputs(T)
    check = {"samples": int(len(x_enc)), "run_on": runner.name, "framework": res.info.get("framework"),
             "output_spikes_equal": int((out_ref == out).sum()), "outputs": int(out_ref.size),
             "identical": bool((out_ref == out).all()),
             "predictions_equal": float((ref.predictions(T) == res.predictions(T)).mean())}
    if y is not None:
        labels = np.asarray(y)
        check["reference_accuracy"] = float((ref.predictions(T) == labels).mean())
        check["target_accuracy"] = float((res.predictions(T) == labels).mean())
        check["accuracy_gap"] = check["reference_accuracy"] - check["target_accuracy"]
    return check


def _export_and_check(args: argparse.Namespace, model, meta: dict, graph, out: Path, model_path: Path,
                      report) -> tuple[int, str | None]:
    """Everything after ``model.nir``: the probe's round trip, the target's files and their checks, recorded in
    ``report``. Returns (exit status, a line for stderr or None)."""
    from snnkit.deploy.inputs import encode
    from snnkit.graph import graph_metadata

    status = 0
    message = None
    x = y = x_enc = None
    if args.probe > 0:
        x, y, what = _probe_samples(model, meta, args.probe, args.data_dir)
        report.checks["probe"] = what
        report.checks["round_trip"] = _round_trip(model, out / "model.nir", x)
        x_enc = encode(x.numpy(), graph_metadata(graph))
    if args.target == "onnx":
        from snnkit.export.onnx_twin import TwinUndefined, export_onnx

        try:
            report.checks["onnx"] = export_onnx(graph, out / "model.onnx",
                                                probe=None if x is None else x.numpy())
            report.files["onnx"] = str(out / "model.onnx")
            if x is not None:
                report.checks["onnx"].update(_twin_check(model, graph, x, y))
        except TwinUndefined as exc:
            report.checks["onnx"] = {"exported": False, "reason": str(exc)}
            message = f"snn-export: no ONNX file written: {exc}"
            status = 2
    elif args.target not in FORMATS:
        from snnkit.deploy.base import make_target
        from snnkit.graph import DeployError

        target = make_target(args.target, dt=args.dt)
        try:
            exported = target.export(graph, out, source=str(model_path))
        except DeployError as exc:  # something the target cannot carry: reported, nothing written for it
            report.warn(str(exc))
            message, status = f"snn-export: no {args.target} files written: {exc}", 2
        else:
            report.files.update(exported.files)
            for n in exported.notes:
                report.note(n)
            for w in exported.warnings:
                report.warn(w)
            report.checks[args.target] = dict(exported.details)
            if x_enc is not None:
                check = report.checks[args.target]
                check.update(_target_check(graph, target, x_enc, y, report))
                extra = target.verify_export(graph, exported, x_enc, None if y is None else np.asarray(y),
                                             check=check, source=str(model_path))
                if extra is not None:
                    check.update(extra.details)
                    for n in extra.notes:
                        report.note(n)
                    for w in extra.warnings:
                        report.warn(w)
    return status, message


def _main(args: argparse.Namespace) -> int:
    import snnkit
    from snnkit.export.exporter import to_nir
    from snnkit.graph import write_nir
    from snnkit.export.report import ExportReport
    from snnkit.models.io import read as read_model_file
    from snnkit.outdir import writing

    model_path = Path(args.model)
    model = snnkit.load(model_path)
    meta = read_model_file(model_path).get("meta", {})
    check_data_dir(args.data_dir, meta.get("dataset"), needs="a model trained on")
    out = Path(args.out) if args.out else model_path.parent / f"export-{args.target}"
    with writing(out):  # one command at a time on a folder
        report = ExportReport(model=str(model_path), target=args.target)
        try:
            graph = to_nir(model, dt=args.dt, report=report)
        except ValueError as exc:  # nothing to export: the report alone says why
            report.files["report"] = str(report.write(out / "export_report.json"))
            raise ValueError(f"{model_path}: {exc}") from None
        report.files["nir"] = str(write_nir(graph, out / "model.nir"))
        report.files["report"] = str(out / "export_report.json")
        try:
            status, message = _export_and_check(args, model, meta, graph, out, model_path, report)
        except BaseException as exc:  # model.nir is written: its report says what stopped the export after it
            report.warn(f"export stopped: {first_line(exc)}")
            raise
        finally:
            report.write(out / "export_report.json")
        summary = {"model": str(model_path), "target": args.target, "out": str(out), "files": report.files,
                   "warnings": report.warnings, "notes": report.notes, "checks": report.checks}
        emit(summary, args.json, _human)
        if message:
            print(message, file=sys.stderr)
        return status


def _human(s: dict) -> str:
    lines = [f"exported {s['model']} for {s['target']} -> {s['out']}"]
    lines += [f"  {role}: {path}" for role, path in s["files"].items()]
    rt = s["checks"].get("round_trip")
    if rt:
        lines.append(f"  round trip on {rt['samples']} samples: "
                     + ("identical" if rt["identical"] else f"{rt['mismatched_outputs']} outputs differ"))
    tc = s["checks"].get(s["target"])
    if isinstance(tc, dict) and "output_spikes_equal" in tc:
        lines.append(f"  {tc['run_on']} vs the reference on the probe: {tc['output_spikes_equal']}/{tc['outputs']} "
                     f"output values equal, predictions equal on {100 * tc['predictions_equal']:.1f}%"
                     + (f"; accuracy {100 * tc['target_accuracy']:.1f}% vs {100 * tc['reference_accuracy']:.1f}%"
                        if "accuracy_gap" in tc else ""))
    netx = tc.get("netx") if isinstance(tc, dict) else None
    if netx and netx.get("written"):
        dl = netx.get("lava_dl", {})
        run = (f"lava-dl netx on Lava vs loihi-emu on its parameters: "
               + ("identical" if dl.get("identical") else f"{dl.get('differing_values')} spike values differ")
               if dl.get("ran") else f"not run on Lava ({dl.get('reason')})")
        acc = (f"; accuracy {100 * netx['accuracy']:.1f}% (lava target {100 * netx['lava_target_accuracy']:.1f}%)"
               if netx.get("accuracy") is not None else "")
        lines.append(f"  netx file: {run}{acc}")
    twin = s["checks"].get("onnx", {})
    if "predictions_equal_to_snn" in twin:
        lines.append(f"  ONNX twin: checker {twin['checker']}, same class as the SNN on "
                     f"{100 * twin['predictions_equal_to_snn']:.1f}% of the probe"
                     + (f" (accuracy SNN {twin['snn_accuracy']:.3f}, twin {twin['twin_accuracy']:.3f})"
                        if "twin_accuracy" in twin else ""))
    lines += [f"  warning: {w}" for w in s["warnings"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run("snn-export", _main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

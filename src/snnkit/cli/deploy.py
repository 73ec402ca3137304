"""``snn-deploy``: run a model or a NIR graph on a target and report outputs, accuracy and operation counts.

The source is a model file (``MODEL.pt``, exported to NIR in memory) or a NIR graph (``GRAPH.nir``). The input
is a data set's test split, encoded with the encoder recorded in the graph (``--dataset``; graphs without one get
the analog values at every step), or an array (``--input X.npy``, ``[T, ...]`` or ``[B, T, ...]``, spikes or
currents). Targets: torch (snnkit's executor, the reference; CUDA when available), norse, snntorch, lava,
loihi-emu.

JSON (``--json``): target, source, input, n_samples, timesteps, accuracy (with labels), layers (per node:
name, kind, neurons, spikes, synops, macs, neuron_updates), total_spikes, total_synops, total_macs,
total_neuron_updates, wall_s, build_s, delay, info. ``--save-output OUT.npz`` stores ``outputs [B, T, C]``
(and ``predictions``, ``labels`` when known).
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from snnkit.cli.common import add_json_flag, check_data_dir, either, emit, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snn-deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="MODEL.pt|GRAPH.nir", help="model file (snn-train) or NIR graph")
    p.add_argument("--target", required=True,
                   help="torch | norse | snntorch | lava | loihi-emu")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="run on this data set's test split (encoded as the graph says)")
    src.add_argument("--input", metavar="X.npy", help="run on this array: [T, ...] or [B, T, ...]")
    p.add_argument("--limit", type=int, help="with --dataset: the first N test samples")
    p.add_argument("--data-dir", help="with --dataset: folder of data sets read from files")
    p.add_argument("--timesteps", type=int, help="steps T (default: the graph's metadata; required otherwise)")
    p.add_argument("--dt", type=float,
                   help="step length in seconds (default: the graph's; 1e-4 for graphs without one)")
    p.add_argument("--device", default="auto", help="torch and loihi-emu targets: cpu | cuda | auto (default auto); "
                   "the others run on the CPU")
    p.add_argument("--batch-size", type=int, help="samples per call (default: the target's; 256 on torch, norse and "
                   "snntorch, 512 on loihi-emu)")
    p.add_argument("--save-output", metavar="OUT.npz", help="write the output spikes [B, T, C] here")
    add_json_flag(p)
    return p


def load_graph(source: str):
    """A NIR graph from a ``.nir`` file, or from a model file via ``to_nir``."""
    from snnkit.export.nirfile import read_nir

    path = Path(source)
    if path.suffix.lower() == ".nir":
        return read_nir(path)
    import snnkit
    from snnkit.export.exporter import to_nir

    model = snnkit.load(path)
    try:
        return to_nir(model)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def target_options(name: str) -> set[str]:
    """The keyword options target ``name`` (one of ``TARGETS``) accepts: its class's, and through ``**kwargs``
    those of the base classes they are passed on to (the quantisation options of the Loihi targets)."""
    import importlib
    import inspect

    from snnkit.deploy.base import TARGETS

    module, cls = TARGETS[name].split(":")
    accepted: set[str] = set()
    for klass in getattr(importlib.import_module(module), cls).__mro__:
        params = inspect.signature(klass.__init__).parameters.values()
        accepted |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return accepted


def make_target(name: str, **options):
    """``get_target(name, ...)`` with only the options that target accepts (unset ones dropped)."""
    from snnkit.deploy.base import TARGETS, get_target

    if name in TARGETS:
        accepted = target_options(name)
        options = {k: v for k, v in options.items() if v is not None and k in accepted}
    return get_target(name, **options)


def check_target_flags(args: argparse.Namespace) -> None:
    """Refuse ``--device`` / ``--batch-size`` where the target would ignore them, naming the targets that take
    them. Targets without a device option run on the CPU, so ``--device cpu`` (or ``auto``) suits every one."""
    from snnkit.deploy.base import TARGETS

    if args.target not in TARGETS:
        return  # get_target says so
    accepted = target_options(args.target)
    for flag, key, value in (("--device", "device", None if args.device in ("cpu", "auto") else args.device),
                             ("--batch-size", "batch_size", args.batch_size)):
        if value is not None and key not in accepted:
            takers = [t for t in TARGETS if key in target_options(t)]
            raise ValueError(f"{flag} needs --target {either(takers)} ({args.target} does not take it)")


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from snnkit.models.io import atomic_write

    def write(tmp: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        Path(tmp).write_bytes(buf.getvalue())

    atomic_write(path, write)


def _main(args: argparse.Namespace) -> int:
    from snnkit.deploy.base import DeployError
    from snnkit.deploy.inputs import dataset_input, load_array
    from snnkit.export.graph import flatten_graph, input_shape
    from snnkit.export.nirfile import graph_metadata

    source = str(args.source)

    def located(exc: Exception) -> Exception:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return type(exc)(msg if msg.startswith(source) else f"{source}: {msg}")

    check_target_flags(args)
    check_data_dir(args.data_dir, args.dataset)
    target = make_target(args.target, device=args.device, dt=args.dt, batch_size=args.batch_size)
    target.check_available()
    try:
        graph = flatten_graph(load_graph(source))
        shape = input_shape(graph)
        meta = graph_metadata(graph)
    except DeployError as exc:
        raise located(exc) from None
    if args.limit is not None and args.dataset is None:
        raise ValueError("--limit needs --dataset")
    if args.dataset is not None:
        try:
            inp = dataset_input(args.dataset, meta, shape, limit=args.limit, timesteps=args.timesteps,
                                data_dir=args.data_dir)
        except DeployError as exc:
            raise located(exc) from None
    else:
        inp = load_array(args.input, shape, args.timesteps)
    try:
        result = target.run(graph, inp.x)
    except (DeployError, ValueError) as exc:
        raise located(exc) from None
    T = inp.timesteps
    summary = result.summary()
    summary.update(source=source, input=inp.source, timesteps=T,
                   total_macs=int(sum(layer.macs for layer in result.layers)))
    if inp.encoder is not None:
        summary["encoder"] = inp.encoder
    preds = result.predictions(T)
    if inp.y is not None:
        summary["accuracy"] = float((preds == inp.y).mean())
    if args.save_output:
        arrays = {"outputs": result.aligned_outputs(T).astype(np.float32), "predictions": preds}
        if inp.y is not None:
            arrays["labels"] = inp.y
        _save_npz(Path(args.save_output), arrays)
        summary["saved_output"] = str(args.save_output)
    emit(summary, args.json, _human)
    return 0


def _human(s: dict) -> str:
    lines = [f"{s['source']} on {s['target']}: {s['n_samples']} samples x {s['timesteps']} steps from {s['input']}"]
    if "accuracy" in s:
        lines.append(f"  accuracy {s['accuracy']:.4f}")
    lines.append(f"  {'node':<20} {'kind':<10} {'neurons':>9} {'spikes':>12} {'synops':>14} {'MACs':>12}")
    for layer in s["layers"]:
        lines.append(f"  {layer['name']:<20} {layer['kind']:<10} {layer['neurons']:>9} {layer['spikes']:>12} "
                     f"{layer['synops']:>14} {layer['macs']:>12}")
    lines.append(f"  total spikes {s['total_spikes']}, synaptic ops {s['total_synops']}, MACs {s['total_macs']}, "
                 f"wall {s['wall_s']:.3f} s (build {s['build_s']:.3f} s)")
    lines += [f"  warning: {w}" for w in s.get("info", {}).get("warnings", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run("snn-deploy", _main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

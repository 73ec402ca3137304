"""``snn-deploy``: run a model or a NIR graph on a target and report outputs, accuracy and operation counts.

The source is a model file (``MODEL.pt``, exported to NIR in memory) or a NIR graph (``GRAPH.nir``). The input
is a data set's test split, encoded with the encoder recorded in the graph (``--dataset``; graphs without one get
the analog values at every step), or an array (``--input X.npy``, ``[T, ...]`` or ``[B, T, ...]``, spikes or
currents). Targets: torch (snnkit's executor, the reference; CUDA when available), norse, snntorch, lava,
loihi-emu, and any registered with ``snnkit.deploy.register_target`` or the ``snnkit.targets`` entry points.

JSON (``--json``): target, source, input, n_samples, timesteps, accuracy (with labels), layers (per node:
name, kind, neurons, spikes, synops, macs, neuron_updates), total_spikes, total_synops, total_macs,
total_neuron_updates, wall_s, build_s, delay, info. ``--save-output OUT.npz`` stores ``outputs [B, T, C]``
(and ``predictions``, ``labels`` when known).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from snnkit.cli.common import add_json_flag, check_data_dir, either, emit, run, sample_session


def parser() -> argparse.ArgumentParser:
    from snnkit.deploy.base import target_names
    from snnkit.graph.conventions import IF_CONVENTIONS, RESETS

    p = argparse.ArgumentParser(prog="snn-deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="MODEL.pt|GRAPH.nir", help="model file (snn-train) or NIR graph")
    p.add_argument("--target", required=True, help=" | ".join(target_names()))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="run on this data set's test split (encoded as the graph says)")
    src.add_argument("--input", metavar="X.npy", help="run on this array: [T, ...] or [B, T, ...]")
    p.add_argument("--limit", type=int, help="with --dataset: the first N test samples")
    p.add_argument("--data-dir", help="with --dataset: folder of data sets read from files")
    p.add_argument("--timesteps", type=int, help="steps T (default: the graph's metadata; required otherwise)")
    p.add_argument("--dt", type=float,
                   help="step length in seconds (default: the graph's; 1e-4 for graphs without one)")
    p.add_argument("--reset", choices=RESETS, help="reset mode of every spiking node (NIR has none; default: the "
                   "graph's snnkit metadata, else zero); e.g. subtract for a snnTorch network with its default reset")
    p.add_argument("--if-convention", choices=IF_CONVENTIONS,
                   help="how an IF integrates (NIR's IF has no dt): per-step v += r I (snnkit, Norse, snnTorch) or "
                        "ode v += dt r I (SpikingJelly); default auto: ode when every IF has r = 1/dt")
    p.add_argument("--device", default="auto", help="torch and loihi-emu targets: cpu | cuda | auto (default auto); "
                   "the others run on the CPU")
    p.add_argument("--batch-size", type=int, help="samples per call (default: the target's; 256 on torch, norse and "
                   "snntorch, 512 on loihi-emu)")
    p.add_argument("--retries", type=int, metavar="N", help="lava: run a worker that failed (crashed, timed out, lost "
                   "a runtime process) again, up to N times (default 0)")
    p.add_argument("--save-output", metavar="OUT.npz", help="write the output spikes [B, T, C] here")
    p.add_argument("--distributed", action="store_true", help="one of several processes started by torchrun "
                   "(torchrun --nproc-per-node N -m snnkit.cli.deploy ... --distributed): each runs its share of the "
                   "samples on the target (lava: one worker per process), rank 0 gathers them and writes one "
                   "result, equal to one process's (times excepted: the slowest process's)")
    add_json_flag(p)
    return p


def load_graph(source: str):
    """A NIR graph from a ``.nir`` file, or from a model file via ``to_nir``."""
    from snnkit.graph import read_nir

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


def check_target_flags(target: str, **given) -> None:
    """Refuse a target option (``device=``, ``batch_size=``, ...: the value of its flag, None when not given)
    where the target would ignore it, naming the targets that take it. Targets without a device option run on
    the CPU, so ``--device cpu`` (or ``auto``) suits every one."""
    from snnkit.deploy.base import accepted_options, target_class, target_names

    accepted = accepted_options(target_class(target))
    for key, value in given.items():
        if value is None or (key == "device" and value in ("cpu", "auto")) or key in accepted:
            continue
        takers = [t for t in target_names() if key in accepted_options(target_class(t))]
        raise ValueError(f"--{key.replace('_', '-')} needs --target {either(takers)} ({target} does not take it)")


def _main(args: argparse.Namespace) -> int:
    with sample_session(args, "snn-deploy"):
        return _deploy(args)


def _deploy(args: argparse.Namespace) -> int:
    from snnkit import distributed
    from snnkit.atomic import save_npz
    from snnkit.deploy.base import TargetResult, make_target
    from snnkit.deploy.inputs import dataset_input, load_array
    from snnkit.graph import DeployError, flatten_graph, graph_metadata, input_shape, output_size
    from snnkit.graph.errors import first_line

    source = str(args.source)

    def located(exc: Exception) -> Exception:
        msg = first_line(exc)
        return type(exc)(msg if msg.startswith(source) else f"{source}: {msg}")

    options = dict(device=args.device, dt=args.dt, batch_size=args.batch_size, reset=args.reset,
                   if_convention=args.if_convention, retries=args.retries)
    check_target_flags(args.target, **options)
    check_data_dir(args.data_dir, args.dataset)
    target = make_target(args.target, **options)
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
                                data_dir=args.data_dir, classes=output_size(graph))
        except DeployError as exc:
            raise located(exc) from None
    else:
        inp = load_array(args.input, shape, args.timesteps)
    lo, hi = distributed.shard(len(inp.x))
    if hi == lo:
        raise ValueError(f"--distributed: {len(inp.x)} samples for {distributed.world()} processes (at least one each)")
    try:
        result = target.run(graph, inp.x[lo:hi])
    except (DeployError, ValueError) as exc:
        raise located(exc) from None
    results = distributed.gather(result)
    if results is None:  # another rank than 0: rank 0 writes the result
        return 0
    result = TargetResult.concat(results, summed=target.summed_info)
    T = inp.timesteps
    summary = result.summary()
    summary.update(source=source, input=inp.source, timesteps=T)
    if inp.encoder is not None:
        summary["encoder"] = inp.encoder
    preds = result.predictions(T)
    if inp.y is not None:
        summary["accuracy"] = float((preds == inp.y).mean())
    if args.save_output:
        arrays = {"outputs": result.aligned_outputs(T).astype(np.float32), "predictions": preds}
        if inp.y is not None:
            arrays["labels"] = inp.y
        save_npz(Path(args.save_output), arrays)
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

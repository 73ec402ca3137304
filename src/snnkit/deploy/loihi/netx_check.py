"""Verify an exported netx file and measure what it costs (host side: the torch emulator, and Lava in its worker).

The file handed to Loihi 2 users must be the one that was checked. :func:`verify_netx` therefore

1. reads the file back into the integers lava-dl's netx gives Lava (:func:`~snnkit.deploy.loihi.netx_read.read_netx`),
2. runs them on ``loihi-emu`` and, when the Lava environment has lava-dl, loads the file with lava-dl's own
   ``netx.hdf5.Network`` on Lava's fixed-point simulation (:func:`snnkit.deploy.lava.target.run_netx`) and
   compares every layer's spikes, bit for bit,
3. says where the file's integers differ from the lava target's (weight exponent 0 where the lava target
   uses finer exponents, biases rounded to netx's ``bias << 6``) and measures what that costs on the probe:
   accuracy (and agreement) of the netx file beside the lava target's, split by cause.

Where no file could be written because netx cannot carry the network (reset by subtraction), it measures the
closest network netx can carry (reset to zero, exponent 0, netx's biases) the same way, so the report says
what a netx file would cost.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from snnkit.deploy.loihi.graph import LoihiGraph
from snnkit.deploy.loihi.netx import netx_fit, write_netx
from snnkit.deploy.loihi.netx_read import read_netx

LAVA_SAMPLES = 16


def emulate(lg: LoihiGraph, xi: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Every layer's spikes ``[B, T + delay, n]`` (uint8; a readout's potential, int32) from ``loihi-emu`` on
    input integers ``xi``."""
    import torch

    from snnkit.deploy.loihi.emulator import LoihiEmulator, to_numpy

    emu = LoihiEmulator(lg, device="cpu")
    chunks: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, xi.shape[0], batch_size):
            out = to_numpy(lg, emu.run(torch.from_numpy(xi[start:start + batch_size].astype(np.float64)),
                                       encoded=True))
            for name, r in out.items():
                chunks.setdefault(name, []).append(r)
    return {name: np.concatenate(c) for name, c in chunks.items()}


def predictions(lg: LoihiGraph, rasters: dict[str, np.ndarray], timesteps: int) -> np.ndarray:
    """Class per sample, as ``TargetResult.predictions``: argmax of the output layer's aligned spike counts."""
    out = rasters[lg.output][:, lg.delay:lg.delay + timesteps]
    return out.reshape(out.shape[0], out.shape[1], -1).sum(axis=1).argmax(axis=1)


def same_parameters(a: LoihiGraph, b: LoihiGraph) -> list[str]:
    """Where the integer networks ``a`` and ``b`` compute differently (empty: they compute the same)."""
    ia, ib = a.input, b.input
    if (ia.mode, ia.scale, ia.max_int, ia.message_bits, tuple(ia.shape)) != \
            (ib.mode, ib.scale, ib.max_int, ib.message_bits, tuple(ib.shape)):
        return ["input coding"]
    la, lb = sorted(a.layers, key=lambda l: l.depth), sorted(b.layers, key=lambda l: l.depth)
    if [(l.name, tuple(l.shape), l.depth) for l in la] != [(l.name, tuple(l.shape), l.depth) for l in lb]:
        return ["layer structure"]
    out = []
    for x, y in zip(la, lb):
        if (x.vth, x.du, x.dv, x.reset) != (y.vth, y.du, y.dv, y.reset):
            out.append(f"layer {x.name!r}: threshold, decays or reset")
        n = int(np.count_nonzero(x.bias_int().reshape(-1) != y.bias_int().reshape(-1)))
        if n:
            out.append(f"layer {x.name!r}: {n} of {x.size} biases")
    key = lambda p: (p.dst, p.recurrent)  # noqa: E731 - one feed-forward and at most one recurrent per layer
    pa, pb = sorted(a.projections, key=key), sorted(b.projections, key=key)
    if [key(p) for p in pa] != [key(p) for p in pb]:
        return out + ["projection structure"]
    for p, q in zip(pa, pb):
        if p.kind == "conv" or q.kind == "conv":
            same = (p.kind == q.kind and np.array_equal(p.effective_weight(), q.effective_weight())
                    and (p.stride, p.padding, p.dilation, p.groups) == (q.stride, q.padding, q.dilation, q.groups))
        else:
            same = np.array_equal(_exact(p), _exact(q))
        if not same:
            out.append(f"projection into {p.dst!r}{' (recurrent)' if p.recurrent else ''}: weights")
    return out


def _exact(p) -> np.ndarray:
    """A dense projection's weights as the integers its messages sum (when the exponent's floor shift is exact),
    else its mantissas and exponent (which then must match as they are)."""
    w = p.effective_weight()
    if p.weight_exp >= 0:
        return w << p.weight_exp
    s = -p.weight_exp
    if np.any(w % (1 << s)):
        return np.concatenate([w.reshape(-1), [p.weight_exp, -1]])
    return w >> s


def _acc(pred: np.ndarray, labels) -> float | None:
    return None if labels is None else float(np.mean(pred == np.asarray(labels)))


def _closest_netx(graph, lava_lg: LoihiGraph, options: dict, source: str
                  ) -> tuple[LoihiGraph | None, list[str], list[tuple[str, LoihiGraph]]]:
    """The network the closest netx file would run, what it changes, and the graphs in between (each cause's
    name and the graph once it is applied), or (None, [], []) when no netx file can carry the network."""
    from snnkit.deploy.loihi.quantize import quantize

    changes, steps = [], []
    alt = lava_lg
    if any(p.weight_exp != 0 for p in lava_lg.projections):
        alt = quantize(graph, source=source, **{**options, "weight_exp_range": (0, 0)})
        changes.append("weight exponent 0")
        steps.append(("weight_exponent_0", alt))
    if any(layer.reset == "subtract" for layer in alt.layers):
        alt = dataclasses.replace(alt, layers=[dataclasses.replace(layer, reset="zero") for layer in alt.layers])
        changes.append("reset to zero instead of by subtraction")
        steps.append(("reset_to_zero", alt))
    if netx_fit(alt):
        return None, [], []
    with tempfile.TemporaryDirectory(prefix="snnkit-netx-") as d:
        notes = write_netx(alt, Path(d) / "closest.h5")
        closest = read_netx(Path(d) / "closest.h5")
    if same_parameters(closest, alt):
        changes.append("biases rounded to multiples of 64" if any("rounded to multiples of 64" in n for n in notes)
                       else "netx's encoding")
        steps.append(("netx_biases_and_encoding", closest))
    return closest, changes, steps


def verify_netx(graph, options: dict, lava_lg: LoihiGraph, netx_file: str | Path | None, x: np.ndarray,
                labels=None, *, reason: str | None = None, reference_accuracy: float | None = None,
                source: str = "graph", python=None, run_on_lava: bool = True,
                lava_samples: int = LAVA_SAMPLES) -> tuple[dict, list[str], list[str]]:
    """Check the netx file ``netx_file`` on the encoded probe ``x [B, T, ...]``; ``(details, notes, warnings)``.

    graph, options: the float graph as the target resolved it and its quantisation options (to measure each
    cause of a difference); lava_lg: the lava target's exported integers; labels: the probe's classes (for
    accuracies) or None; reason: why no file was written (``netx_file`` None); python: the Lava interpreter
    (default: the one the lava target uses); run_on_lava: False skips lava-dl (the emulator checks remain);
    lava_samples: how many of the probe samples lava-dl runs on Lava (Lava's Python models run a few
    samples per second; the emulator runs them all).
    """
    x = np.asarray(x)
    steps = x.shape[1]
    notes: list[str] = []
    warnings: list[str] = []
    lava_pred = predictions(lava_lg, emulate(lava_lg, lava_lg.input.encode(x)[0]), steps)
    lava_acc = _acc(lava_pred, labels)
    ref = {} if reference_accuracy is None else {"reference_accuracy": reference_accuracy}
    if netx_file is None:
        closest, changes, chain = _closest_netx(graph, lava_lg, options, source)
        details = {"written": False, "reason": reason}
        if closest is None:
            return details, notes, warnings
        pred = predictions(closest, emulate(closest, closest.input.encode(x)[0]), steps)
        acc = _acc(pred, labels)
        details["closest"] = {"changes": changes, "samples": int(len(x)), "accuracy": acc,
                              "lava_target_accuracy": lava_acc, **ref,
                              "accuracy_cost": None if acc is None else lava_acc - acc,
                              "predictions_equal_to_lava_target": float(np.mean(pred == lava_pred))}
        if labels is not None:  # each change's share, applied one after the other
            costs, before = {}, lava_acc
            for cause, g in chain:
                after = acc if g is closest else _acc(predictions(g, emulate(g, g.input.encode(x)[0]), steps), labels)
                costs[cause], before = before - after, after
            details["closest"]["costs"] = costs
        warnings.append(f"netx: no file written ({reason}); the closest network netx can carry "
                        f"({', '.join(changes)}) {_measured(details['closest'], len(x))}")
        return details, notes, warnings

    netx_lg = read_netx(netx_file)
    differences = same_parameters(netx_lg, lava_lg)
    xi = netx_lg.input.encode(x)[0]
    rasters = emulate(netx_lg, xi)
    pred = predictions(netx_lg, rasters, steps)
    acc = _acc(pred, labels)
    details = {"written": True, "file": str(netx_file), "same_parameters_as_lava_target": not differences,
               "differences": differences, "netx_reencoding": netx_lg.report["netx"]["notes"],
               "samples": int(len(x)), "accuracy": acc, "lava_target_accuracy": lava_acc, **ref,
               "accuracy_cost": None if acc is None else lava_acc - acc,
               "predictions_equal_to_lava_target": float(np.mean(pred == lava_pred))}
    if differences:
        causes, costs = _causes(graph, options, lava_lg, netx_lg, lava_acc, acc, x, labels, source)
        details["causes"] = causes
        if costs:
            details["costs"] = costs
        warnings.append(f"netx: the file runs other integers than the lava target ({'; '.join(causes)}): it "
                        f"{_measured(details, len(x))}")
    n = min(len(x), lava_samples)
    details["lava_dl"] = _on_lava(netx_file, netx_lg, xi[:n], {k: r[:n] for k, r in rasters.items()},
                                  None if labels is None else np.asarray(labels)[:n], steps, python, run_on_lava)
    lava_dl = details["lava_dl"]
    if not lava_dl["ran"]:
        notes.append(f"netx: not run with lava-dl on Lava: {lava_dl['reason']}")
    elif not lava_dl["identical"]:
        warnings.append(f"netx: lava-dl's netx on Lava differs from loihi-emu on the netx parameters in "
                        f"{lava_dl['differing_values']} of {lava_dl['values']} spike values")
    return details, notes, warnings


def _measured(d: dict, n: int) -> str:
    if d.get("accuracy") is None:
        return f"agrees with the lava target's predictions on {100 * d['predictions_equal_to_lava_target']:.1f} % " \
               f"of the {n} probe samples"
    ref = f", reference {100 * d['reference_accuracy']:.1f} %" if "reference_accuracy" in d else ""
    return (f"reaches {100 * d['accuracy']:.1f} % on the {n} probe samples vs the lava target's "
            f"{100 * d['lava_target_accuracy']:.1f} %{ref} (same prediction on "
            f"{100 * d['predictions_equal_to_lava_target']:.1f} %)")


def _causes(graph, options, lava_lg, netx_lg, lava_acc, netx_acc, x, labels, source) -> tuple[list[str], dict]:
    """Why the netx file's integers differ from the lava target's, and the accuracy each cause costs: the
    exponent-0 re-quantisation (``weight_exponent_0``), then netx's bias granularity and weight re-encoding
    (``netx_biases_and_encoding``)."""
    from snnkit.deploy.loihi.quantize import quantize

    causes, costs = [], {}
    mid, mid_acc = lava_lg, lava_acc
    exps = sorted({p.weight_exp for p in lava_lg.projections})
    if exps != [0]:
        causes.append(f"re-quantised with weight exponent 0 (the lava target uses exponents {exps[0]}..{exps[-1]})")
        mid = quantize(graph, source=source, **{**options, "weight_exp_range": (0, 0)})
        if labels is not None:
            mid_acc = _acc(predictions(mid, emulate(mid, mid.input.encode(x)[0]), x.shape[1]), labels)
            costs["weight_exponent_0"] = lava_acc - mid_acc
    rest = same_parameters(netx_lg, mid)
    if any("biases" in r for r in rest):
        causes.append("biases rounded to multiples of 64 (netx applies bias << 6)")
    if any("weights" in r for r in rest):
        causes.append("netx's weight re-encoding")
    if any(not ("biases" in r or "weights" in r) for r in rest):
        causes.append("; ".join(r for r in rest if not ("biases" in r or "weights" in r)))
    if labels is not None and rest:
        costs["netx_biases_and_encoding"] = mid_acc - netx_acc
    return causes, costs


def _on_lava(netx_file, netx_lg, xi, rasters, labels, steps, python, run_on_lava) -> dict:
    """lava-dl's netx on Lava against ``rasters`` (loihi-emu on the netx parameters), every layer."""
    from snnkit.deploy.lava import env as lava_env
    from snnkit.deploy.lava.target import find_lava_python, run_netx
    from snnkit.graph import DeployError

    if not run_on_lava:
        return {"ran": False, "reason": "not requested"}
    try:
        python = Path(python) if python else find_lava_python()
    except DeployError as e:
        return {"ran": False, "reason": str(e)}
    if not lava_env.has_netx(python):
        return {"ran": False, "reason": f"lava-dl is not installed in the Lava environment of {python}; run "
                                        f"`{lava_env.CREATE_COMMAND}` to upgrade it"}
    try:
        got, info = run_netx(netx_file, netx_lg, xi, python=python)
    except DeployError as e:
        return {"ran": False, "reason": str(e)}
    differing = sum(int(np.count_nonzero(got[name] != rasters[name])) for name in rasters)
    values = sum(int(r.size) for r in rasters.values())
    out = {"ran": True, "identical": differing == 0, "differing_values": differing, "values": values,
           "spikes": sum(int(r.sum(dtype=np.int64)) for r in got.values()),
           "layers": len(rasters), "samples": int(xi.shape[0]), "imports": info.get("imports"),
           "run_s": info.get("run_s")}
    acc = _acc(predictions(netx_lg, got, steps), labels)
    if acc is not None:
        out["accuracy"] = acc
    return out

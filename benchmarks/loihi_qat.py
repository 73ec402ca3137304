"""Quantisation-aware fine-tuning for Loihi 2 on digits, measured on the whole test split (360 samples).

For each model (trained here with ``snn-train`` unless ``WORK/NAME/model.pt`` exists): the digits MLP with the
defaults (seeds 0-3), the ConvNet (15 epochs) and the 90 % sparse converted MLP (the robustness benchmark's
settings), this script

1. splits the float -> Loihi difference into its sources: the float network of the quantised graph (threshold
   units, run by the ``torch`` reference target) with one quantity at a time taken from the integers (the
   graded input, the weights' mantissas, the decays, the biases), then all four, then the emulator itself,
   which adds what is left (``v``'s rounding toward zero, floor shifts, wraps);
2. fine-tunes it with ``snn-train --init MODEL --qat loihi --epochs 5 --lr 1e-4`` (and, for the converted
   model, with ``--method pgd-at:eps=0.1,steps=5`` too), and, as a control, the same without ``--qat``;
3. measures float (``torch``), ``loihi-emu`` and Lava (fixed_pt; QAT runs only) accuracy before and after.

Writes ``benchmarks/results/loihi_qat.json`` and the tables between ``<!-- loihi-qat:begin -->`` and
``<!-- loihi-qat:end -->`` in docs/loihi.md. About 25 min on 2 CPU cores (``--no-lava``: about 15).

    .venv/bin/python benchmarks/loihi_qat.py [--work DIR] [--no-lava] [--models mlp-s0,convnet]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nir
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "loihi.md"
RESULT = ROOT / "benchmarks" / "results" / "loihi_qat.json"
CONVERT = ["--model", "mlp", "--pipeline", "convert", "--neuron", "if", "--reset", "subtract", "--surrogate",
           "triangle:gamma=1", "--sparsity", "0.9", "--ann-method", "trades:beta=6,eps=0.1,steps=5,alpha=0.025",
           "--method", "pgd-at:eps=0.1,steps=5", "--ann-epochs", "30", "--prune", "hydra", "--prune-epochs", "10",
           "--ann-finetune-epochs", "10", "--ann-lr", "2e-3", "--epochs", "30"]
MODELS = {**{f"mlp-s{s}": ["--model", "mlp", "--epochs", "30", "--seed", str(s)] for s in range(4)},
          "convnet": ["--model", "convnet", "--epochs", "15"],
          "converted-90": CONVERT}
FINE_TUNE = ["--epochs", "5", "--lr", "1e-4"]
QAT = ["--qat", "loihi", *FINE_TUNE]
PGD_AT = ["--method", "pgd-at:eps=0.1,steps=5"]
RUNS = [run for name in MODELS for run in ((name, "qat", QAT), (name, "none (control)", FINE_TUNE))] + \
    [("converted-90", "qat + pgd-at", [*QAT, *PGD_AT]), ("converted-90", "pgd-at (control)", [*FINE_TUNE, *PGD_AT])]
"""(model, label, snn-train options on top of ``--init MODEL``): QAT, and the same fine-tuning without it."""
SOURCES = ("input", "weights", "decays", "biases")


def snn_train(args: list[str], out: Path) -> None:
    if not (out / "model.pt").is_file():
        subprocess.run([str(BIN / "snn-train"), "--dataset", "digits", *args, "--out", str(out), "--no-progress",
                        "--threads", "1"], check=True, capture_output=True, text=True)


def _matrix(p, w: np.ndarray) -> np.ndarray:
    """Projection ``p``'s map as a ``[n_dst, n_src]`` matrix, for weights ``w`` in its own layout."""
    if p.kind != "conv":
        return w
    from snnkit.graph.ops import apply_node

    n = int(np.prod(p.in_shape))
    conv = nir.Conv2d(input_shape=np.array(p.in_shape[1:]), weight=w, stride=p.stride, padding=p.padding,
                      dilation=p.dilation, groups=p.groups, bias=np.zeros(w.shape[0]))
    return apply_node(conv, np.eye(n).reshape(n, *p.in_shape)).reshape(n, -1).T


def float_network(lg, quantised: set[str]) -> nir.NIRGraph:
    """The float network a :class:`LoihiGraph` approximates (threshold 1, weights in threshold units, every layer
    flat and every stage a matrix), with the quantities in ``quantised`` (``weights``, ``decays``, ``biases``)
    taken from its integers instead."""
    shape = np.array(lg.input.shape)
    nodes = {lg.input.name: nir.Input(input_type=shape),
             "flat": nir.Flatten(input_type={"input": shape}, start_dim=0, end_dim=-1)}
    edges, reset = [(lg.input.name, "flat")], {}
    for layer in lg.layers:
        vth = float(layer.vth)
        bias = (layer.bias_int() / (64.0 * vth) if "biases" in quantised else layer.bias_f).reshape(-1)
        for k, p in enumerate(lg.into(layer.name)):
            q = lg.input.scale if p.src == lg.input.name else 1.0
            if "weights" in quantised:
                w = p.effective_weight() * (1.0 if p.kind == "conv" else 2.0 ** p.weight_exp) * q / vth
            else:
                w = p.weight_f / q
            nodes[p.name] = nir.Affine(weight=_matrix(p, w), bias=bias if k == 0 else 0 * bias)
            edges += [("flat" if p.src == lg.input.name else p.src, p.name), (p.name, layer.name)]
        one = np.ones(layer.size)
        if layer.kind == "IF":
            nodes[layer.name] = nir.IF(r=one, v_threshold=one, v_reset=0 * one)
        else:
            keep = 1 - (layer.dv / 4096 if "decays" in quantised else layer.dv_f)
            nodes[layer.name] = nir.LIF(tau=lg.dt / (1 - keep) * one, r=one / (1 - keep), v_leak=0 * one,
                                        v_threshold=one, v_reset=0 * one)
        reset[layer.name] = layer.reset
    nodes["output"] = nir.Output(output_type=np.array([lg.layer(lg.output).size]))
    edges.append((lg.output, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": lg.dt, "reset": reset}, type_check=False)


def sources(model_path: Path) -> dict:
    """Predictions and output spikes that each rounding alone changes, against the float reference."""
    import snnkit
    from snnkit import data
    from snnkit.deploy.base import make_target
    from snnkit.deploy.inputs import encode
    from snnkit.export import to_nir

    graph = to_nir(snnkit.load(model_path))
    x = encode(data.load("digits", "test")[0].numpy(), graph.metadata)
    steps = x.shape[1]
    emu = make_target("loihi-emu")
    lg = emu.quantised(graph, x)
    spec = lg.input
    x_int = np.clip(np.rint(x * spec.scale), -spec.max_int, spec.max_int) / spec.scale
    torch_target = make_target("torch")
    ref = torch_target.run(float_network(lg, set()), x)

    def changed(result) -> dict:
        out = result.aligned_outputs(steps)
        return {"predictions": int(np.sum(result.predictions(steps) != ref.predictions(steps))),
                "output_spikes": float(np.mean(out != ref.outputs))}

    rows = {s: changed(torch_target.run(float_network(lg, {s} - {"input"}), x_int if s == "input" else x))
            for s in SOURCES}
    rows["all four"] = changed(torch_target.run(float_network(lg, set(SOURCES)), x_int))
    rows["loihi-emu"] = changed(emu.run(graph, x))
    rows["float_network_equals_model"] = bool(np.array_equal(ref.outputs,
                                                             torch_target.run(graph, x).outputs))
    return rows


def accuracies(model_path: Path, lava: bool) -> dict:
    from snnkit import data, load
    from snnkit.train.qat import deployed_accuracy

    x, y = data.load("digits", "test")
    model = load(model_path)
    acc = {t: deployed_accuracy(model, x, y, t) for t in ("torch", "loihi-emu")}
    if lava:
        acc["lava"] = deployed_accuracy(model, x, y, "lava")
    return acc


def table(result: dict) -> str:
    pct = lambda v: f"{100 * v:.2f}" if v is not None else "-"  # noqa: E731
    lines = ["| model | fine-tuning | float | loihi-emu | Lava | float after | loihi-emu after | Lava after | "
             "Loihi after - float before (points) | time (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        b, a = r["before"], r["after"]
        ref = a.get("lava", a["loihi-emu"])
        lines.append(f"| {r['model']} | {r['qat']} | {pct(b['torch'])} | {pct(b['loihi-emu'])} | {pct(b.get('lava'))} "
                     f"| {pct(a['torch'])} | {pct(a['loihi-emu'])} | {pct(a.get('lava'))} | "
                     f"{100 * (ref - b['torch']):+.2f} | {r['time_s']:.0f} |")
    lines += ["", "Where the float -> Loihi difference comes from (before QAT; predictions and output spike values "
              "that differ from the float network, one rounding at a time):", "",
              "| model | " + " | ".join(list(SOURCES) + ["all four", "loihi-emu"]) + " |",
              "|---|" + "---|" * (len(SOURCES) + 2)]
    for name, rows in result["sources"].items():
        cells = [f"{rows[s]['predictions']} / {100 * rows[s]['output_spikes']:.2f} %"
                 for s in (*SOURCES, "all four", "loihi-emu")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_doc(text: str, note: str) -> None:
    s = DOC.read_text()
    begin, end = "<!-- loihi-qat:begin -->", "<!-- loihi-qat:end -->"
    head, rest = s.split(begin, 1)
    _, tail = rest.split(end, 1)
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(head + begin + "\n" + note + "\n\n" + text + "\n" + end + tail)
    os.replace(tmp, DOC)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/snnkit-loihi-qat"), help="where models are kept")
    p.add_argument("--no-lava", action="store_true", help="skip the Lava runs")
    p.add_argument("--models", help="comma-separated subset of " + ", ".join(MODELS))
    args = p.parse_args(argv)
    chosen = args.models.split(",") if args.models else list(MODELS)
    t_start = time.time()
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "qat": " ".join(QAT),
              "runs": [], "sources": {}}
    for name in chosen:
        snn_train(MODELS[name], args.work / name)
        result["sources"][name] = sources(args.work / name / "model.pt")
        print(name, result["sources"][name], flush=True)
    before = {name: accuracies(args.work / name / "model.pt", not args.no_lava) for name in chosen}
    for name, label, options in RUNS:
        if name not in chosen:
            continue
        start = args.work / name / "model.pt"
        out = args.work / (name + "-" + "".join(c if c.isalnum() else "-" for c in label).strip("-"))
        snn_train(["--init", str(start), *options], out)
        lava = "qat" in label and not args.no_lava
        row = {"model": name, "qat": label, "time_s": json.loads((out / "metrics.json").read_text())["train_time_s"],
               "before": before[name], "after": accuracies(out / "model.pt", lava)}
        result["runs"].append(row)
        print(row, flush=True)
    RESULT.parent.mkdir(exist_ok=True)
    tmp = RESULT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, RESULT)
    text = table(result)
    print(text)
    note = (f"Measured {result['date']} on {result['cpus']} CPU cores (shared) by `benchmarks/loihi_qat.py` "
            f"({(time.time() - t_start) / 60:.0f} min): digits test split, 360 samples, accuracy in %; QAT: "
            f"`snn-train --init MODEL.pt {' '.join(QAT)}`; control: the same without `--qat`. \"Loihi after\" is "
            f"Lava where it ran, else loihi-emu (bit-identical).")
    write_doc(text, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Do NIR graphs written by other tools run the same on every target?

Two graphs of the NIR paper, kept in the project's test data (``tests/data/nir-zoo``, BSD-3 licence beside them;
this example reads them from the source checkout, or takes ``--graphs`` of your own):

- ``cnn_sinabs.nir``: the paper's N-MNIST CNN exported by sinabs (Conv2d / IF / SumPool2d / Flatten / Affine,
  input 2 x 34 x 34, 10 outputs);
- ``braille_noDelay_bias_zero.nir``: the paper's Braille reading network (recurrent CubaLIF, 12 -> 38 -> 7).

Each graph runs on every registered target that says it is available here (``Target.check_available``; the
others are listed with their reason) on the same random spike input (Bernoulli, p = 0.3 per input and step, a
fixed seed: no data set ships for these graphs), fresh state per sample. Every target's output spikes are
compared with the torch reference on the reference time axis (Loihi's pipeline delay removed), and its counts
are listed per sample: spikes, synaptic operations (spike-fed connections) and neuron updates. The Loihi
targets (``lava``, ``loihi-emu``) run the graph quantised to Loihi 2's fixed point (docs/loihi.md), so their
spikes may differ from the float reference; their neuron updates include the steps of the pipeline delay.

Prints one table over graphs and targets; writes ``OUT/outputs_<graph>.png`` (output spike count per output
neuron, summed over the samples, per target).

    python examples/third_party_nir.py --out runs/ex-nir
    python examples/third_party_nir.py --graphs my.nir --out runs/ex-nir
    python examples/third_party_nir.py --quick --out /tmp/ex
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from snnkit.cli.common import run
from snnkit.deploy import DeployError, get_target, target_names
from snnkit.deploy.base import REFERENCE
from snnkit.graph import input_shape, read_nir
from snnkit.report.compare import agreement
from snnkit.report.writers import markdown_table

ZOO = Path(__file__).resolve().parents[1] / "tests" / "data" / "nir-zoo"
GRAPHS = [ZOO / "cnn_sinabs.nir", ZOO / "braille_noDelay_bias_zero.nir"]
P_SPIKE = 0.3


def spikes(graph, samples: int, steps: int, seed: int = 0) -> np.ndarray:
    """Bernoulli spike input ``[samples, steps, *input shape]`` (float32 0/1)."""
    shape = (samples, steps, *input_shape(graph))
    return (np.random.default_rng(seed).random(shape) < P_SPIKE).astype(np.float32)


def available_targets() -> tuple[list[str], list[list]]:
    """The targets that can run here and a row for each one that cannot."""
    ok, missing = [], []
    for name in target_names():
        try:
            get_target(name).check_available()
            ok.append(name)
        except DeployError as exc:
            missing.append(["(all)", name, f"unavailable: {exc}"] + [""] * 6)
    return ok, missing


def compare(path: Path, targets: list[str], samples: int, steps: int, out: Path) -> list[list]:
    """Run the graph at ``path`` on every target; a table row per target, and the output figure."""
    graph = read_nir(path)
    x = spikes(graph, samples, steps)
    rows, counts = [], {}
    reference = get_target(REFERENCE).run(graph, x)  # a graph the reference cannot run is bad input
    ref = reference.aligned_outputs(steps)
    for name in targets:
        try:
            r = reference if name == REFERENCE else get_target(name).run(graph, x)
        except DeployError as exc:
            rows.append([path.stem, name, f"cannot run: {exc}"] + [""] * 6)
            continue
        outputs = r.aligned_outputs(steps)
        a = agreement(outputs, ref)
        counts[name] = outputs.sum(axis=(0, 1))
        rows.append([path.stem, name, "ran", f"{a.output_spikes:.4f}", f"{a.predictions:.2f}",
                     f"{r.total_spikes / samples:,.0f}", f"{r.total_synops / samples:,.0f}",
                     f"{r.total_neuron_updates / samples:,.0f}", f"{r.wall_s:.2f}"])
    plot(counts, path.stem, out / f"outputs_{path.stem}.png")
    return rows


def plot(counts: dict[str, np.ndarray], title: str, path: Path) -> None:
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    width = 0.8 / max(len(counts), 1)
    for i, (name, c) in enumerate(counts.items()):
        ax.bar(np.arange(len(c)) + (i - (len(counts) - 1) / 2) * width, c, width, label=name)
    ax.set(xlabel="output neuron", ylabel="output spikes (all samples)", title=title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(g) for g in args.graphs] if args.graphs else GRAPHS
    samples, steps = (4, 20) if args.quick else (16, 100)
    targets, rows = available_targets()
    for path in paths:
        rows += compare(path, targets, samples, steps, out)
        print(f"{path.name}: {samples} samples x {steps} steps on {', '.join(targets)}", flush=True)
    print(f"\nOutputs vs the {REFERENCE} reference (equal spikes: fraction of output entries [B, T, C] equal; same "
          "class: argmax of the output spike counts) and counts per sample:\n")
    print(markdown_table(["graph", "target", "status", "equal output spikes", "same class", "spikes / sample",
                          "synops / sample", "neuron updates / sample", "wall s"], rows))
    print(f"\nwrote {', '.join(str(out / f'outputs_{p.stem}.png') for p in paths)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--graphs", nargs="+", metavar="GRAPH.nir", help="NIR files (default: cnn_sinabs and Braille)")
    p.add_argument("--quick", action="store_true", help="4 samples of 20 steps (default: 16 of 100)")
    p.add_argument("--out", required=True, help="output folder (figures)")
    return p


if __name__ == "__main__":
    raise SystemExit(run("third_party_nir", main, parser()))

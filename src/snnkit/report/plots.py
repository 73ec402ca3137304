"""The report's plots as PNG bytes (matplotlib's Agg canvas; no pyplot, no global backend change).

Each function takes the report data (``Report.data``, JSON-ready) and returns PNG bytes, or None when it has
nothing to draw (e.g. no attack results).
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _ok(data: dict) -> list[dict]:
    return [t for t in data["targets"] if t["status"] == "ok"]


def accuracy_plot(data: dict) -> bytes | None:
    """Accuracy per target (when labels exist) and prediction agreement with the reference."""
    ok = _ok(data)
    if not ok:
        return None
    names = [t["name"] for t in ok]
    series = []
    if data["data"]["labels"]:
        series.append(("accuracy", [t["accuracy"] for t in ok]))
    series.append((f"agreement with {data['reference']}", [t.get("agreement", {}).get("predictions", np.nan) for t in ok]))
    fig = Figure(figsize=(max(4.5, 1.3 * len(names) + 2), 3.4))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for i, (label, values) in enumerate(series):
        vals = np.array([np.nan if v is None else v for v in values], dtype=float)
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=label)
        ax.bar_label(bars, labels=[f"{v:.3f}" if np.isfinite(v) else "" for v in vals], fontsize=7, padding=1)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("fraction of samples")
    ax.set_title(f"Accuracy per target ({data['data']['n_samples']} samples)")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def spikes_plot(data: dict) -> bytes | None:
    """Spikes per sample for every spiking layer, one bar per target."""
    ok = _ok(data)
    neuron_layers = [layer["name"] for layer in ok[0]["layers"] if layer["neurons"]] if ok else []
    if not neuron_layers:
        return None
    fig = Figure(figsize=(max(5.0, 0.9 * len(neuron_layers) * len(ok) ** 0.5 + 3), 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(ok)
    x = np.arange(len(neuron_layers))
    for i, t in enumerate(ok):
        by = {layer["name"]: layer["spikes"] / t["n_samples"] for layer in t["layers"]}
        ax.bar(x + (i - (len(ok) - 1) / 2) * width, [by.get(n, np.nan) for n in neuron_layers], width, label=t["name"])
    ax.set_xticks(x, neuron_layers, rotation=20 if len(neuron_layers) > 4 else 0)
    ax.set_ylabel("spikes per sample")
    ax.set_title("Spikes per layer (all steps of each target)")
    ax.legend(fontsize=8)
    return _png(fig)


def energy_plot(data: dict) -> bytes | None:
    """Energy per sample per target under every available model (log scale); whiskers down to the lower
    bound where the model splits active/inactive neuron updates."""
    ok = _ok(data)
    models = [m for m, s in data["energy_models"].items() if s["available"]]
    if not ok or not models:
        return None
    fig = Figure(figsize=(max(6.0, 0.55 * len(models) * len(ok) + 2), 3.8))
    ax = fig.add_subplot()
    width = 0.8 / len(ok)
    x = np.arange(len(models))
    for i, t in enumerate(ok):
        hi = np.array([t["energy"][m]["per_sample_j"] for m in models])
        lo = np.array([t["energy"][m]["per_sample_j_min"] for m in models])
        ax.bar(x + (i - (len(ok) - 1) / 2) * width, hi, width, label=t["name"],
               yerr=np.vstack([hi - lo, np.zeros_like(hi)]), error_kw={"elinewidth": 0.8, "capsize": 2})
    ax.set_yscale("log")
    ax.set_xticks(x, models, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("energy per sample (J)")
    ax.set_title("Energy per sample, by target and energy model")
    ax.legend(fontsize=8)
    return _png(fig)


def raster_plot(data: dict, rasters: dict[str, dict[str, np.ndarray]]) -> bytes | None:
    """Spikes of sample 0 in every spiking layer (stacked), one panel per target, on each target's own steps."""
    names = [t["name"] for t in _ok(data) if t["name"] in rasters]
    if not names:
        return None
    fig = Figure(figsize=(3.0 * len(names) + 1, 3.8))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    delays = {t["name"]: t.get("delay", 0) for t in data["targets"]}
    for ax, name in zip(axes, names):
        offset, ticks, labels = 0, [], []
        for layer, spikes in rasters[name].items():
            t_idx, n_idx = np.nonzero(spikes)
            ax.scatter(t_idx, n_idx + offset, s=2, marker="|", linewidths=0.6)
            ticks.append(offset + spikes.shape[1] / 2)
            labels.append(layer)
            offset += spikes.shape[1]
            ax.axhline(offset - 0.5, color="0.8", linewidth=0.5)
        steps = max(s.shape[0] for s in rasters[name].values())
        ax.set_xlim(-0.5, steps - 0.5)
        ax.set_ylim(-0.5, offset - 0.5)
        ax.set_xlabel("step" + (f" (delay {delays[name]})" if delays.get(name) else ""))
        ax.set_title(name, fontsize=9)
        ax.set_yticks(ticks, labels, fontsize=7)
    fig.suptitle("Spike raster, sample 0 (neurons of every spiking layer)", fontsize=10)
    return _png(fig)


def robustness_plot(data: dict) -> bytes | None:
    """Robust accuracy against eps per attacked target (clean accuracy at eps 0; at each eps the strongest
    evaluation: the per-sample worst case over that file's attacks)."""
    curves = data.get("robustness_curves") or {}
    if not curves:
        return None
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    for target, pts in curves.items():
        label = "reference (the model itself)" if target == "reference" else target
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("eps")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("Robust accuracy vs eps (worst case over attacks)")
    ax.legend(fontsize=8)
    return _png(fig)


def all_plots(data: dict, rasters: dict[str, dict[str, np.ndarray]]) -> dict[str, bytes]:
    """Every plot that has something to draw, by file stem."""
    plots = {"accuracy": accuracy_plot(data), "spikes_per_layer": spikes_plot(data), "energy": energy_plot(data),
             "raster": raster_plot(data, rasters), "robustness": robustness_plot(data)}
    return {k: v for k, v in plots.items() if v is not None}


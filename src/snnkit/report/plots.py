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
    models = [m for m, s in data["energy_models"].items()
              if s["available"] and s.get("workload", "spiking") == "spiking"]
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


def pareto_plot(summary: dict) -> bytes | None:
    """Robust accuracy (or clean accuracy without attacks) against energy per inference, one point per model and
    target (the spiking rows under the headline spiking energy model, the twin rows under the headline GPU
    model), the Pareto front (lower energy, higher accuracy) drawn as a step line."""
    from snnkit.report.summary import pareto_front, pareto_points

    pts = pareto_points(summary)
    if not pts:
        return None
    models = list(dict.fromkeys(p["model"] for p in pts))
    targets = list(dict.fromkeys(p["target"] for p in pts))
    markers = "osD^v<>pPX*h"
    colours = [f"C{i % 10}" for i in range(len(models))]
    fig = Figure(figsize=(7.2, 4.6))
    ax = fig.add_subplot()
    for p in pts:
        ax.scatter(p["x"], p["y"], s=46, marker=markers[targets.index(p["target"]) % len(markers)],
                   color=colours[models.index(p["model"])], edgecolors="black" if p["kind"] == "twin" else "none",
                   linewidths=0.8, zorder=3)
    front = pareto_front([(p["x"], p["y"]) for p in pts])
    if front:
        fx = [pts[i]["x"] for i in front]
        fy = [pts[i]["y"] for i in front]
        ax.step(fx, fy, where="post", color="0.3", linestyle="--", linewidth=1.0, zorder=2, label="Pareto front")
    for i in front:
        ax.annotate(f"{pts[i]['model']} / {pts[i]['target']}", (pts[i]["x"], pts[i]["y"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (J, log scale)")
    ax.set_ylabel(pts[0]["y_is"])
    ax.set_ylim(-0.02, 1.05)
    head = summary["headline"]
    ax.set_title(f"Accuracy vs energy: spiking rows under {head['spiking']}, GPU twin under {head['twin']}",
                 fontsize=9)
    handles = [ax.scatter([], [], marker="o", color=c, label=m) for m, c in zip(models, colours)]
    handles += [ax.scatter([], [], marker=markers[i % len(markers)], color="0.5", label=t)
                for i, t in enumerate(targets)]
    handles += [h for h in ax.get_legend_handles_labels()[0] if h.get_label() == "Pareto front"]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def robustness_eps_plot(data: dict) -> bytes | None:
    """Accuracy against eps (clean accuracy at eps 0, then the worst case over the attacks at each eps), one
    panel per model, one line per attacked side (the reference, each target, the GPU twin)."""
    models = [m for m in data["models"] if m.get("robustness_curves")]
    if not models:
        return None
    fig = Figure(figsize=(min(4.2 * len(models), 14), 3.8))
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
    for ax, m in zip(axes, models):
        for side, pts in m["robustness_curves"].items():
            label = "reference (the model itself)" if side == "reference" else side
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=label,
                    linestyle="--" if side == "reference" else "-")
        ax.set_xlabel("eps")
        ax.set_title(m["label"], fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("accuracy (worst case over attacks)")
    fig.suptitle("Accuracy and robustness vs eps, per model and target", fontsize=10)
    return _png(fig)


def robustness_plot(data: dict) -> bytes | None:
    """Robust accuracy against eps per attacked target for one model (clean accuracy at eps 0; at each eps the
    strongest evaluation: the per-sample worst case over that file's attacks)."""
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


def slug(label: str) -> str:
    """A model label as a file-name part (letters, digits, ``-``, ``_`` and ``.``)."""
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in label).strip("-.")
    return out or "model"


def model_plots(model: dict, energy_models: dict, rasters: dict[str, dict[str, np.ndarray]]) -> dict[str, bytes]:
    """One model's plots (accuracy, spikes per layer, energy, raster), by file stem."""
    data = dict(model, energy_models=energy_models)
    plots = {"accuracy": accuracy_plot(data), "spikes_per_layer": spikes_plot(data), "energy": energy_plot(data),
             "raster": raster_plot(data, rasters)}
    return {k: v for k, v in plots.items() if v is not None}


def all_plots(data: dict, rasters: dict[str, dict[str, dict[str, np.ndarray]]]) -> dict[str, bytes]:
    """Every plot that has something to draw, by file stem: ``pareto`` and ``robustness`` over all models, then
    each model's plots as ``SLUG-NAME``."""
    plots = {"pareto": pareto_plot(data["summary"]), "robustness": robustness_eps_plot(data)}
    out = {k: v for k, v in plots.items() if v is not None}
    for m in data["models"]:
        for name, blob in model_plots(m, data["energy_models"], rasters.get(m["label"], {})).items():
            out[f"{slug(m['label'])}-{name}"] = blob
    return out

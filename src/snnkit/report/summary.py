"""The decision table of a multi-model report: one row per model and target (and per model its non-spiking twin
on a GPU), the numbers a deployment decision needs, and the best value of each column.

Per row: clean accuracy (the deployed run), robust accuracy at every eps attacked (``robust``: a list in the
order of ``eps``) (worst case over the attacks,
on the attacked samples), spikes, synaptic ops, MACs and neuron updates per inference, energy per inference
under every energy model that applies (spiking models for the spiking rows, ``ann-twin`` models for the twin
row), the energy measured on a GPU where there is one (the reference and the twin rows), and the memory the
target stores for the weights (``Target.footprint``).

The Pareto plot puts each row at (energy per inference under the headline model of its kind, robust accuracy at
the largest eps): :data:`HEADLINE_SPIKING` and :data:`HEADLINE_TWIN` name the preferred models.
"""
from __future__ import annotations

import math

HEADLINE_SPIKING = ("loihi1-davies2018", "loihi1-sanafe", "truenorth", "spinnaker2-prototype", "horowitz45-fp32")
"""Preferred energy model for the spiking rows on the Pareto plot (the first available one)."""

HEADLINE_TWIN = ("gpu-h100-fp32", "gpu-h100-fp16-tensor")
"""Preferred energy model for the twin rows on the Pareto plot (the first available one)."""

MAX = ("accuracy", "robust")
"""Columns where higher is better; every other numeric column is better lower."""


def _per(v, n):
    return None if v is None or not n else v / n


def _energy_cells(energy: dict, names: list[str]) -> dict:
    out = {}
    for name in names:
        e = (energy or {}).get(name)
        if e and e.get("available"):
            out[name] = {"j": e["per_sample_j"], "j_min": e.get("per_sample_j_min", e["per_sample_j"])}
    return out


def _first(preferred: tuple[str, ...], available: list[str]) -> str | None:
    return next((m for m in preferred if m in available), available[0] if available else None)


def _curve_at(curves: dict, side: str, eps: float) -> float | None:
    for e, acc in curves.get(side, []):
        if e > 0 and math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12):
            return acc
    return None


def decision_table(data: dict) -> dict:
    """The summary of a report (``data``: ``build_comparison``'s data without ``summary``); see the module docstring."""
    models = data["models"]
    energy = data.get("energy_models", {})
    spiking = [n for n, s in energy.items() if s.get("available") and s.get("workload", "spiking") == "spiking"]
    twin_models = [n for n, s in energy.items() if s.get("available") and s.get("workload") == "ann-twin"]
    eps = sorted({p[0] for m in models for pts in m.get("robustness_curves", {}).values() for p in pts if p[0] > 0})
    rows = []
    for m in models:
        curves = m.get("robustness_curves", {})
        gpu = m.get("gpu") or {}
        measured = gpu.get("measured", {})
        for t in m["targets"]:
            row = {"model": m["label"], "target": t["name"], "kind": "snn", "reference": bool(t.get("reference")),
                   "status": t["status"]}
            if t["status"] != "ok":
                row["reason"] = t.get("reason", "")
                rows.append(row)
                continue
            n, c = t["n_samples"], t["counts"]
            fp = t.get("footprint") or {}
            row.update(accuracy=t["accuracy"], robust=[_curve_at(curves, t["name"], e) for e in eps],
                       spikes=_per(c["spikes"], n), synops=_per(c["synops"], n), macs=_per(c["macs"], n),
                       neuron_updates=_per(c["neuron_updates"], n), energy=_energy_cells(t.get("energy"), spiking),
                       memory_bytes=fp.get("bytes"), memory_ratio=fp.get("stored_over_dense"),
                       measured=measured.get("reference") if t.get("reference") else None)
            rows.append(row)
        if gpu:
            label = gpu.get("label", "gpu-twin")
            row = {"model": m["label"], "target": label, "kind": "twin", "reference": False,
                   "status": "ok" if gpu.get("defined") else "undefined"}
            if not gpu.get("defined"):
                row["reason"] = gpu.get("reason", "")
                rows.append(row)
                continue
            fp = gpu.get("footprint") or {}
            row.update(accuracy=gpu.get("accuracy"), robust=[_curve_at(curves, label, e) for e in eps],
                       spikes=None, synops=None, macs=gpu.get("macs_per_sample"), neuron_updates=None,
                       energy=_energy_cells(gpu.get("energy"), twin_models), memory_bytes=fp.get("bytes"),
                       memory_ratio=fp.get("stored_over_dense"), measured=measured.get("twin"))
            rows.append(row)
    best = best_values(rows, eps, spiking + twin_models)
    return {"eps": eps, "energy_models": {"spiking": spiking, "twin": twin_models},
            "headline": {"spiking": _first(HEADLINE_SPIKING, spiking), "twin": _first(HEADLINE_TWIN, twin_models),
                         "eps": eps[-1] if eps else None},
            "rows": rows, "best": best}


def _values(rows: list[dict], get) -> list[float]:
    out = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        v = get(r)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def best_values(rows: list[dict], eps: list[float], energy_models: list[str]) -> dict:
    """Best value per column over the rows: ``accuracy``, ``robust@EPS`` (highest), ``spikes``, ``synops``,
    ``macs``, ``neuron_updates``, ``energy:MODEL``, ``measured``, ``memory_bytes`` (lowest; zero counts of a
    row that has none of them are not candidates for MACs)."""
    getters = {"accuracy": lambda r: r.get("accuracy"), "spikes": lambda r: r.get("spikes"),
               "synops": lambda r: r.get("synops"), "macs": lambda r: r.get("macs"),
               "neuron_updates": lambda r: r.get("neuron_updates"), "memory_bytes": lambda r: r.get("memory_bytes"),
               "measured": lambda r: (r.get("measured") or {}).get("per_sample_j")}
    for i, e in enumerate(eps):
        getters[f"robust@{e:g}"] = lambda r, i=i: (r.get("robust") or [None] * len(eps))[i]
    for name in energy_models:
        getters[f"energy:{name}"] = lambda r, name=name: (r.get("energy") or {}).get(name, {}).get("j")
    best = {}
    for key, get in getters.items():
        vals = _values(rows, get)
        if key == "macs":
            vals = [v for v in vals if v > 0]
        if vals:
            best[key] = max(vals) if key.split("@")[0] in MAX else min(vals)
    return best


def is_best(best: dict, key: str, value) -> bool:
    """Whether ``value`` is the best of its column (within rounding of the printed digits)."""
    b = best.get(key)
    if b is None or value is None or isinstance(value, bool):
        return False
    return math.isclose(float(value), b, rel_tol=1e-9, abs_tol=0.0)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower x (energy) and higher y (robust accuracy)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto_points(summary: dict) -> list[dict]:
    """The Pareto plot's points: every ok row with an energy under its kind's headline model. y is the robust
    accuracy at the headline (largest) eps when the report has attacks (rows not attacked at it are left out),
    else the clean accuracy (``y_is`` says which)."""
    head = summary["headline"]
    out = []
    for r in summary["rows"]:
        if r.get("status") != "ok":
            continue
        model = head["twin"] if r["kind"] == "twin" else head["spiking"]
        e = (r.get("energy") or {}).get(model) if model else None
        if not e:
            continue
        if head["eps"] is not None:
            y, y_is = (r.get("robust") or [None])[-1], f"robust accuracy at eps {head['eps']:g}"
        else:
            y, y_is = r.get("accuracy"), "clean accuracy"
        if y is None:
            continue
        out.append({"model": r["model"], "target": r["target"], "kind": r["kind"], "energy_model": model,
                    "x": e["j"], "y": y, "y_is": y_is})
    return out


__all__ = ["HEADLINE_SPIKING", "HEADLINE_TWIN", "best_values", "decision_table", "is_best", "pareto_front",
           "pareto_points"]

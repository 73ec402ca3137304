"""Write a report as ``report.json``, ``report.md`` (plots beside it in ``plots/``) and a self-contained
``report.html`` (plots embedded as base64 PNG). Every file is written atomically.

Markdown and HTML render the same document: :func:`document` turns the report data into a list of blocks
(headings, paragraphs, tables, lists, images) and each writer renders those blocks.
"""
from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snnkit.atomic import atomic_write
from snnkit.report.plots import all_plots

PLOT_CAPTIONS = {
    "accuracy": "Accuracy and prediction agreement with the reference, per target",
    "spikes_per_layer": "Spikes per sample in every spiking layer, per target",
    "energy": "Energy per sample per target and energy model (log scale; whiskers: lower bound)",
    "raster": "Spike raster of sample 0, per target",
    "robustness": "Robust accuracy vs eps (worst case over the attacks of each file), per attacked target",
}


@dataclass
class Block:
    kind: str  # "h2" | "h3" | "p" | "list" | "table" | "img"
    content: object


def fmt_joules(j: float | None) -> str:
    """Joules as text with an SI prefix (``1.23 uJ``); ``n/a`` for None."""
    if j is None or not math.isfinite(j):
        return "n/a"
    for scale, unit in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ")):
        if abs(j) >= scale:
            return f"{j / scale:.3g} {unit}"
    return f"{j / 1e-12:.3g} pJ"


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _energy_cell(e: dict) -> str:
    if not e.get("available"):
        return "unknown"
    hi, lo = e["per_sample_j"], e["per_sample_j_min"]
    return fmt_joules(hi) if math.isclose(hi, lo, rel_tol=1e-12) else f"{fmt_joules(lo)} - {fmt_joules(hi)}"


def document(data: dict, plots: list[str]) -> list[Block]:
    """The report as blocks (see the module docstring)."""
    m, d = data["model"], data["data"]
    ok = [t for t in data["targets"] if t["status"] == "ok"]
    blocks = [Block("p", f"Model `{m['path']}` ({m['arch']}, {m['neuron']}, T = {m['timesteps']}, encoder "
                         f"{m['encoder'].get('name')}, input {m['input_shape']}, {m['num_classes']} classes). "
                         f"Data: {d['source']} ({d['n_samples']} samples x {d['steps']} steps). Reference: "
                         f"`{data['reference']}`. snnkit {data['snnkit_version']}, {data['created']}.")]

    rows = []
    for t in data["targets"]:
        if t["status"] != "ok":
            rows.append([t["name"], f"{t['status']}: {t['reason']}"] + [""] * 10)
            continue
        ag, n = t.get("agreement", {}), t["n_samples"]
        c = t["counts"]
        rows.append([t["name"] + (" (reference)" if t["reference"] else ""), "ok", _num(t["accuracy"]),
                     _num(ag.get("predictions")), _num(ag.get("output_spikes")), _num(ag.get("identical_samples")),
                     _num(c["spikes"] / n, 1), _num(c["synops"] / n, 1), _num(c["macs"] / n, 1),
                     _num(c["neuron_updates"] / n, 1), _num(t["wall_s"], 3), _num(t["samples_per_s"], 1)])
    blocks += [Block("h2", "Targets"),
               Block("table", (["target", "status", "accuracy", "agree (pred.)", "agree (output spikes)",
                                "identical samples", "spikes / sample", "synops / sample", "MACs / sample",
                                "neuron updates / sample", "wall s", "samples / s"], rows)),
               Block("p", "Agreement compares each target's output spike trains with the reference's on the "
                          "reference time axis (a target's delay removed). Counts are per sample over all of the "
                          "target's steps; wall time is the run proper (graph build and process start excluded).")]

    models = data["energy_models"]
    if ok and models:
        rows = [[f"{name} ({s['platform']})"] + [_energy_cell(t["energy"][name]) for t in ok] for name, s in models.items()]
        blocks += [Block("h2", "Energy per sample"),
                   Block("table", (["model"] + [t["name"] for t in ok], rows)),
                   Block("p", "A range is lower - upper bound: the record holds total neuron updates only, so the "
                               "upper bound counts every update as active and the lower bound only those that "
                               "emitted a spike. Each figure, its source and the assumptions are listed below.")]
        blocks.append(Block("h3", "Energy models, figures and sources"))
        for name, s in models.items():
            if not s["available"]:
                blocks.append(Block("p", f"**{name}**: not available: {s['reason']}."))
                continue
            costs = "; ".join(f"{term} = {c['pj']:.4g} pJ ({' + '.join(c['figures'])})" for term, c in s["costs"].items())
            blocks.append(Block("p", f"**{name}** ({s['origin']}): {s['description']} Costs: {costs}."))
            notes = [f"{term}: {c['note']}" for term, c in s["costs"].items() if c["note"]] + s["notes"]
            if notes:
                blocks.append(Block("list", notes))
        figs = {}
        for s in models.values():
            figs.update(s.get("figures", {}))
        blocks.append(Block("table", (["figure", "pJ", "operation", "technology", "voltage", "source", "how obtained"],
                                      [[k, f"{f['value_pj']:g}", f["operation"], f["technology"], f["voltage"],
                                        f["source"], f["obtained"]] for k, f in figs.items()])))
        not_costed = sorted({n for t in ok for e in t["energy"].values() for n in e.get("not_costed", [])})
        if not_costed:
            blocks += [Block("p", "Counts a model has no figure for (not included in its energy):"),
                       Block("list", not_costed)]

    if ok:
        layers = [(layer["name"], layer["kind"], layer["neurons"]) for layer in ok[0]["layers"]]
        rows = []
        for name, kind, neurons in layers:
            row = [name, kind, _num(neurons)]
            for t in ok:
                by = {x["name"]: x for x in t["layers"]}
                x = by.get(name)
                if x is None:
                    row.append("n/a")
                elif kind in ("Affine", "Linear", "Conv1d", "Conv2d"):
                    parts = [f"{_num(x['synops'] / t['n_samples'], 1)} synops"] if x["synops"] or not x["macs"] else []
                    parts += [f"{_num(x['macs'] / t['n_samples'], 1)} MACs"] if x["macs"] else []
                    row.append(", ".join(parts))
                else:
                    row.append(f"{_num(x['spikes'] / t['n_samples'], 2)} spikes")
            rows.append(row)
        blocks += [Block("h2", "Per layer (per sample)"),
                   Block("table", (["layer", "kind", "neurons"] + [t["name"] for t in ok], rows))]

        st = data["graph"]["static"]
        rows = [[t["name"], _num(t["metrics"]["activation_sparsity"]), _num(t["metrics"]["synops_per_sample"], 1),
                 _num(t["metrics"]["macs_per_sample"], 1), _num(t["metrics"]["dense_ops_per_sample"], 1),
                 _num(t["metrics"]["membrane_updates_per_sample"], 1)] for t in ok]
        blocks += [Block("h2", "NeuroBench-style metrics"),
                   Block("p", f"Footprint: {st['parameters']:,} parameters ({st['synaptic_parameters']:,} weights and "
                              f"biases), {st['footprint_bytes']:,} bytes at float32. Connection sparsity: "
                              f"{st['connection_sparsity']:.4f} ({st['zero_weights']:,} of {st['weights']:,} weights "
                              f"are zero). Dense ops per step: {st['dense_ops_per_step']:,}."),
                   Block("table", (["target", "activation sparsity", "effective ACs / sample", "effective MACs / sample",
                                    "dense ops / sample", "membrane updates / sample"], rows))]

    if data["robustness"]:
        blocks.append(Block("h2", "Robustness (from snn-attack results)"))
        curves = data.get("robustness_curves", {})
        all_eps = sorted({p[0] for pts in curves.values() for p in pts if p[0] > 0})
        rows = [[t, _num(pts[0][1])] + [_num(dict((e, a) for e, a in pts).get(e)) for e in all_eps]
                for t, pts in curves.items()]
        blocks += [Block("p", "Robust accuracy per attacked target: clean, then at each eps the worst case over "
                              "the attacks of an evaluation (the lowest over files giving the same eps). "
                              "`reference` is the model itself, attacked white-box."),
                   Block("table", (["target", "clean"] + [f"eps {e:g}" for e in all_eps], rows))]
        for r in data["robustness"]:
            rows = [[a["name"], _num(a["eps"]), a["norm"], _num(a["robust_accuracy"])] for a in r["attacks"]]
            blocks += [Block("p", f"`{r['file']}`: target `{r['target']}`, clean accuracy {_num(r['clean_accuracy'])}, "
                                  f"worst case over attacks {_num(r['worst_case_accuracy'])}"
                                  + (f" ({r['n_samples']} samples)" if r["n_samples"] else "") + "."),
                       Block("table", (["attack", "eps", "norm", "robust accuracy"], rows))]
            if r["warnings"]:
                blocks.append(Block("list", [f"warning: {w}" for w in r["warnings"]]))

    if plots:
        blocks.append(Block("h2", "Plots"))
        blocks += [Block("img", (name, PLOT_CAPTIONS[name])) for name in plots]
    notes = list(data["notes"]) + [f"{t['name']}: raster: {t['raster_note']}" for t in ok if t.get("raster_note")]
    notes += [f"{t['name']}: warning: {w}" for t in ok for w in t.get("info", {}).get("warnings", [])]
    if notes:
        blocks += [Block("h2", "Notes"), Block("list", notes)]
    return blocks


# ------------------------------------------------------------------------------------------------ renderers


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(head: list, rows: list[list]) -> str:
    """A Markdown table (one line per row, no trailing newline); cells are ``str()``-ed and ``|`` escaped."""
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows])


def to_markdown(blocks: list[Block], plot_dir: str = "plots") -> str:
    out = ["# snnkit deployment report", ""]
    for b in blocks:
        if b.kind == "h2":
            out += [f"## {b.content}", ""]
        elif b.kind == "h3":
            out += [f"### {b.content}", ""]
        elif b.kind == "p":
            out += [str(b.content), ""]
        elif b.kind == "list":
            out += [f"- {item}" for item in b.content] + [""]
        elif b.kind == "table":
            out += [markdown_table(*b.content), ""]
        elif b.kind == "img":
            name, caption = b.content
            out += [f"![{caption}]({plot_dir}/{name}.png)", "", f"*{caption}*", ""]
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then render Markdown's `code` and **bold** spans (the only inline markup the document uses)."""
    parts = html.escape(str(text)).split("`")
    s = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    bold = s.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(bold))


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0 1em;font-size:0.85em}"
        "th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}th{background:#f0f0f0}"
        "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:0.85em;color:#555}"
        "code{background:#f4f4f4;padding:0 3px}")


def to_html(blocks: list[Block], plots: dict[str, bytes]) -> str:
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
           "<title>snnkit deployment report</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>snnkit deployment report</h1>"]
    for b in blocks:
        if b.kind in ("h2", "h3"):
            out.append(f"<{b.kind}>{_inline(b.content)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline(b.content)}</p>")
        elif b.kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.content) + "</ul>")
        elif b.kind == "table":
            head, rows = b.content
            out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                       + "</table>")
        elif b.kind == "img":
            name, caption = b.content
            b64 = base64.b64encode(plots[name]).decode("ascii")
            out.append(f"<figure><img alt=\"{html.escape(caption)}\" src=\"data:image/png;base64,{b64}\">"
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def jsonable(obj):
    """``obj`` with numpy values as Python values, non-finite floats as None and unknown objects as text."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_bytes(path: Path, blob: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(blob))


def write_report(report, outdir: "str | Path") -> dict[str, str]:
    """Write ``report`` (a :class:`~snnkit.report.collect.Report`) into ``outdir``; returns the paths written."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"{outdir}: exists and is not a directory")
    plots = all_plots(report.data, report.rasters)
    data = jsonable(dict(report.data, plots={name: f"plots/{name}.png" for name in plots}))
    paths: dict[str, str] = {}
    for name, blob in plots.items():
        p = outdir / "plots" / f"{name}.png"
        _write_bytes(p, blob)
        paths[f"plot:{name}"] = str(p)
    blocks = document(data, list(plots))
    for fname, text in (("report.json", json.dumps(data, indent=2, allow_nan=False)),
                        ("report.md", to_markdown(blocks)), ("report.html", to_html(blocks, plots))):
        _write_text(outdir / fname, text)
        paths[fname] = str(outdir / fname)
    return paths

"""Write a report as ``report.json``, ``report.md`` (plots beside it in ``plots/``) and a self-contained
``report.html`` (plots embedded as base64 PNG). Every file is written atomically.

Markdown and HTML render the same document: :func:`document` turns the report data into a list of blocks
(headings, paragraphs, tables, lists, images) and each writer renders those blocks. The document opens with the
summary (the decision table of every model and target with the best value of each column in bold, the Pareto
plot of accuracy against energy and the accuracy-vs-eps curves), then each model's detail (targets, energy,
memory, the GPU baseline, per-layer counts, NeuroBench-style metrics, robustness, plots), the notes, and an
appendix with every energy model's figures and sources.
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
from snnkit.report.plots import all_plots, slug
from snnkit.report.summary import is_best

PLOT_CAPTIONS = {
    "pareto": "Accuracy against energy per inference, one point per model and target (outlined: the GPU twin); "
              "dashed: the Pareto front (nothing else has both lower energy and higher accuracy)",
    "robustness": "Accuracy vs eps per model: clean at eps 0, then the worst case over the attacks, per attacked "
                  "side (reference: the model itself, white-box)",
    "accuracy": "Accuracy and prediction agreement with the reference, per target",
    "spikes_per_layer": "Spikes per sample in every spiking layer, per target",
    "energy": "Energy per sample per target and spiking energy model (log scale; whiskers: lower bound)",
    "raster": "Spike raster of sample 0, per target",
}

REPORT_ATTACK_SOURCE = "snn-report --attack"


@dataclass
class Block:
    kind: str  # "h2" | "h3" | "p" | "list" | "table" | "img"
    content: object
    id: str = ""


def fmt_joules(j: float | None) -> str:
    """Joules as text with an SI prefix (``1.23 uJ``); ``n/a`` for None."""
    if j is None or not math.isfinite(j):
        return "n/a"
    for scale, unit in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ")):
        if abs(j) >= scale:
            return f"{j / scale:.3g} {unit}"
    return f"{j / 1e-12:.3g} pJ"


def fmt_bytes(b: float | None) -> str:
    """Bytes as text (``12.3 kB``, powers of 1000); ``n/a`` for None."""
    if b is None:
        return "n/a"
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(b) >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{int(b)} B"


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


def _bold(text: str, best: bool) -> str:
    return f"**{text}**" if best and text not in ("", "n/a") else text


def _measured_cell(m: dict | None) -> str:
    if not m:
        return ""
    if m.get("status") == "measured":
        return f"{fmt_joules(m['per_sample_j'])} (measured, {m.get('device', 'GPU')})"
    return f"not measured: {m.get('reason', '')}"


# ------------------------------------------------------------------------------------------------ summary


def _summary_blocks(data: dict) -> list[Block]:
    sm = data["summary"]
    eps = sm["eps"]
    names = sm["energy_models"]["spiking"] + sm["energy_models"]["twin"]
    best = sm["best"]
    head = (["model", "target", "accuracy"] + [f"robust @ eps {e:g}" for e in eps]
            + ["spikes / inf.", "synops / inf.", "MACs / inf.", "neuron updates / inf."]
            + [f"energy / inf. ({n})" for n in names] + ["measured on GPU / inf.", "memory", "stored / dense"])
    rows = []
    for r in sm["rows"]:
        target = {"twin": "GPU: non-spiking twin"}.get(r["kind"], r["target"]) + (" (reference)" if r["reference"]
                                                                                  else "")
        if r["status"] != "ok":
            rows.append([r["model"], target, f"{r['status']}: {r.get('reason', '')}"] + [""] * (len(head) - 3))
            continue
        cells = [r["model"], target, _bold(_num(r["accuracy"]), is_best(best, "accuracy", r["accuracy"]))]
        for e, v in zip(eps, r["robust"]):
            cells.append(_bold(_num(v), is_best(best, f"robust@{e:g}", v)) if v is not None else "-")
        for key, digits in (("spikes", 1), ("synops", 1), ("macs", 1), ("neuron_updates", 1)):
            v = r.get(key)
            cells.append("-" if v is None else _bold(_num(float(v), digits), is_best(best, key, v)))
        for n in names:
            e = (r.get("energy") or {}).get(n)
            if not e:
                cells.append("-")
                continue
            text = fmt_joules(e["j"]) if math.isclose(e["j"], e["j_min"], rel_tol=1e-12) else \
                f"{fmt_joules(e['j_min'])} - {fmt_joules(e['j'])}"
            cells.append(_bold(text, is_best(best, f"energy:{n}", e["j"])))
        m = r.get("measured")
        mj = (m or {}).get("per_sample_j") if (m or {}).get("status") == "measured" else None
        cells.append(_bold(_measured_cell(m), is_best(best, "measured", mj)) if m else "-")
        cells.append(_bold(fmt_bytes(r.get("memory_bytes")), is_best(best, "memory_bytes", r.get("memory_bytes"))))
        ratio = r.get("memory_ratio")
        cells.append("n/a" if ratio is None else f"{ratio:.3f}")
        rows.append(cells)
    blocks = [Block("h2", "Summary"),
              Block("p", "One row per model and target, and per model its non-spiking twin on a GPU. Accuracy: the "
                         f"deployed run on {_samples(data)}; robust: the worst case over the attacks at each eps on "
                         "the attacked samples; counts and energy per inference (one sample, all of the target's "
                         "steps); memory: the bytes the target stores for the weights (stored / dense: the same "
                         "weights with every zero stored; below 1 only where the target stores synapses sparsely). "
                         "The best value of each column is in bold; '-' where a column does not apply."),
              Block("table", (head, rows), id="summary")]
    blocks += [Block("img", ("pareto", PLOT_CAPTIONS["pareto"]))] if "pareto" in data.get("plots", {}) else []
    blocks += [Block("img", ("robustness", PLOT_CAPTIONS["robustness"]))] if "robustness" in data.get("plots", {}) \
        else []
    notes = []
    hd = sm["headline"]
    if hd["spiking"] or hd["twin"]:
        notes.append(f"Pareto plot: spiking rows costed with `{hd['spiking']}`, the GPU twin with `{hd['twin']}`; y is "
                     + (f"the robust accuracy at eps {hd['eps']:g}." if hd["eps"] is not None else
                        "the clean accuracy (no attacks)."))
    a = data.get("attack")
    if a:
        notes.append(f"Attacks run by this report: {', '.join(a['attacks'])} ({a['norm']}) at eps "
                     f"{', '.join(f'{e:g}' for e in a['eps'])}, on the first {a['limit']} samples of each model; "
                     f"gradient attacks {a['steps']} steps, Square {a['square_queries']} queries per sample, seed "
                     f"{a['seed']} (snn-attack's defaults are 20 PGD steps and 1000 Square queries: these budgets are "
                     "smaller, so robust accuracies are upper bounds closer to the clean accuracy than a full "
                     "evaluation). The reference is attacked once per model and eps; each target is re-attacked "
                     "through what it offers (white-box where it has exact gradients; otherwise gradient attacks "
                     "become adaptive PGD through its differentiable model, queries go to its bit-exact proxy and "
                     "the verdicts are re-checked on it).")
    if data.get("run_time_s") is not None:
        notes.append(f"Collected in {data['run_time_s']:.0f} s (every model deployed on every target, attacked and "
                     "costed; plots and files excluded).")
    if notes:
        blocks.append(Block("list", notes))
    return blocks


def _samples(data: dict) -> str:
    sources = sorted({m["data"]["source"] for m in data["models"]})
    return "; ".join(sources)


# ------------------------------------------------------------------------------------------------ one model


def _model_blocks(m: dict, data: dict, plots: list[str]) -> list[Block]:
    mm, d, label = m["model"], m["data"], m["label"]
    ok = [t for t in m["targets"] if t["status"] == "ok"]
    blocks = [Block("h2", f"Model `{label}`"),
              Block("p", f"`{mm['path']}` ({mm['arch']}, {mm['neuron']}, T = {mm['timesteps']}, encoder "
                         f"{mm['encoder'].get('name')}, input {mm['input_shape']}, {mm['num_classes']} classes). "
                         f"Data: {d['source']} ({d['n_samples']} samples x {d['steps']} steps). Reference: "
                         f"`{m['reference']}`.")]

    rows = []
    for t in m["targets"]:
        if t["status"] != "ok":
            rows.append([t["name"], f"{t['status']}: {t['reason']}"] + [""] * 10)
            continue
        ag, n = t.get("agreement", {}), t["n_samples"]
        c = t["counts"]
        rows.append([t["name"] + (" (reference)" if t["reference"] else ""), "ok", _num(t["accuracy"]),
                     _num(ag.get("predictions")), _num(ag.get("output_spikes")), _num(ag.get("identical_samples")),
                     _num(c["spikes"] / n, 1), _num(c["synops"] / n, 1), _num(c["macs"] / n, 1),
                     _num(c["neuron_updates"] / n, 1), _num(t["wall_s"], 3), _num(t["samples_per_s"], 1)])
    blocks += [Block("h3", "Targets"),
               Block("table", (["target", "status", "accuracy", "agree (pred.)", "agree (output spikes)",
                                "identical samples", "spikes / sample", "synops / sample", "MACs / sample",
                                "neuron updates / sample", "wall s", "samples / s"], rows)),
               Block("p", "Agreement compares each target's output spike trains with the reference's on the "
                          "reference time axis (a target's delay removed). Counts are per sample over all of the "
                          "target's steps; wall time is the run proper (graph build and process start excluded).")]

    models = {k: s for k, s in data["energy_models"].items() if s.get("workload", "spiking") == "spiking"}
    if ok and models:
        rows = [[f"{name} ({s['platform']})"] + [_energy_cell(t["energy"][name]) for t in ok]
                for name, s in models.items()]
        blocks += [Block("h3", "Energy per sample"),
                   Block("table", (["model"] + [t["name"] for t in ok], rows)),
                   Block("p", "A range is lower - upper bound: the record holds total neuron updates only, so the "
                              "upper bound counts every update as active and the lower bound only those that "
                              "emitted a spike. Every figure and its source: the appendix.")]
        not_costed = sorted({n for t in ok for e in t["energy"].values() for n in e.get("not_costed", [])})
        if not_costed:
            blocks += [Block("p", "Counts a model has no figure for (not included in its energy):"),
                       Block("list", not_costed)]

    fps = [(t["name"], t.get("footprint") or {}) for t in ok]
    gpu = m.get("gpu") or {}
    if gpu.get("defined"):
        fps.append(("GPU: non-spiking twin", gpu.get("footprint") or {}))
    if fps:
        rows = []
        for name, fp in fps:
            if fp.get("bytes") is None:
                rows.append([name, f"n/a: {fp.get('reason', '')}", "", "", "", "", ""])
                continue
            parts = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in fp["parts"].items() if v)
            rows.append([name, f"{fp['bytes']:,}", parts, f"{fp['dense_bytes']:,}", _num(fp["stored_over_dense"], 3),
                         f"{fp['weights_stored']:,} / {fp['weights_total']:,}", fp["layout"]])
        blocks += [Block("h3", "Memory footprint"),
                   Block("table", (["target", "bytes", "parts", "dense bytes", "stored / dense",
                                    "weights stored / all", "how stored"], rows))]

    if gpu:
        blocks.append(Block("h3", "GPU baseline (non-spiking twin)"))
        if not gpu.get("defined"):
            blocks.append(Block("p", f"No twin: {gpu.get('reason')}."))
        else:
            acc = "not measured" if gpu.get("accuracy") is None else _num(gpu["accuracy"])
            items = [f"What runs: {gpu['what']}.",
                     f"Accuracy {acc}" + (f" ({gpu['accuracy_note']})" if gpu.get("accuracy_note") else "")
                     + f"; {gpu['macs_per_sample']:,} MACs per inference (dense: every weight; "
                     f"{gpu['nonzero_weight_macs_per_sample']:,} of them have a non-zero weight)."]
            for name, e in gpu.get("energy", {}).items():
                items.append(f"`{name}`: {_energy_cell(e)} per inference (estimated from published figures).")
            for side, meas in gpu.get("measured", {}).items():
                who = "the twin" if side == "twin" else "the spiking reference"
                if meas.get("status") == "measured":
                    items.append(f"Measured, {who}: {fmt_joules(meas['per_sample_j'])} per inference "
                                 f"({fmt_joules(meas['per_sample_above_idle_j'])} above idle) on {meas['device']}. "
                                 f"Method: {meas['method']}")
                else:
                    items.append(f"Measured, {who}: not measured ({meas.get('reason')}).")
            blocks.append(Block("list", items))

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
        blocks += [Block("h3", "Per layer (per sample)"),
                   Block("table", (["layer", "kind", "neurons"] + [t["name"] for t in ok], rows))]

        st = m["graph"]["static"]
        rows = [[t["name"], _num(t["metrics"]["activation_sparsity"]), _num(t["metrics"]["synops_per_sample"], 1),
                 _num(t["metrics"]["macs_per_sample"], 1), _num(t["metrics"]["dense_ops_per_sample"], 1),
                 _num(t["metrics"]["membrane_updates_per_sample"], 1)] for t in ok]
        blocks += [Block("h3", "NeuroBench-style metrics"),
                   Block("p", f"Footprint: {st['parameters']:,} parameters ({st['synaptic_parameters']:,} weights and "
                              f"biases), {st['footprint_bytes']:,} bytes at float32. Connection sparsity: "
                              f"{st['connection_sparsity']:.4f} ({st['zero_weights']:,} of {st['weights']:,} weights "
                              f"are zero). Dense ops per step: {st['dense_ops_per_step']:,}."),
                   Block("table", (["target", "activation sparsity", "effective ACs / sample", "effective MACs / sample",
                                    "dense ops / sample", "membrane updates / sample"], rows))]

    blocks += _robustness_blocks(m)
    prefix = slug(label) + "-"
    mine = [(name, name[len(prefix):]) for name in plots if name.startswith(prefix)]
    mine = [(name, kind) for name, kind in mine if kind in PLOT_CAPTIONS]
    if mine:
        blocks.append(Block("h3", "Plots"))
        blocks += [Block("img", (name, PLOT_CAPTIONS[kind])) for name, kind in mine]
    notes = list(m["notes"]) + [f"{t['name']}: raster: {t['raster_note']}" for t in ok if t.get("raster_note")]
    notes += [f"{t['name']}: warning: {w}" for t in ok for w in t.get("info", {}).get("warnings", [])]
    if notes:
        blocks += [Block("h3", "Notes"), Block("list", notes)]
    return blocks


def _robustness_blocks(m: dict) -> list[Block]:
    if not m["robustness"]:
        return []
    blocks = [Block("h3", "Robustness")]
    curves = m.get("robustness_curves", {})
    all_eps = sorted({p[0] for pts in curves.values() for p in pts if p[0] > 0})
    rows = [[t, _num(pts[0][1])] + [_num(dict((e, a) for e, a in pts).get(e)) for e in all_eps]
            for t, pts in curves.items()]
    blocks += [Block("p", "Robust accuracy per attacked side: clean, then at each eps the worst case over the "
                          "attacks of an evaluation (the lowest over evaluations giving the same eps). "
                          "`reference` is the model itself, attacked white-box."),
               Block("table", (["target", "clean"] + [f"eps {e:g}" for e in all_eps], rows))]
    own = [r for r in m["robustness"] if r["file"] == REPORT_ATTACK_SOURCE]
    if own:
        rows = [[r["target"], _num(a["eps"], 3), a["name"], _num(a["robust_accuracy"])] for r in own
                for a in r["attacks"]]
        blocks += [Block("p", "Every attack run by this report, per side and eps (robust accuracy of one attack; "
                              "the curves take the per-sample worst case over them):"),
                   Block("table", (["side", "eps", "attack", "robust accuracy"], rows))]
        warnings = sorted({f"{r['target']}: {w}" for r in own for w in r["warnings"]})
        if warnings:
            blocks.append(Block("list", [f"warning: {w}" for w in warnings]))
    for r in m["robustness"]:
        if r["file"] == REPORT_ATTACK_SOURCE:
            continue
        rows = [[a["name"], _num(a["eps"]), a["norm"], _num(a["robust_accuracy"])] for a in r["attacks"]]
        blocks += [Block("p", f"`{r['file']}`: target `{r['target']}`, clean accuracy {_num(r['clean_accuracy'])}, "
                              f"worst case over attacks {_num(r['worst_case_accuracy'])}"
                              + (f" ({r['n_samples']} samples)" if r["n_samples"] else "") + "."),
                   Block("table", (["attack", "eps", "norm", "robust accuracy"], rows))]
        if r["warnings"]:
            blocks.append(Block("list", [f"warning: {w}" for w in r["warnings"]]))
    return blocks


# ------------------------------------------------------------------------------------------------ appendix


def _appendix_blocks(data: dict) -> list[Block]:
    models = data["energy_models"]
    if not models:
        return []
    blocks = [Block("h2", "Appendix: energy models, figures and sources")]
    for name, s in models.items():
        if not s["available"]:
            blocks.append(Block("p", f"**{name}**: not available: {s['reason']}."))
            continue
        costs = "; ".join(f"{term} = {c['pj']:.4g} pJ ({' + '.join(c['figures'])})" for term, c in s["costs"].items())
        what = " Costs the non-spiking twin (GPU baseline)." if s.get("workload") == "ann-twin" else ""
        blocks.append(Block("p", f"**{name}** ({s['origin']}): {s['description']}{what} Costs: {costs}."))
        notes = [f"{term}: {c['note']}" for term, c in s["costs"].items() if c["note"]] + s["notes"]
        if notes:
            blocks.append(Block("list", notes))
    figs = {}
    for s in models.values():
        figs.update(s.get("figures", {}))
    blocks.append(Block("table", (["figure", "pJ", "operation", "technology", "voltage", "source", "how obtained"],
                                  [[k, f"{f['value_pj']:g}", f["operation"], f["technology"], f["voltage"],
                                    f["source"], f["obtained"]] for k, f in figs.items()])))
    return blocks


def document(data: dict, plots: list[str]) -> list[Block]:
    """The report as blocks (see the module docstring); ``data`` is ``build_comparison``'s (JSON-ready)."""
    labels = [m["label"] for m in data["models"]]
    targets = list(dict.fromkeys(t["name"] for m in data["models"] for t in m["targets"]))
    blocks = [Block("p", f"{len(labels)} model{'s' if len(labels) != 1 else ''} ({', '.join(f'`{x}`' for x in labels)}) "
                         f"on {', '.join(f'`{t}`' for t in targets)}, beside each model's non-spiking twin on a GPU. "
                         f"Data: {_samples(data)}. Reference: `{data['reference']}`. snnkit {data['snnkit_version']}, "
                         f"{data['created']}.")]
    blocks += _summary_blocks(dict(data, plots={p: p for p in plots}))
    for m in data["models"]:
        blocks += _model_blocks(m, data, plots)
    blocks += _appendix_blocks(data)
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
        "code{background:#f4f4f4;padding:0 3px}"
        "#summary{font-size:0.8em;display:block;overflow-x:auto}#summary strong{color:#0a5}")


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
            attr = f' id="{html.escape(b.id)}"' if b.id else ""
            out.append(f"<table{attr}><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in head) + "</tr>"
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

"""Issue 13 acceptance, measured: ``snn-report`` on three digits models (vanilla, PGD-AT, 90 % sparse converted)
with ``--attack pgd,square --eps 0.03,0.06,0.1`` must write report.html/md/json with the decision table, the
Pareto plot and the GPU-twin rows in under 5 minutes on 2 cores.

    .venv/bin/python benchmarks/report_acceptance.py vanilla/model.pt pgd-at/model.pt converted/model.pt \
        --labels vanilla,pgd-at,converted-90

Runs the command once as a user would (every target by default, the report's default attack budget), times the
whole command (wall clock, and the CPU seconds of the command and its child processes: on a shared machine the
wall time grows with the load, the CPU time much less), checks what it wrote and prints a row. Every run is
kept: appended to ``benchmarks/results/report_acceptance.json`` (``runs``), and the section of docs/report.md
between ``<!-- report-acceptance:begin -->`` and ``<!-- report-acceptance:end -->`` is regenerated with one row
per run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ATTACK = ["--attack", "pgd,square", "--eps", "0.03,0.06,0.1"]
LIMIT_S = 300.0
MARKERS = ("<!-- report-acceptance:begin -->", "<!-- report-acceptance:end -->")


def _children_cpu_s() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run_report(models: list[str], labels: str, targets: str | None, out: Path) -> dict:
    """One ``snn-report`` command: its JSON summary, wall and CPU seconds, and the load average around it."""
    argv = [str(BIN / "snn-report"), *models, "--labels", labels, "--dataset", "digits", *ATTACK, "-o", str(out),
            "--json", "--no-progress"] + (["--targets", targets] if targets else [])
    load_before, cpu0, t0 = os.getloadavg()[0], _children_cpu_s(), time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu_s() - cpu0
    if res.returncode != 0:
        raise SystemExit(f"report_acceptance: snn-report failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    shown = ["snn-report", "A.pt", "B.pt", "C.pt", *argv[1 + len(models):]]  # the paths are listed with the labels
    return {"command": " ".join(shown).replace(str(out), "OUT"), "wall_s": wall, "cpu_s": cpu,
            "load_before": load_before, "load_after": os.getloadavg()[0], "summary": json.loads(res.stdout)}


def check_outputs(out: Path) -> dict[str, bool]:
    """What the acceptance asks of the files: all three written, the decision table the first table of the HTML
    and of the Markdown, the Pareto plot embedded, a GPU-twin row with an energy for every model."""
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    rep = json.loads((out / "report.json").read_text())
    rows = rep["summary"]["rows"]
    twins = {r["model"] for r in rows if r["kind"] == "twin" and r["status"] == "ok" and r.get("energy")}
    first_md_table = next((line for line in md.splitlines() if line.startswith("|")), "")
    return {
        "files_written": all((out / f).is_file() for f in ("report.html", "report.md", "report.json")),
        "summary_table_first": re.search(r"<table[^>]*>", html).group(0) == '<table id="summary">'
                               and first_md_table.startswith("| model | target | accuracy |"),
        "pareto_plot": "pareto" in rep["plots"] and (out / rep["plots"]["pareto"]).is_file(),
        "gpu_twin_rows": twins == {m["label"] for m in rep["models"]},
    }


def _model_info(path: str) -> dict:
    """The model's test accuracy as its training run recorded it (``metrics.json`` beside it), when there."""
    metrics = Path(path).with_name("metrics.json")
    acc = json.loads(metrics.read_text()).get("test_accuracy") if metrics.is_file() else None
    return {"path": path, "test_accuracy": acc}


def row(r: dict) -> str:
    """One run as a Markdown table row (the columns of :func:`table`)."""
    ok = all(r["checks"].values())
    threads = f" (OMP_NUM_THREADS={r['omp_num_threads']})" if r.get("omp_num_threads") else ""
    return (f"| {r['date']}{threads} | {', '.join(r['labels'])} | {', '.join(r['targets'])} | {' '.join(ATTACK[1::2])} "
            f"(first {r['attack']['limit']} samples, {r['attack']['steps']} steps, "
            f"{r['attack']['square_queries']} queries) | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
            f"{r['load_before']:.1f} / {r['load_after']:.1f} | {'yes' if r['wall_s'] < LIMIT_S else 'NO'} | "
            f"{'yes' if ok else 'NO: ' + ', '.join(k for k, v in r['checks'].items() if not v)} |")


def table(runs: list[dict]) -> str:
    head = ["| finished | models | targets | attacks | wall (s) | CPU (s) | load avg before / after | under 5 min | "
            "files, summary first, Pareto, GPU twin |", "|---|---|---|---|---|---|---|---|---|"]
    return "\n".join(head + [row(r) for r in runs])


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def update_doc(doc: Path, result: dict, text: str) -> None:
    """Replace the marked section of ``doc`` with a note on ``result`` (the latest run) and ``text`` (the table
    of every run); ``doc`` is left alone without the markers."""
    if not doc.is_file():
        return
    s = doc.read_text()
    begin, end = MARKERS
    if begin not in s or end not in s:
        return
    head, rest = s.split(begin, 1)
    _, tail = rest.split(end, 1)
    models = "; ".join(f"`{lab}`: {m['path']}" + (f" (test accuracy {100 * m['test_accuracy']:.1f} %)"
                                                   if m["test_accuracy"] is not None else "")
                       for lab, m in zip(result["labels"], result["models"]))
    note = (f"\nEvery run of `benchmarks/report_acceptance.py` on {result['cpus']} CPU cores, the latest last: "
            f"`{result['command']}`. Models (latest run): {models}. Latest run, per model, seconds spent deploying + "
            "attacking: " + "; ".join(f"`{k}` {v['deploy_s']:.0f} + {v['attack_s']:.0f}"
                                       for k, v in result["per_model"].items()) + ".\n\n")
    _write(doc, head + begin + note + text + "\n" + end + tail)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs=3, metavar="MODEL.pt", help="vanilla, PGD-AT and 90 %% converted models")
    p.add_argument("--labels", default="vanilla,pgd-at,converted-90", help="their labels in the report")
    p.add_argument("--targets", help="snn-report --targets (default: snn-report's own, every target)")
    p.add_argument("--out", help="report folder (default: a temporary folder, removed afterwards)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "report_acceptance.json"),
                   help="where the JSON record goes")
    p.add_argument("--doc", default=str(ROOT / "docs" / "report.md"), help="document whose marked section is rewritten")
    args = p.parse_args()
    missing = [m for m in args.models if not Path(m).is_file()]
    if missing:
        print(f"report_acceptance: {missing[0]}: no such model file", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "report"
        run = run_report(args.models, args.labels, args.targets, out)
        checks = check_outputs(out)
        rep = json.loads((out / "report.json").read_text())
    s = run.pop("summary")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), **run, "checks": checks,
        "labels": [m["label"] for m in s["models"]], "models": [_model_info(m) for m in args.models],
        "targets": [t["name"] for t in s["models"][0]["targets"]], "attack": s["attack"],
        "per_model": {m["label"]: {"deploy_s": sum(t["elapsed_s"] for t in m["targets"]),
                                   "attack_s": sum((m.get("attack") or {}).get("seconds", {}).values()),
                                   "attack_s_by_side": (m.get("attack") or {}).get("seconds", {})}
                      for m in rep["models"]},
        "met": all(checks.values()) and run["wall_s"] < LIMIT_S,
    }
    results = Path(args.results)
    runs = json.loads(results.read_text())["runs"] if results.is_file() else []
    runs.append(result)
    results.parent.mkdir(parents=True, exist_ok=True)
    _write(results, json.dumps({"runs": runs}, indent=2))
    print(row(result))
    update_doc(Path(args.doc), result, table(runs))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

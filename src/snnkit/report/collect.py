"""Collect what a report shows: models deployed on several targets, compared with the torch reference, with
the GPU baseline beside them.

:func:`build_report` (one model) exports the model to NIR once, runs every requested target on the same encoded
input through the Python API (``snnkit.deploy.base.get_target``), and gathers per target: accuracy, agreement
with the reference (predictions and output spike trains), counts (spikes, synaptic ops, MACs, neuron updates,
per layer), wall time and throughput, NeuroBench-style metrics, the energy under every requested spiking
energy model, the memory footprint the target reports (``Target.footprint``) and a spike raster of one sample.
A target that cannot run (not installed, no Lava environment, a graph it cannot take) stays in the report with
its status and the one-line reason. Beside the targets: the model's non-spiking twin costed on a GPU
(:mod:`snnkit.report.gpu`). Robustness: results from ``snn-attack --json`` files as given, and the report's own
attacks (:mod:`snnkit.report.robustness`), merged into one robust-accuracy-vs-eps curve per attacked side.

:func:`build_comparison` runs :func:`build_report` for several models and adds the decision table
(:mod:`snnkit.report.summary`). The result is a :class:`Report`: ``data`` is the JSON-ready content of
``report.json``; ``rasters`` holds the arrays the raster plots need (by model label, then target).
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from snnkit.deploy.base import REFERENCE, Target, TargetResult, get_target
from snnkit.graph import DeployError, output_size, topological_order
from snnkit.graph.errors import first_line
from snnkit.energy import EnergyModel, energy_of, resolve_models
from snnkit.graph.kinds import NEURONS
from snnkit.report.attacks import RobustnessResult, read_attack_files, robustness_curves
from snnkit.report.compare import accuracy, agreement, ratio
from snnkit.report.metrics import static_metrics, workload_metrics

SCHEMA = "snnkit.report/2"


@dataclass
class Inputs:
    """The samples every target runs: ``x [N, T, ...]`` (encoded), optional labels ``[N]``, where they came from,
    and the same samples before encoding ``raw [N, ...]`` in [0, 1] when known (the twin and attacks take them)."""

    x: np.ndarray
    labels: np.ndarray | None
    source: str
    raw: np.ndarray | None = None


@dataclass
class TargetRun:
    """One target's outcome: ``status`` is ``"ok"``, ``"unavailable"`` (ImportError or DeployError: the
    target cannot take this graph or environment) or ``"error"`` (anything unexpected); ``reason`` says why."""

    name: str
    status: str
    reason: str = ""
    result: TargetResult | None = None
    elapsed_s: float = 0.0
    raster: dict[str, np.ndarray] = field(default_factory=dict)
    raster_note: str = ""
    target: Target | None = None


@dataclass
class Report:
    data: dict
    rasters: dict[str, dict[str, np.ndarray]]


# ------------------------------------------------------------------------------------------------ inputs


def _input_shape(graph) -> tuple[int, ...]:
    return tuple(int(s) for s in np.asarray(graph.metadata["input_shape"]).tolist())


def inputs_from_dataset(graph, name: str, *, limit: int | None = None, data_dir: str | None = None) -> Inputs:
    """The first ``limit`` test samples of a named data set, encoded with the graph's encoder
    (``snnkit.deploy.inputs``, the helper every target and ``snn-deploy`` use)."""
    from snnkit import data
    from snnkit.deploy.inputs import dataset_input

    ti = dataset_input(name, graph.metadata, _input_shape(graph), limit=limit, data_dir=data_dir,
                       classes=output_size(graph))
    raw, _ = data.load(name, "test", limit=limit, data_dir=data_dir, timesteps=ti.timesteps)
    n = ti.x.shape[0]
    return Inputs(x=ti.x, labels=ti.y, raw=raw.numpy().astype(np.float32),
                  source=f"{name} test split, " + (f"first {n}" if limit else f"all {n}") + " samples")


def _labels(path: str, n: int, classes: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such labels file")
    try:
        y = np.load(p, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for foreign files
        raise ValueError(f"{p}: not a readable .npy labels file ({first_line(exc)})") from None
    if not isinstance(y, np.ndarray) or y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{p}: labels must hold one integer per sample ({n} samples), got shape {list(getattr(y, 'shape', []))} "
                         f"dtype {getattr(y, 'dtype', type(y).__name__)}")
    if n and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{p}: labels must lie in 0..{classes - 1} (the graph's output has {classes} values per "
                         f"step), got {int(y.min())}..{int(y.max())}")
    return y.astype(np.int64)


def inputs_from_file(graph, path: str, *, labels: str | None = None, raw: bool = False) -> Inputs:
    """Samples from an ``.npy`` file.

    raw=False: encoded input ``[B, T, *input_shape]`` or ``[T, *input_shape]``, as ``snn-deploy --input`` reads
    it. raw=True: ``[N, *input_shape]`` values in [0, 1] (e.g. adversarial examples), encoded here with the
    graph's encoder. labels: ``Y.npy`` with ``N`` integers.
    """
    from snnkit.deploy.inputs import encode, load_array

    shape = _input_shape(graph)
    if raw:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"{p}: no such input file")
        try:
            x = np.load(p, allow_pickle=False)
        except Exception as exc:  # numpy raises several types for foreign files
            raise ValueError(f"{p}: not a readable .npy input file ({first_line(exc)})") from None
        want = ", ".join(map(str, shape))
        if not isinstance(x, np.ndarray) or tuple(x.shape[1:]) != shape or x.shape[0] == 0:
            raise ValueError(f"{p}: raw input has shape {list(getattr(x, 'shape', []))}; expected [N, {want}]")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
            raise ValueError(f"{p}: dtype {x.dtype} is not a real number type")
        x = x.astype(np.float32)
        if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
            raise ValueError(f"{p}: raw inputs must lie in [0, 1] (they are encoded with the model's encoder)")
        xe, how = encode(x, graph.metadata), "raw inputs encoded with the graph's encoder"
    else:
        x, (xe, how) = None, (load_array(path, shape).x, "encoded input")
    y = _labels(labels, xe.shape[0], output_size(graph)) if labels else None
    return Inputs(x=xe, labels=y, raw=x, source=f"{path} ({xe.shape[0]} samples, {how})")


# ------------------------------------------------------------------------------------------------ targets


def run_target(name: str, graph, x: np.ndarray, make_target: Callable | None = None, raster: bool = True) -> TargetRun:
    """Run one target made by ``make_target(name)`` (default ``get_target``); never raises for the target's own
    failures (they become the run's status)."""
    t0 = time.perf_counter()
    try:
        target = (make_target or get_target)(name)
        result = target.run(graph, x)
    except (ImportError, DeployError) as exc:
        return TargetRun(name, "unavailable", first_line(exc), elapsed_s=time.perf_counter() - t0)
    except Exception as exc:  # a target bug must not take the whole report down; it is shown, not dropped
        return TargetRun(name, "error", f"{type(exc).__name__}: {first_line(exc)}", elapsed_s=time.perf_counter() - t0)
    run = TargetRun(name, "ok", result=result, elapsed_s=time.perf_counter() - t0, target=target)
    if raster:
        try:
            rec = target.run(graph, x[:1], record=True).records
            neurons = [n for n in topological_order(graph) if isinstance(graph.nodes[n], NEURONS) and n in rec]
            run.raster = {n: np.asarray(rec[n][0]).reshape(rec[n].shape[1], -1) for n in neurons}
            if not run.raster:
                run.raster_note = "the target recorded no spiking layer"
        except Exception as exc:  # the raster is an illustration; its failure is reported beside it
            run.raster_note = f"raster run failed: {first_line(exc)}"
    return run


def _energy(result: TargetResult, models: list[EnergyModel]) -> dict:
    out = {}
    for m in models:
        if m.workload != "spiking":
            continue  # the twin's models (the GPU baseline) cost another network: see report.gpu
        if not m.available:
            out[m.name] = {"available": False, "reason": m.reason}
            continue
        e = energy_of(result, m)
        out[m.name] = {"available": True, "total_j": e.total_j, "total_j_min": e.total_j_min,
                       "per_sample_j": e.per_sample_j, "per_sample_j_min": e.per_sample_j_min,
                       "terms": {k: {"count": v.count, "count_min": v.count_min, "pj": v.pj, "joules": v.joules,
                                     "joules_min": v.joules_min, "counted_from": v.counted_from}
                                 for k, v in e.terms.items()},
                       "layers": [asdict(layer) for layer in e.layers],
                       "notes": e.notes, "not_costed": e.not_costed}
    return out


def _footprint(run: TargetRun, graph, inputs: Inputs) -> dict:
    """What the target says it stores for the graph (``Target.footprint``); its failure is shown, not fatal."""
    try:
        return run.target.footprint(graph, inputs.x).summary()
    except Exception as exc:  # a footprint is one column; a target bug there must not take the report down
        return {"bytes": None, "reason": first_line(exc)}


def _target_entry(run: TargetRun, ref: TargetRun | None, inputs: Inputs, graph, static,
                  models: list[EnergyModel]) -> dict:
    entry: dict = {"name": run.name, "status": run.status, "reference": run.name == REFERENCE,
                   "elapsed_s": run.elapsed_s}
    if run.status != "ok":
        entry["reason"] = run.reason
        return entry
    r = run.result
    steps = inputs.x.shape[1]
    preds = r.predictions(steps)
    n = int(r.outputs.shape[0])
    counts = r.totals()
    entry.update(
        accuracy=accuracy(preds, inputs.labels), n_samples=n, steps=int(r.outputs.shape[1]), delay=int(r.delay),
        wall_s=r.wall_s, build_s=r.build_s, samples_per_s=n / r.wall_s if r.wall_s > 0 else None,
        counts=counts, layers=[asdict(layer) for layer in r.layers],
        metrics=asdict(workload_metrics(graph, r, static=static)), energy=_energy(r, models),
        footprint=_footprint(run, graph, inputs), info=r.info, raster_note=run.raster_note)
    if ref is not None and ref.status == "ok":
        rr = ref.result
        ag = agreement(r.aligned_outputs(steps), rr.aligned_outputs(steps))
        ref_counts = rr.totals()
        entry["agreement"] = asdict(ag)
        entry["counts_vs_reference"] = {k: ratio(v, ref_counts[k]) for k, v in counts.items()}
    return entry


# ------------------------------------------------------------------------------------------------ report


def _reference_forward(graph, inputs: Inputs, measure: bool):
    """The reference target's exact view on the CUDA device (for the NVML measurement), or None."""
    from snnkit.report.gpu import cuda_unavailable_reason

    if not measure or cuda_unavailable_reason() is not None:
        return None
    import torch

    from snnkit.deploy.base import make_target

    view = make_target(REFERENCE, device="cuda").differentiable(graph, inputs.x, device="cuda")
    if view is None or not view.exact:
        return None

    def forward(x):
        with torch.no_grad():
            return view.forward(x)

    return forward


def build_report(model, graph, inputs: Inputs, targets: list[str], *, model_path: str = "", label: str = "",
                 energy_models: "list[str] | None" = None, attack_files: "list[str] | None" = None,
                 attack_records: "list[RobustnessResult] | None" = None, attack_plan=None, gpu: bool = True,
                 measure_gpu: bool = True, make_target: Callable | None = None, raster: bool = True,
                 progress: Callable | None = None, log: Callable[[str], None] | None = None) -> Report:
    """Run ``graph`` (the NIR export of ``model``) on ``targets`` and gather one model's report (see the module
    docstring).

    targets: target names; the torch reference is always run (first) and marked as the reference.
    label: the model's name in the report (default: its folder name).
    energy_models: ``--energy-model`` values (built-in names or files); None: every built-in model.
    attack_files: ``snn-attack --json`` files about this model; attack_records: evaluations already read.
    attack_plan: a :class:`~snnkit.report.robustness.AttackPlan` to attack the reference, every target that ran
        and the twin here (needs labelled raw samples: ``inputs.raw``); None: no attacks of its own.
    gpu: add the GPU baseline (the twin); measure_gpu: measure energy with NVML where a CUDA device is present.
    make_target: ``name -> Target`` (default ``snnkit.deploy.base.get_target`` with default options).
    progress: wraps the list of targets (e.g. ``tqdm``) to show progress; log: one line per attack phase.
    """
    import snnkit

    models = resolve_models(energy_models)  # fail early on a bad model file
    robustness = read_attack_files(attack_files or []) + list(attack_records or [])
    static = static_metrics(graph)
    names = [REFERENCE] + [t for t in dict.fromkeys(targets) if t != REFERENCE]
    notes = []
    if REFERENCE not in targets:
        notes.append(f"{REFERENCE} was not requested; it was run as the reference every target is compared with.")
    runs: dict[str, TargetRun] = {}
    bar = progress(names) if progress else names
    for name in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(name)
        runs[name] = run_target(name, graph, inputs.x, make_target, raster=raster)
    ref = runs[REFERENCE]
    if log:
        log("deployed: " + ", ".join(f"{n} {r.elapsed_s:.1f} s" + ("" if r.status == "ok" else f" ({r.status})")
                                     for n, r in runs.items()))
    if ref.status != "ok":
        notes.append(f"the reference target failed ({ref.reason}): no agreement figures")
    if any(r.status == "ok" and r.result.delay for r in runs.values()):
        notes.append("Targets with a delay (Loihi: one step per connection layer) run T + delay steps; their "
                     "outputs are compared on the reference time axis, and their counts cover all their steps.")

    gpu_data = None
    if gpu:
        from snnkit.report.gpu import gpu_baseline

        gpu_data = gpu_baseline(graph, inputs.raw, inputs.labels, models, n_samples=int(inputs.x.shape[0]),
                                measure=measure_gpu, reference_forward=_reference_forward(graph, inputs, measure_gpu),
                                encoded=inputs.x)

    attack_info = None
    if attack_plan is not None:
        from snnkit.report.gpu import TWIN
        from snnkit.report.robustness import run_attacks

        if inputs.raw is None or inputs.labels is None:
            raise ValueError("attacks need labelled samples before encoding (--dataset, or --raw-input with "
                             "--input-labels)")
        twin = None
        if gpu_data is not None and gpu_data.get("defined"):
            from snnkit.export.onnx_twin import ann_twin

            twin = ann_twin(graph)
        n = min(attack_plan.limit, int(inputs.raw.shape[0]))
        outcome = run_attacks(model, graph, [(nm, r.target) for nm, r in runs.items() if r.status == "ok"],
                              inputs.raw[:n], inputs.labels[:n], attack_plan, twin=twin, twin_label=TWIN,
                              model_path=model_path, log=log)
        robustness += outcome.records
        notes += outcome.notes
        attack_info = {**attack_plan.summary(), "n_samples": n, "seconds": outcome.seconds,
                       "evaluations": outcome.evaluations}

    curves, curve_notes = robustness_curves(robustness)
    notes += curve_notes
    for r in robustness:
        if r.model and model_path and Path(r.model).resolve() != Path(model_path).resolve():
            notes.append(f"robustness: {r.file} attacked model {r.model}, not {model_path}")
    cfg = model.config
    data = {
        "schema": SCHEMA,
        "label": label or model_label(model_path),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "snnkit_version": snnkit.__version__,
        "model": {"path": str(model_path), "arch": cfg.get("arch"), "timesteps": int(model.timesteps),
                  "encoder": model.encoder.spec(), "input_shape": list(cfg["input_shape"]),
                  "num_classes": int(cfg["num_classes"]), "neuron": cfg.get("neuron"), "reset": cfg.get("reset")},
        "data": {"source": inputs.source, "n_samples": int(inputs.x.shape[0]), "steps": int(inputs.x.shape[1]),
                 "labels": inputs.labels is not None},
        "graph": {"nodes": [{"name": n, "kind": type(graph.nodes[n]).__name__} for n in topological_order(graph)],
                  "static": {**asdict(static), "connection_sparsity": static.connection_sparsity}},
        "reference": REFERENCE,
        "targets": [_target_entry(runs[n], ref, inputs, graph, static, models) for n in names],
        "gpu": gpu_data,
        "energy_models": {m.name: m.summary() for m in models},
        "attack": attack_info,
        "robustness": [asdict(r) for r in robustness],
        "robustness_curves": {t: [list(p) for p in pts] for t, pts in curves.items()},
        "notes": notes,
    }
    return Report(data=data, rasters={n: r.raster for n, r in runs.items() if r.raster})


def model_label(path: "str | Path") -> str:
    """A model's default name in a report: the folder holding its file (``runs/vanilla/model.pt`` -> ``vanilla``;
    a file in ``train/`` is named by the folder above, as ``make demo`` lays models out)."""
    p = Path(path)
    parent = p.resolve().parent if str(path) else Path(".")
    name = parent.name
    if name in ("train", "model", "") and parent.parent.name:
        name = parent.parent.name
    return name or p.stem


def build_comparison(entries: list[dict], targets: list[str], *, energy_models: "list[str] | None" = None,
                     attack_plan=None, gpu: bool = True, measure_gpu: bool = True, make_target: Callable | None = None,
                     raster: bool = True, progress: Callable | None = None,
                     log: Callable[[str], None] | None = None) -> Report:
    """Several models side by side: :func:`build_report` for each, then the decision table.

    entries: per model ``{"label", "path", "model", "graph", "inputs", "attack_files"}`` (labels unique).
    Returns a :class:`Report` whose data holds ``models`` (each model's report), the shared ``energy_models``,
    the attack settings, the ``summary`` (:func:`snnkit.report.summary.decision_table`) and ``run_time_s``.
    """
    import snnkit

    from snnkit.report.summary import decision_table

    t0 = time.perf_counter()
    labels = [e["label"] for e in entries]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must be unique, got {', '.join(labels)}")
    reports = []
    for e in entries:
        if log:
            log(f"model {e['label']} ({e['path']})")
        reports.append(build_report(e["model"], e["graph"], e["inputs"], targets, model_path=str(e["path"]),
                                    label=e["label"], energy_models=energy_models,
                                    attack_files=e.get("attack_files"), attack_plan=attack_plan, gpu=gpu,
                                    measure_gpu=measure_gpu, make_target=make_target, raster=raster,
                                    progress=progress, log=log))
    models = [r.data for r in reports]
    energy = models[0]["energy_models"] if models else {}
    data = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "snnkit_version": snnkit.__version__,
        "reference": REFERENCE,
        "models": [{k: v for k, v in m.items() if k not in ("schema", "created", "snnkit_version", "energy_models")}
                   for m in models],
        "energy_models": energy,
        "attack": attack_plan.summary() if attack_plan is not None else None,
    }
    data["summary"] = decision_table(data)
    data["run_time_s"] = time.perf_counter() - t0
    return Report(data=data, rasters={r.data["label"]: r.rasters for r in reports})

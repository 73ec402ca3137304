"""Energy estimates of a run from published energy-per-operation figures.

The figures and the models built from them are data (``figures.json`` beside this module; a user file with
the same schema adds more): each figure has its source, technology node, voltage and how it was obtained. A
model maps the counts of a :class:`~snnkit.deploy.base.TargetResult` to figures:

=========================  ==========================================  =========================================
cost term                  count it multiplies (per layer)             typical figure
=========================  ==========================================  =========================================
``synop``                  ``LayerStats.synops`` (spike-fed layers)    accumulate (AC), synaptic spike op
``mac``                    ``LayerStats.macs`` (analog-fed layers)     multiply-accumulate, graded spike op
``neuron_update``          ``LayerStats.neuron_updates``               one figure for every update
``neuron_update_active``   the active part of the neuron updates       Loihi's active compartment update
``neuron_update_inactive`` the inactive part                           Loihi's inactive compartment update
``spike``                  ``LayerStats.spikes``                       cost of emitting a spike
=========================  ==========================================  =========================================

Energies are in joules (figures in picojoules). The record holds total neuron updates only, not which of
them were active, so a model with an active/inactive split gets a range: ``total_j`` counts every update as
active (an upper bound), ``total_j_min`` counts as active only the updates that emitted a spike (a neuron
that fired was certainly active) and the rest as inactive (a lower bound). Models without the split give
``total_j == total_j_min``. Every estimate lists the figures it used, their sources and these assumptions.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the run record lives with the targets, the counts in energy.counting (which imports nir)
    from snnkit.deploy.base import TargetResult
    from snnkit.energy.counting import LayerStats

SCHEMA = "snnkit.energy-models/1"
PJ = 1e-12  # joules per picojoule

#: cost term -> the LayerStats field it is counted from (the active/inactive pair splits neuron_updates).
TERMS: dict[str, str] = {
    "synop": "synops",
    "mac": "macs",
    "neuron_update": "neuron_updates",
    "neuron_update_active": "neuron_updates",
    "neuron_update_inactive": "neuron_updates",
    "spike": "spikes",
}
_FIGURE_FIELDS = ("operation", "source", "technology", "voltage", "obtained")

WORKLOADS = ("spiking", "ann-twin")
"""What a model costs: ``spiking`` (default), the counts of a spiking run on a target; ``ann-twin``, the model's
non-spiking twin run once per sample, costed by its dense multiply-accumulates only (the GPU baseline of the
report)."""


class EnergyModelError(ValueError):
    """A malformed or unusable energy model (file); the message is one line naming the file or model."""


@dataclass(frozen=True)
class Figure:
    """One published energy figure: ``value_pj`` picojoules per ``operation``."""

    id: str
    value_pj: float
    operation: str
    source: str
    technology: str
    voltage: str
    obtained: str


@dataclass(frozen=True)
class Cost:
    """A cost term: the sum of ``figures`` (ids) per counted event."""

    term: str
    figures: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class EnergyModel:
    """A named set of cost terms over figures; ``origin`` is the file it came from."""

    name: str
    description: str
    platform: str
    costs: dict[str, Cost]
    figures: dict[str, Figure]
    notes: tuple[str, ...] = ()
    available: bool = True
    reason: str = ""
    origin: str = ""
    workload: str = "spiking"

    def pj(self, term: str) -> float:
        """Picojoules per event of ``term`` (the sum of its figures)."""
        return float(sum(self.figures[f].value_pj for f in self.costs[term].figures))

    def used_figures(self) -> dict[str, Figure]:
        return {f: self.figures[f] for c in self.costs.values() for f in c.figures}

    def summary(self) -> dict:
        """JSON-ready description (costs in pJ per event, with their figures and sources)."""
        return {
            "name": self.name, "description": self.description, "platform": self.platform,
            "workload": self.workload, "available": self.available,
            **({"reason": self.reason} if not self.available else {}),
            "costs": {t: {"pj": self.pj(t), "figures": list(c.figures), "note": c.note} for t, c in self.costs.items()},
            "figures": {k: asdict(v) for k, v in self.used_figures().items()},
            "notes": list(self.notes), "origin": self.origin,
        }


@dataclass
class TermEnergy:
    """One cost term over the whole run: ``count`` events at ``pj`` each (``*_min``: the lower bound)."""

    term: str
    counted_from: str
    pj: float
    count: int
    count_min: int
    joules: float
    joules_min: float
    figures: list[str]
    note: str


@dataclass
class LayerEnergy:
    """Energy of one layer (NIR node), in joules, with the joules of each cost term."""

    name: str
    kind: str
    joules: float
    joules_min: float
    terms: dict[str, float] = field(default_factory=dict)


@dataclass
class EnergyEstimate:
    """The energy of one run under one model.

    total_j / total_j_min: joules for all samples (upper / lower bound, equal unless neuron updates are split
    into active and inactive); per_sample_j: ``total_j / n_samples``.
    """

    model: str
    description: str
    platform: str
    target: str
    n_samples: int
    total_j: float
    total_j_min: float
    layers: list[LayerEnergy]
    terms: dict[str, TermEnergy]
    figures: dict[str, Figure]
    notes: list[str]
    not_costed: list[str]
    origin: str = ""

    @property
    def per_sample_j(self) -> float:
        return self.total_j / self.n_samples if self.n_samples else float("nan")

    @property
    def per_sample_j_min(self) -> float:
        return self.total_j_min / self.n_samples if self.n_samples else float("nan")

    def summary(self) -> dict:
        """JSON-ready record."""
        return {
            "model": self.model, "description": self.description, "platform": self.platform,
            "target": self.target, "n_samples": self.n_samples,
            "total_j": self.total_j, "total_j_min": self.total_j_min,
            "per_sample_j": self.per_sample_j, "per_sample_j_min": self.per_sample_j_min,
            "terms": {k: asdict(v) for k, v in self.terms.items()},
            "layers": [asdict(layer) for layer in self.layers],
            "figures": {k: asdict(v) for k, v in self.figures.items()},
            "notes": list(self.notes), "not_costed": list(self.not_costed), "origin": self.origin,
        }


# --------------------------------------------------------------------------------------------- loading


def _fail(source: str, where: str, problem: str) -> EnergyModelError:
    return EnergyModelError(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


def _parse_figures(raw, source: str) -> dict[str, Figure]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(source, "figures", "must be an object of figure id -> figure")
    out = {}
    for fid, f in raw.items():
        where = f"figures.{fid}"
        if not isinstance(f, dict):
            raise _fail(source, where, "must be an object")
        v = f.get("value_pj")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise _fail(source, f"{where}.value_pj", f"must be a non-negative number of picojoules, got {v!r}")
        for key in _FIGURE_FIELDS:
            if not isinstance(f.get(key), str) or not f[key].strip():
                raise _fail(source, f"{where}.{key}", "missing or empty (every figure needs its operation, source, "
                            "technology, voltage and how it was obtained)")
        out[fid] = Figure(id=fid, value_pj=float(v), **{k: f[k] for k in _FIGURE_FIELDS})
    return out


def _parse_model(name: str, m, figures: dict[str, Figure], source: str) -> EnergyModel:
    where = f"models.{name}"
    if not isinstance(m, dict):
        raise _fail(source, where, "must be an object")
    if not isinstance(m.get("description"), str) or not m["description"].strip():
        raise _fail(source, f"{where}.description", "missing or empty")
    available = m.get("available", True)
    if not isinstance(available, bool):
        raise _fail(source, f"{where}.available", "must be true or false")
    reason = m.get("reason", "")
    if not available and (not isinstance(reason, str) or not reason.strip()):
        raise _fail(source, f"{where}.reason", "an unavailable model must say why")
    raw_costs = m.get("costs", {})
    if not isinstance(raw_costs, dict):
        raise _fail(source, f"{where}.costs", "must be an object of term -> {figures, note}")
    costs = {}
    for term, c in raw_costs.items():
        cw = f"{where}.costs.{term}"
        if term not in TERMS:
            raise _fail(source, cw, f"unknown cost term; known: {', '.join(TERMS)}")
        if not isinstance(c, dict) or not isinstance(c.get("figures"), list) or not c["figures"]:
            raise _fail(source, cw, "needs a non-empty list 'figures' of figure ids")
        for fid in c["figures"]:
            if not isinstance(fid, str) or fid not in figures:
                raise _fail(source, f"{cw}.figures", f"unknown figure {fid!r}")
        note = c.get("note", "")
        if not isinstance(note, str):
            raise _fail(source, f"{cw}.note", "must be a string")
        costs[term] = Cost(term=term, figures=tuple(c["figures"]), note=note)
    split = {"neuron_update_active", "neuron_update_inactive"} & costs.keys()
    if len(split) == 1:
        raise _fail(source, f"{where}.costs", "neuron_update_active and neuron_update_inactive go together")
    if split and "neuron_update" in costs:
        raise _fail(source, f"{where}.costs", "give either neuron_update or the active/inactive pair, not both")
    if available and not costs:
        raise _fail(source, f"{where}.costs", "an available model needs at least one cost term")
    notes = m.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise _fail(source, f"{where}.notes", "must be a list of strings")
    platform = m.get("platform", "")
    if not isinstance(platform, str):
        raise _fail(source, f"{where}.platform", "must be a string")
    workload = m.get("workload", "spiking")
    if workload not in WORKLOADS:
        raise _fail(source, f"{where}.workload", f"must be one of {', '.join(WORKLOADS)}, got {workload!r}")
    if workload == "ann-twin" and set(costs) - {"mac"}:
        raise _fail(source, f"{where}.costs", "an ann-twin model costs multiply-accumulates only ('mac')")
    used = {f: figures[f] for c in costs.values() for f in c.figures}
    return EnergyModel(name=name, description=m["description"], platform=platform, costs=costs, figures=used,
                       notes=tuple(notes), available=available, reason=reason if not available else "",
                       origin=source, workload=workload)


def parse_models(data, source: str, extra_figures: dict[str, Figure] | None = None) -> dict[str, EnergyModel]:
    """Models from already-decoded JSON ``data``; figure ids resolve in the data first, then ``extra_figures``."""
    if not isinstance(data, dict):
        raise _fail(source, "", "an energy model file must be a JSON object with 'figures' and 'models'")
    if "schema" in data and data["schema"] != SCHEMA:
        raise _fail(source, "schema", f"expected {SCHEMA!r}, got {data['schema']!r}")
    figures = {**(extra_figures or {}), **_parse_figures(data.get("figures"), source)}
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise _fail(source, "models", "missing or empty (an object of model name -> model)")
    return {name: _parse_model(name, m, figures, source) for name, m in models.items()}


def _read_json(path: Path, source: str):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EnergyModelError(f"{source}: no such energy model file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise EnergyModelError(f"{source}: cannot be read ({type(exc).__name__})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnergyModelError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


@lru_cache(maxsize=1)
def _builtin() -> tuple[dict[str, Figure], dict[str, EnergyModel]]:
    ref = resources.files("snnkit.energy").joinpath("figures.json")
    data = json.loads(ref.read_text(encoding="utf-8"))
    source = "snnkit/energy/figures.json"
    return _parse_figures(data.get("figures"), source), parse_models(data, source)


def builtin_figures() -> dict[str, Figure]:
    """Every published figure shipped with snnkit, by id."""
    return dict(_builtin()[0])


def builtin_models() -> dict[str, EnergyModel]:
    """The built-in models by name (including ones marked unavailable, e.g. ``loihi2``)."""
    return dict(_builtin()[1])


def load_models(path: "str | Path") -> dict[str, EnergyModel]:
    """The models of a user file with the schema of ``figures.json``.

    Its figures may also refer to the built-in figure ids. Raises :class:`EnergyModelError` (one line naming
    the file and the problem) for anything malformed.
    """
    path = Path(path)
    return parse_models(_read_json(path, str(path)), str(path), extra_figures=builtin_figures())


def resolve_models(specs: "list[str] | None") -> list[EnergyModel]:
    """Models from ``--energy-model`` values: built-in names, or files (every model in the file).

    ``None`` or an empty list: every built-in model (unavailable ones included, so reports can say why).
    """
    builtin = builtin_models()
    if not specs:
        return list(builtin.values())
    out: list[EnergyModel] = []
    for spec in specs:
        if spec in builtin:
            out.append(builtin[spec])
        elif Path(spec).suffix.lower() == ".json" or Path(spec).exists():
            out.extend(load_models(spec).values())
        else:
            raise EnergyModelError(f"{spec}: neither a built-in energy model ({', '.join(builtin)}) nor a model file")
    names = [m.name for m in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EnergyModelError(f"energy model name(s) given twice: {', '.join(dup)}")
    return out


# ------------------------------------------------------------------------------------------- estimating


def _term_counts(term: str, layer: "LayerStats") -> tuple[int, int]:
    """(upper, lower) number of events of ``term`` in ``layer``."""
    updates, spikes = int(layer.neuron_updates), int(layer.spikes)
    fired = min(spikes, updates)
    if term == "neuron_update_active":
        return updates, fired
    if term == "neuron_update_inactive":
        return 0, updates - fired
    n = int(getattr(layer, TERMS[term]))
    return n, n


def energy_of(result: "TargetResult", model: "str | EnergyModel") -> EnergyEstimate:
    """The energy of ``result``'s run under ``model`` (a built-in name or an :class:`EnergyModel`).

    Raises :class:`EnergyModelError` for an unknown or unavailable model (e.g. ``loihi2``).
    """
    if isinstance(model, str):
        models = builtin_models()
        if model not in models:
            raise EnergyModelError(f"unknown energy model {model!r}; built-in: {', '.join(models)}")
        model = models[model]
    if not model.available:
        raise EnergyModelError(f"energy model {model.name!r}: {model.reason}")

    terms = {t: TermEnergy(term=t, counted_from=TERMS[t], pj=model.pj(t), count=0, count_min=0, joules=0.0,
                           joules_min=0.0, figures=list(c.figures), note=c.note) for t, c in model.costs.items()}
    layers = []
    for layer in result.layers:
        le = LayerEnergy(name=layer.name, kind=layer.kind, joules=0.0, joules_min=0.0)
        for t, te in terms.items():
            hi, lo = _term_counts(t, layer)
            if hi == 0 and lo == 0:
                continue
            te.count += hi
            te.count_min += lo
            le.terms[t] = hi * te.pj * PJ
            le.joules += hi * te.pj * PJ
            le.joules_min += lo * te.pj * PJ
        layers.append(le)
    for te in terms.values():
        te.joules = te.count * te.pj * PJ
        te.joules_min = te.count_min * te.pj * PJ

    notes = list(model.notes)
    if "neuron_update_active" in terms:
        notes.append("Neuron updates: the record holds totals only, not which updates were active. total_j counts "
                     "every update as active (upper bound); total_j_min counts as active only the updates that "
                     "emitted a spike and the rest as inactive (lower bound).")
    totals = result.totals()
    costed_fields = {TERMS[t] for t in terms}
    not_costed = [f"{f} ({n}): no figure in model {model.name!r}" for f, n in totals.items()
                  if n and f not in costed_fields]
    for f, n in totals.items():
        if f == "macs" and n and "mac" in terms:
            notes.append(f"MACs ({n}): {model.costs['mac'].note}")
    return EnergyEstimate(
        model=model.name, description=model.description, platform=model.platform, target=result.target,
        n_samples=int(result.outputs.shape[0]),
        total_j=float(sum(le.joules for le in layers)), total_j_min=float(sum(le.joules_min for le in layers)),
        layers=layers, terms=terms, figures=model.used_figures(), notes=notes, not_costed=not_costed,
        origin=model.origin)

"""The Target interface, the result record every target returns, and the registry of targets.

A target consumes a NIR graph (the single hand-off from training) and an input ``[B, T, ...]`` (spikes or
analog currents, already encoded) and returns a :class:`TargetResult`. Counting is not a target's business:
it reports per node what it emitted and ``snnkit.energy.counting`` turns that into synaptic ops, MACs and
neuron updates, the same way for every target.

What a target can do beyond running is asked of the target itself (the CLIs and the attack code never look at
its name): :meth:`Target.differentiable` (a view with gradients, for white-box and adaptive attacks),
:meth:`Target.query_proxy` (a faster stand-in giving bit-identical outputs, for attacks that query thousands of
times), :meth:`Target.export` (the files the target loads), :meth:`Target.footprint` (the bytes it stores for
a graph's connections) and :meth:`Target.check_available`. Its options are
its constructor's keyword arguments (:func:`accepted_options`). Adding a target: docs/architecture.md.

Importing this module does not import torch (the Lava worker side must never import it).
"""
from __future__ import annotations

import abc
import importlib
import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import nir
import numpy as np

from snnkit.energy.counting import LayerStats
from snnkit.graph.errors import DeployError

__all__ = ["DeployError", "Differentiable", "Exported", "Footprint", "LayerStats", "REFERENCE", "TARGETS", "Target",
           "TargetResult", "accepted_options", "dense_float32_footprint", "exports", "get_target", "make_target",
           "register_target", "target_class", "target_names"]


@dataclass
class TargetResult:
    """What a target returns for one run.

    outputs: ``[B, T, C]`` the graph's output node per step (spikes for spiking outputs), on the target's own
        time axis (see ``delay``).
    layers: per-node counts, in the graph's topological order.
    wall_s: wall-clock seconds of the run proper (graph build excluded, see ``build_s``).
    delay: steps by which the target's outputs lag the reference semantics (0 for torch; one per connection
        layer on Loihi). ``aligned_outputs`` removes it.
    records: optional per-node outputs ``[B, T, ...]`` when recording was requested.
    """

    target: str
    outputs: np.ndarray
    layers: list[LayerStats]
    wall_s: float
    build_s: float = 0.0
    delay: int = 0
    records: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def total_spikes(self) -> int:
        return int(sum(layer.spikes for layer in self.layers))

    @property
    def total_synops(self) -> int:
        return int(sum(layer.synops for layer in self.layers))

    @property
    def total_macs(self) -> int:
        return int(sum(layer.macs for layer in self.layers))

    @property
    def total_neuron_updates(self) -> int:
        return int(sum(layer.neuron_updates for layer in self.layers))

    def totals(self) -> dict[str, int]:
        """Every total the CLIs and reports print: synops, macs, neuron_updates, spikes."""
        return {"synops": self.total_synops, "macs": self.total_macs, "neuron_updates": self.total_neuron_updates,
                "spikes": self.total_spikes}

    def aligned_outputs(self, timesteps: int) -> np.ndarray:
        """Outputs on the reference time axis: steps ``delay .. delay + timesteps - 1``."""
        return self.outputs[:, self.delay : self.delay + timesteps]

    def predictions(self, timesteps: int | None = None) -> np.ndarray:
        """Class per sample: argmax of the output spike count (ties go to the lowest index)."""
        out = self.outputs if timesteps is None else self.aligned_outputs(timesteps)
        return out.sum(axis=1).argmax(axis=1)

    def summary(self) -> dict:
        """JSON-ready summary (no per-step arrays)."""
        return {
            "target": self.target,
            "n_samples": int(self.outputs.shape[0]),
            "timesteps": int(self.outputs.shape[1]),
            "delay": self.delay,
            "layers": [asdict(layer) for layer in self.layers],
            **{f"total_{k}": v for k, v in self.totals().items()},
            "wall_s": self.wall_s,
            "build_s": self.build_s,
            **({"info": self.info} if self.info else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.summary(), indent=2)

    @classmethod
    def concat(cls, results: "list[TargetResult]", summed: "tuple[str, ...]" = ()) -> "TargetResult":
        """Runs of consecutive ranges of samples (in order) as one run over all of them: outputs and records
        concatenated, per-node counts summed, times the longest (the runs went side by side), the first run's
        info with its ``summed`` keys (the target's :attr:`Target.summed_info`) added up over the runs. One
        result: itself."""
        if len(results) == 1:
            return results[0]
        first = results[0]
        layers = [LayerStats.combined([r.layers[i] for r in results]) for i in range(len(first.layers))]
        return cls(target=first.target, outputs=np.concatenate([r.outputs for r in results]), layers=layers,
                   wall_s=max(r.wall_s for r in results), build_s=max(r.build_s for r in results), delay=first.delay,
                   records={k: np.concatenate([r.records[k] for r in results]) for k in first.records},
                   info={**first.info, **{k: sum(r.info[k] for r in results) for k in summed if k in first.info}})


@dataclass
class Differentiable:
    """A view with gradients of a target running one graph (what gradient and adaptive attacks use).

    forward: the encoded input ``x [B, T, *input_shape]`` (a float torch tensor) -> the output node's values
        ``[B, T + delay, C]``, differentiable with respect to ``x``.
    delay: steps by which its outputs lag the reference time axis (as :attr:`TargetResult.delay`).
    exact: True when ``forward`` *is* the target's own computation (white-box attacks run on the target);
        False when it is a model of it (bit-identical values, estimated gradients): only adaptive attacks use it.
    via: what it is, in words, for reports.
    """

    forward: Callable[[Any], Any]
    delay: int
    exact: bool
    via: str


@dataclass
class Exported:
    """What :meth:`Target.export` wrote: ``files`` (role -> path), notes, warnings (lossy mappings) and
    target-specific ``details`` for the export report."""

    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


@dataclass
class Footprint:
    """The memory a target uses to store a graph's connections (weights and what goes with them).

    parts: bytes by part (``weights``, ``biases``, ``indices``, ``exponents``, ...), as the target stores them.
    dense_bytes: the same connections in the same number format with every weight stored (zeros included), so
        ``total / dense_bytes`` is what sparse storage saves on this target (1.0 where it stores zeros).
    weights_stored / weights_total: weight values kept in memory / weights of the graph (zeros included).
    layout: how the target stores them, in words (number formats, dense or sparse, assumptions).
    """

    parts: dict[str, int]
    dense_bytes: int
    weights_stored: int
    weights_total: int
    layout: str

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def summary(self) -> dict:
        """JSON-ready record (``bytes`` is the total)."""
        return {"bytes": self.total, "parts": dict(self.parts), "dense_bytes": self.dense_bytes,
                "stored_over_dense": self.total / self.dense_bytes if self.dense_bytes else None,
                "weights_stored": self.weights_stored, "weights_total": self.weights_total, "layout": self.layout}


def dense_float32_footprint(graph: nir.NIRGraph) -> Footprint:
    """Every weight and bias of ``graph``'s connection nodes as dense float32 (4 bytes each, zeros included):
    how torch, Norse and snnTorch hold a NIR graph's connections, and how a GPU holds the non-spiking twin."""
    from snnkit.graph import flatten_graph
    from snnkit.graph.kinds import WEIGHTED

    weights = biases = 0
    for node in flatten_graph(graph).nodes.values():
        if isinstance(node, WEIGHTED):
            weights += int(np.asarray(node.weight).size)
            bias = getattr(node, "bias", None)
            if bias is not None and np.ndim(bias) > 0:
                biases += int(np.asarray(bias).size)
    parts = {"weights": 4 * weights, "biases": 4 * biases}
    return Footprint(parts=parts, dense_bytes=sum(parts.values()), weights_stored=weights, weights_total=weights,
                     layout="dense float32: every weight (zeros included) and bias, 4 bytes each")


class Target(abc.ABC):
    """A place a NIR graph can run. Subclasses specialise the mapping, not the bookkeeping.

    ``name`` is the name it is registered under. A subclass implements :meth:`run` and may implement any of
    the capabilities below; the defaults say "cannot".
    """

    name: ClassVar[str] = ""
    summed_info: ClassVar[tuple[str, ...]] = ()
    """Keys of :attr:`TargetResult.info` that count work (steps, seconds) and add up when runs on parts of
    the samples make one result (:meth:`TargetResult.concat`, ``--distributed``); the others are the first run's."""

    def check_available(self) -> None:
        """Raise a one-line :class:`DeployError` when this target cannot run here (a missing environment)."""

    @abc.abstractmethod
    def run(self, graph: nir.NIRGraph, x: np.ndarray, *, record: bool = False, counts: bool = True) -> TargetResult:
        """Run ``graph`` on input ``x`` of shape ``[B, T, ...]``; fresh neuron state for every sample.

        counts: False leaves ``layers`` empty (the outputs are all an attack's query needs; counting costs
        about a third of a small network's query on the Loihi targets). A target may ignore it.
        """

    def differentiable(self, graph: nir.NIRGraph, probe: np.ndarray, *, device: str = "cpu") -> Differentiable | None:
        """A differentiable view of this target running ``graph``, or None when it has none.

        probe: encoded inputs ``[B, T, ...]`` like those it will see (a quantising target infers its input
        coding from them); device: where a model of the target runs (a target that runs itself ignores it).
        """
        return None

    def query_proxy(self, *, device: str = "cpu") -> "Target | None":
        """A faster target whose outputs equal this one's bit for bit, to answer attack queries (the final
        verdicts are then re-checked here), or None when queries should go to this target itself."""
        return None

    def footprint(self, graph: nir.NIRGraph, probe: np.ndarray | None = None) -> Footprint:
        """The bytes this target stores for ``graph``'s connections (:class:`Footprint`).

        probe: encoded inputs ``[B, T, ...]`` it will see (a quantising target infers its input coding from them;
        None: its default). Default: :func:`dense_float32_footprint`, how a torch-based target holds the graph.
        """
        return dense_float32_footprint(graph)

    def export(self, graph: nir.NIRGraph, out_dir: Path, *, source: str = "graph") -> Exported | None:
        """Write the files this target loads for ``graph`` into ``out_dir`` (beside ``model.nir``), or return
        None when it needs nothing but the NIR file. A graph it cannot carry raises a one-line DeployError."""
        return None

    def verify_export(self, graph: nir.NIRGraph, exported: Exported, x: np.ndarray, labels: np.ndarray | None = None,
                      *, check: dict | None = None, source: str = "graph") -> Exported | None:
        """Check files :meth:`export` wrote beyond what the target runs itself, on the encoded probe ``x``
        (``labels``: its classes, or None; ``check``: the target's own check on it, with the reference's
        accuracy). Returns ``details`` (merged into the export report's check), notes and warnings, or None."""
        return None


# ------------------------------------------------------------------------------------------------ registry

# Built-in targets, imported only when asked for (the Lava worker side must never import torch).
TARGETS: dict[str, str] = {
    "torch": "snnkit.deploy.torch_target:TorchTarget",
    "norse": "snnkit.deploy.norse_target:NorseTarget",
    "snntorch": "snnkit.deploy.snntorch_target:SnnTorchTarget",
    "lava": "snnkit.deploy.lava.target:LavaTarget",
    "loihi-emu": "snnkit.deploy.loihi.emulator:LoihiEmulatorTarget",
}


PLUGIN_GROUP = "snnkit.targets"
"""Entry-point group through which another installed package adds targets (``name = "module:Class"``)."""


REFERENCE = "torch"
"""The target that runs the reference semantics (docs/semantics.md); every other one is compared with it."""


def register_target(name: str, spec: str) -> None:
    """Make the Target class at ``spec`` (``"package.module:Class"``) available as ``name`` in this process."""
    if ":" not in spec:
        raise ValueError(f"target spec must be 'module:Class', not {spec!r}")
    TARGETS[name] = spec


def target_names() -> list[str]:
    """Every target a command accepts: the built-in and registered ones, then installed plugins."""
    from importlib.metadata import entry_points

    return list(dict.fromkeys([*TARGETS, *(ep.name for ep in entry_points(group=PLUGIN_GROUP))]))


def target_class(name: str) -> type[Target]:
    """The class registered as ``name`` (DeployError naming the available ones otherwise)."""
    spec = TARGETS.get(name)
    if spec is None:
        from importlib.metadata import entry_points

        spec = next((ep.value for ep in entry_points(group=PLUGIN_GROUP) if ep.name == name), None)
    if spec is None:
        raise DeployError(f"unknown target {name!r}; available: {', '.join(target_names())}")
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)


def accepted_options(cls: type) -> set[str]:
    """The keyword options a target class's constructor takes, following ``**options`` up its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def exports(name: str) -> bool:
    """Whether the target ``name`` writes files of its own (implements :meth:`Target.export`)."""
    return target_class(name).export is not Target.export


def get_target(name: str, **options) -> Target:
    """Instantiate a target by name (one of ``TARGETS``) with its options."""
    return target_class(name)(**options)


def make_target(name: str, **options) -> Target:
    """``get_target(name, ...)`` with the options the target takes; unset (None) and foreign options dropped.

    This is how commands pass their shared options (``--device``, ``--dt``, ``--batch-size``) to any target.
    """
    cls = target_class(name)
    accepted = accepted_options(cls)
    return cls(**{k: v for k, v in options.items() if v is not None and k in accepted})

"""The ``torch`` target (snnkit's own executor, the reference) and the machinery every torch-based target shares.

A torch-based target turns a NIR graph into a *runner*: a callable taking ``x [B, T, ...]`` (a float32 tensor)
and returning the output of every node it can see, by NIR node name, as ``[B, T, ...]`` tensors. The shared
:class:`TorchBasedTarget` validates the input, runs it in batches, reduces each node's output to its activity
(``snnkit.energy.counting``) and builds the :class:`~snnkit.deploy.base.TargetResult`. Counts always refer to
the original (flattened) graph, whatever a target rewrote.

Built runners are cached per graph object (``snnkit.deploy.cache``): an attack querying a target batch after
batch pays the import/build once. :meth:`TorchBasedTarget.network` hands out the cached :class:`Network`; its
runner is differentiable when called with gradients enabled: :meth:`TorchBasedTarget.differentiable` hands it
out as the target's exact differentiable view (white-box attacks on the target itself).
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import nir
import numpy as np
import torch

from snnkit.deploy.base import DeployError, Differentiable, Exported, Target, TargetResult
from snnkit.deploy.cache import BuildCache
from snnkit.energy.counting import ActivityAccumulator, layer_stats
from snnkit.graph import GraphPlan, flatten_graph, input_shape, plan, weighted_input_shapes
from snnkit.graph.conventions import resolve

Runner = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def check_input(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` as float32 ``[B, T, *shape]``; DeployError naming the problem otherwise."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DeployError(f"input has dtype {x.dtype}; expected numbers (float, int or bool)")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DeployError(f"input has dtype {x.dtype}; expected real numbers")
    want = ", ".join(str(s) for s in shape)
    if x.ndim != len(shape) + 2 or tuple(x.shape[2:]) != tuple(shape):
        raise DeployError(f"input has shape {list(x.shape)}; the graph expects [B, T, {want}]")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DeployError(f"input has shape {list(x.shape)}: no samples or no steps")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DeployError("input holds NaN or infinite values")
    return x


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given (DeployError if unavailable)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeployError(f"device {device!r} requested but CUDA is not available")
    return dev


@dataclass
class Network:
    """A graph built for a torch-based target: the flat graph, its plan, the input shape (no batch, no time),
    the runner, what the build recorded (``info``) and how long it took (s)."""

    flat: nir.NIRGraph
    plan: GraphPlan
    input_shape: tuple[int, ...]
    runner: Runner
    info: dict = field(default_factory=dict)
    build_s: float = 0.0

    def output(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """The Output node's value from a runner's result (importers that turn the Output node into a return
        statement do not record it: it is then the sum of its sources)."""
        name = self.plan.output_name
        return out[name] if name in out else sum(out[s] for s, _ in self.plan.inputs[name])


class TorchBasedTarget(Target):
    """A target whose runner is a torch module stepping the graph (see the module docstring).

    Options: ``dt`` (seconds; default the graph's metadata, else 1e-4), ``reset`` and ``if_convention`` (what
    NIR leaves open, ``snnkit.graph.conventions``), ``batch_size`` (samples per call).
    """

    device = torch.device("cpu")

    def __init__(self, *, dt: float | None = None, reset: str | None = None, if_convention: str = "auto",
                 batch_size: int = 256):
        if batch_size < 1:
            raise DeployError(f"batch_size must be >= 1, not {batch_size}")
        self.dt = dt
        self.reset = reset
        self.if_convention = if_convention
        self.batch_size = int(batch_size)
        self.info: dict = {}
        self._networks = BuildCache()

    @abc.abstractmethod
    def build(self, graph: nir.NIRGraph) -> Runner:
        """The runner for a flat graph whose open questions are answered (``metadata["dt"]`` and
        ``metadata["reset"]`` set, IF gains per step: ``snnkit.graph.conventions.resolve``); may record what it
        changed in ``self.info`` (``"warnings"``: a list of lines for the user)."""

    def network(self, graph: nir.NIRGraph) -> Network:
        """The built network of ``graph`` (built on first use, then cached for this graph object)."""
        return self._networks.get(graph, None, lambda: self._build_network(graph))

    def _build_network(self, graph: nir.NIRGraph) -> Network:
        t0 = time.perf_counter()
        flat = flatten_graph(graph)
        p = plan(flat)
        resolved = resolve(flat, dt=self.dt, reset=self.reset, if_convention=self.if_convention)
        self.info = {"device": str(self.device), "warnings": list(resolved.notes)}
        runner = self.build(resolved.graph)
        info = dict(self.info)
        if not info["warnings"]:
            info.pop("warnings")
        return Network(flat, p, input_shape(flat), runner, info, time.perf_counter() - t0)

    def differentiable(self, graph: nir.NIRGraph, probe: np.ndarray, *, device: str = "cpu") -> Differentiable:
        """The target's own network with gradients on (it runs on the target's device)."""
        net = self.network(graph)
        return Differentiable(forward=lambda x: net.output(net.runner(x.to(self.device))), delay=0, exact=True,
                              via=f"{self.name} (the target itself)")

    def run(self, graph: nir.NIRGraph, x: np.ndarray, *, record: bool = False, counts: bool = True) -> TargetResult:
        t0 = time.perf_counter()
        net = self.network(graph)
        build_s = time.perf_counter() - t0
        flat, p, runner = net.flat, net.plan, net.runner
        x = check_input(x, net.input_shape)
        self.info = dict(net.info)
        acc = ActivityAccumulator()
        outputs, records = [], {}
        wall = 0.0
        with torch.no_grad():
            for i in range(0, x.shape[0], self.batch_size):
                xb = torch.from_numpy(x[i : i + self.batch_size]).to(self.device)
                t0 = time.perf_counter()
                out = runner(xb)
                out.setdefault(p.input_name, xb)
                out[p.output_name] = net.output(out)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                wall += time.perf_counter() - t0
                for name, y in out.items() if counts or record else ():
                    y = y.detach().float().cpu().numpy()
                    if counts:
                        acc.add(name, y)
                    if record:
                        records.setdefault(name, []).append(y)
                outputs.append(out[p.output_name].detach().float().cpu().numpy())
        stats = layer_stats(flat, acc.activity(), batch=x.shape[0], steps=x.shape[1],
                            input_shapes=weighted_input_shapes(flat)) if counts else []
        return TargetResult(target=self.name, outputs=np.concatenate(outputs), layers=stats, wall_s=wall,
                            build_s=build_s, records={k: np.concatenate(v) for k, v in records.items()},
                            info=dict(self.info))


class TorchTarget(TorchBasedTarget):
    """snnkit's executor (``snnkit.export.from_nir``): the reference semantics, on CPU or CUDA.

    Options: ``device`` ("auto": CUDA when available), ``dt``, ``reset`` (override the reset mode),
    ``batch_size``.
    """

    name = "torch"

    def __init__(self, *, device: str = "auto", dt: float | None = None, reset: str | None = None,
                 if_convention: str = "auto", batch_size: int = 256):
        super().__init__(dt=dt, reset=reset, if_convention=if_convention, batch_size=batch_size)
        self.device = resolve_device(device)

    def build(self, graph: nir.NIRGraph) -> Runner:
        from snnkit.export.executor import NIRNetwork

        net = NIRNetwork(graph).to(self.device).eval()
        self.info.update(dt=net.dt, resets=net.resets, stepped=net.plan.has_cycles)
        return net.run


class FrameworkTarget(TorchBasedTarget):
    """A framework's own NIR importer behind the Target interface (``norse``, ``snntorch``).

    The graph is checked against the nodes the importer maps (``supported``), rewritten around the importer's
    known bugs (:meth:`rewrite`, ``snnkit.export.rewrite``), imported and stepped by the framework.
    :meth:`export` writes that rewritten graph: the file a user gives the framework's importer directly.
    """

    framework: ClassVar[str] = ""
    supported: ClassVar[tuple[type, ...]] = (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten,
                                             nir.SumPool2d, nir.AvgPool2d, nir.LIF, nir.IF, nir.CubaLIF)

    @abc.abstractmethod
    def work_arounds(self, graph: nir.NIRGraph) -> tuple[nir.NIRGraph, list[str]]:
        """The framework's rewrites of a graph of supported nodes (DeployError for what it cannot represent)."""

    def rewrite(self, graph: nir.NIRGraph) -> tuple[nir.NIRGraph, list[str]]:
        """The graph the framework's importer reads correctly, and one line per change (DeployError naming the
        first node the importer has no mapping for)."""
        for name, node in graph.nodes.items():
            if not isinstance(node, self.supported):
                raise DeployError(f"{self.name} target: node {name!r} ({type(node).__name__}) has no "
                                  f"{self.framework} mapping")
        return self.work_arounds(graph)

    def export(self, graph: nir.NIRGraph, out_dir: Path, *, source: str = "graph") -> Exported:
        from snnkit.graph import write_nir

        resolved = resolve(flatten_graph(graph), dt=self.dt, reset=self.reset, if_convention=self.if_convention)
        rewritten, changes = self.rewrite(resolved.graph)
        path = write_nir(rewritten, Path(out_dir) / f"model_{self.name}.nir")
        return Exported(files={self.name: str(path)}, notes=[f"{self.name} rewrite: {c}" for c in changes],
                        warnings=resolved.notes)


class StepRecorder:
    """Forward hooks that keep what each named submodule returns, one entry per call (per step).

    ``names`` maps a submodule's attribute path to the NIR node name it stands for. Stateful modules return
    ``(output, state)``; the first element is kept.
    """

    def __init__(self, module: torch.nn.Module, names: dict[str, str]):
        self.steps: dict[str, list[torch.Tensor]] = {}
        self._hooks = []
        subs = dict(module.named_modules())
        for path, node in names.items():
            if path not in subs:
                raise DeployError(f"node {node!r}: the imported network has no module {path!r} to record")
            self._hooks.append(subs[path].register_forward_hook(self._keep(node)))

    def _keep(self, node: str):
        def hook(mod, inputs, output):
            y = output[0] if isinstance(output, tuple) else output
            self.steps.setdefault(node, []).append(y)  # with its autograd graph when gradients are on
        return hook

    def take(self) -> dict[str, torch.Tensor]:
        """What was recorded since the last call, as ``[B, T, ...]`` per node (steps stacked on axis 1)."""
        out = {name: torch.stack(ys, 1) for name, ys in self.steps.items()}
        self.steps = {}
        return out

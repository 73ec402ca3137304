"""The ``torch`` target (snnkit's own executor, the reference) and the machinery every torch-based target shares.

A torch-based target turns a NIR graph into a *runner*: a callable taking ``x [B, T, ...]`` (a float32 tensor)
and returning the output of every node it can see, by NIR node name, as ``[B, T, ...]`` tensors. The shared
:class:`TorchBasedTarget` validates the input, runs it in batches, reduces each node's output to its activity
(``snnkit.energy.counting.Activity``) and builds the :class:`~snnkit.deploy.base.TargetResult` with the shared
``layer_stats``. Counts always refer to the original (flattened) graph, whatever a target rewrote.

Built runners are cached per graph object (``snnkit.deploy.cache``): an attack querying a target batch after
batch pays the import/build once. :meth:`TorchBasedTarget.network` hands out the cached :class:`Network`; its
runner is differentiable when called with gradients enabled (white-box attacks on the target itself).
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Callable

import nir
import numpy as np
import torch

from snnkit.deploy.base import DeployError, Target, TargetResult, layer_stats
from snnkit.deploy.cache import BuildCache
from snnkit.energy.counting import WEIGHTED, Activity
from snnkit.export.graph import flatten_graph, plan

Runner = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class ActivityAccumulator:
    """Per-node activity summed over batches, with the same definition as ``Activity.from_output``."""

    def __init__(self) -> None:
        self._sum: dict[str, np.ndarray] = {}
        self._nonzero: dict[str, np.ndarray] = {}
        self._counts: dict[str, bool] = {}

    def add(self, name: str, y: np.ndarray) -> None:
        s = y.sum(axis=(0, 1), dtype=np.float64)
        nz = (y != 0).sum(axis=(0, 1)).astype(np.int64)
        counts = bool(np.all(y >= 0) and np.all(np.mod(y, 1) == 0))
        if name in self._sum:
            self._sum[name] += s
            self._nonzero[name] += nz
            self._counts[name] &= counts
        else:
            self._sum[name], self._nonzero[name], self._counts[name] = s, nz, counts

    def activity(self) -> dict[str, Activity]:
        return {n: (Activity(np.rint(self._sum[n]).astype(np.int64), False) if self._counts[n]
                    else Activity(self._nonzero[n], True)) for n in self._sum}


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


def _input_shapes(graph: nir.NIRGraph, activity: dict[str, Activity]) -> dict[str, tuple[int, ...]]:
    """Input shape of every weighted node: its source's recorded output shape, else from its parameters."""
    shapes = {}
    for name, node in graph.nodes.items():
        if not isinstance(node, WEIGHTED):
            continue
        srcs = [s for s, d in graph.edges if d == name and s in activity]
        if srcs:
            shapes[name] = tuple(activity[srcs[0]].events.shape)
        elif isinstance(node, (nir.Affine, nir.Linear)):
            shapes[name] = (np.asarray(node.weight).shape[1],)
        else:
            raise DeployError(f"node {name!r}: its input was not recorded, so its operations cannot be counted")
    return shapes


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
    plan: object
    input_shape: tuple[int, ...]
    runner: Runner
    info: dict = field(default_factory=dict)
    build_s: float = 0.0


class TorchBasedTarget(Target):
    """A target whose runner is a torch module stepping the graph (see the module docstring).

    Options: ``dt`` (seconds; default the graph's metadata, else 1e-4), ``batch_size`` (samples per call).
    """

    device = torch.device("cpu")

    def __init__(self, *, dt: float | None = None, batch_size: int = 256):
        if batch_size < 1:
            raise DeployError(f"batch_size must be >= 1, not {batch_size}")
        self.dt = dt
        self.batch_size = int(batch_size)
        self.info: dict = {}
        self._networks = BuildCache()

    @abc.abstractmethod
    def build(self, graph: nir.NIRGraph) -> Runner:
        """The runner for a flat graph; may record what it changed in ``self.info``."""

    def network(self, graph: nir.NIRGraph) -> Network:
        """The built network of ``graph`` (built on first use, then cached for this graph object)."""
        return self._networks.get(graph, None, lambda: self._build_network(graph))

    def _build_network(self, graph: nir.NIRGraph) -> Network:
        t0 = time.perf_counter()
        flat = flatten_graph(graph)
        p = plan(flat)
        shape = tuple(int(s) for s in np.asarray(flat.nodes[p.input_name].input_type.get("input")).tolist())
        self.info = {"device": str(self.device)}
        runner = self.build(flat)
        return Network(flat, p, shape, runner, dict(self.info), time.perf_counter() - t0)

    def run(self, graph: nir.NIRGraph, x: np.ndarray, *, record: bool = False) -> TargetResult:
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
                if p.output_name not in out:  # importers that turn Output into a return statement
                    out[p.output_name] = sum(out[s] for s, _ in p.inputs[p.output_name])
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                wall += time.perf_counter() - t0
                for name, y in out.items():
                    y = y.detach().float().cpu().numpy()
                    acc.add(name, y)
                    if record:
                        records.setdefault(name, []).append(y)
                outputs.append(out[p.output_name].detach().float().cpu().numpy())
        activity = acc.activity()
        stats = layer_stats(flat, activity, batch=x.shape[0], steps=x.shape[1],
                            input_shapes=_input_shapes(flat, activity))
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
                 batch_size: int = 256):
        super().__init__(dt=dt, batch_size=batch_size)
        self.device = resolve_device(device)
        self.reset = reset

    def build(self, graph: nir.NIRGraph) -> Runner:
        from snnkit.export.executor import NIRNetwork

        net = NIRNetwork(graph, dt=self.dt, reset=self.reset).to(self.device).eval()
        self.info.update(dt=net.dt, resets=net.resets, stepped=net.plan.has_cycles)
        return net.run


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

"""The ``norse`` target: the graph imported with Norse's own ``norse.torch.from_nir`` and stepped by Norse.

Norse 1.1.0's importer has known gaps (docs/reference/nir-conventions.md); the graph is rewritten first
(``snnkit.export.rewrite``) and the imported cells are corrected where the importer drops a parameter:

| gap in ``norse.torch.from_nir`` | work-around |
|---|---|
| LIF and IF ignore ``r`` (with a warning) | ``r`` multiplied into the source layer's weights (``fold_input_gain``) |
| ``Flatten`` counts the batch axis | ``batch_agnostic_flatten`` |
| no AvgPool2d mapping (the node is silently skipped) | ``pool_to_conv`` (channel-diagonal Conv2d) |
| SumPool2d padding ignored | ``pool_to_conv`` for padded SumPool2d |
| ``v_reset`` ignored (always 0) | each cell's ``p.v_reset`` set from the graph after import |
| no reset mode in NIR | a reset by subtraction (snnkit's metadata, ``reset="subtract"``) sets Norse's ``reset_subtract`` on LIF and CubaLIF cells; Norse's IAF has none (said in ``info["warnings"]``) |
| CubaLIF's synapse also leaks towards ``v_leak`` | the synapse's ``v_leak`` set to 0 after import |
| state starts at ``v_leak`` | every cell starts from a zero state passed in at ``t = 0`` |
| nested subgraphs | flattened before import (``snnkit.graph.flatten_graph``) |
| nodes run in depth-first order (a join of branches of unequal length reads one a step late) | the executor's order set to the graph's topological order (acyclic graphs) |

Norse integrates a LIF as ``v + dt/tau ((v_leak - v) + I)`` rather than ``beta v + (1-beta)(v_leak + r I)``:
the same equation with another rounding, so spikes agree except where a membrane lands within float32
rounding of the threshold (measured in the tests and docs/semantics.md). Runs on the CPU (Norse keeps parameters
in plain tuples that ``.to(device)`` does not move).
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

import nir
import numpy as np
import torch

from snnkit.deploy.torch_target import FrameworkTarget, Runner, StepRecorder
from snnkit.export.rewrite import batch_agnostic_flatten, fold_input_gain, pool_to_conv
from snnkit.graph import DeployError, graph_dt
from snnkit.graph.conventions import node_resets
from snnkit.graph.kinds import SPIKING

def _gain(name: str, node: nir.NIRNode):
    """Norse ignores ``r`` of LIF and IF: move it into the weights."""
    if isinstance(node, nir.LIF):
        return np.asarray(node.r, np.float64), nir.LIF(tau=node.tau, r=np.ones_like(np.asarray(node.r)),
                                                       v_leak=node.v_leak, v_threshold=node.v_threshold,
                                                       v_reset=node.v_reset)
    if isinstance(node, nir.IF):
        return np.asarray(node.r, np.float64), nir.IF(r=np.ones_like(np.asarray(node.r)),
                                                      v_threshold=node.v_threshold, v_reset=node.v_reset)
    return None


def norse_graph(graph: nir.NIRGraph) -> tuple[nir.NIRGraph, list[str]]:
    """The rewritten graph Norse's importer reads correctly, and the list of changes."""
    changes: list[str] = []
    for rewrite in (batch_agnostic_flatten, pool_to_conv, lambda g: fold_input_gain(g, _gain, "input gain r")):
        graph, done = rewrite(graph)
        changes += done
    return graph, changes


def _sanitize(name: str) -> str:
    return name.replace(".", "_")


def _topological_order(module, graph: nir.NIRGraph, names: dict[str, str]) -> None:
    """nirtorch's executor runs the nodes in depth-first preorder from the input, which is not an order where
    every node follows its sources once branches of different lengths join (a residual block's projection
    shortcut): the joining node then reads the shorter branch's output of the previous step. For graphs without
    cycles the order is set to the graph's topological order (``snnkit.graph.plan``); recurrent graphs keep
    nirtorch's, whose one-step-old reads are their recurrent edges."""
    from snnkit.graph import plan

    p = plan(graph)
    order = getattr(module, "execution_order", None)
    if p.has_cycles or order is None:
        return
    rank = {name: i for i, name in enumerate(p.order)}
    module.execution_order = sorted(order, key=lambda node: rank.get(names.get(node.name, node.name), len(rank)))


def _zero_state(cell: torch.nn.Module):
    """A zero initial state for an imported Norse cell (or None for stateless modules)."""
    from norse.torch.functional.iaf import IAFFeedForwardState
    from norse.torch.functional.leaky_integrator_box import LIBoxState
    from norse.torch.functional.lif_box import LIFBoxFeedForwardState
    from norse.torch.module.iaf import IAFCell
    from norse.torch.module.lif_box import LIFBoxCell
    from norse.torch.utils.import_nir import CubaLIF as NorseCubaLIF

    zero = torch.zeros(())
    if isinstance(cell, LIFBoxCell):
        return (LIFBoxFeedForwardState(v=zero),)
    if isinstance(cell, IAFCell):
        return (IAFFeedForwardState(v=zero),)
    if isinstance(cell, NorseCubaLIF):
        return ((LIBoxState(v=zero), LIFBoxFeedForwardState(v=zero)),)
    return None


def _fix_cell(cell: torch.nn.Module, node: nir.NIRNode, reset: str) -> bool:
    """Set what Norse's importer drops: ``v_reset`` (all cells), the synapse's leak (CubaLIF: none) and a reset
    by subtraction (Norse's ``reset_subtract``, for its LIF cells). Returns False when the cell cannot reset by
    subtraction (Norse's IAF has no reset method)."""
    from norse.torch.functional.reset import reset_subtract
    from norse.torch.utils.import_nir import CubaLIF as NorseCubaLIF

    v_reset = torch.as_tensor(np.asarray(0.0 if node.v_reset is None else node.v_reset), dtype=torch.float32)
    lif = cell.lif if isinstance(cell, NorseCubaLIF) else cell
    if isinstance(cell, NorseCubaLIF):
        cell.synapse.p = cell.synapse.p._replace(v_leak=torch.zeros(()))
    lif.p = lif.p._replace(v_reset=v_reset)
    if reset != "subtract":
        return True
    if "reset_method" not in lif.p._fields:
        return False
    lif.p = lif.p._replace(reset_method=reset_subtract)
    return True


class NorseTarget(FrameworkTarget):
    """Norse (``norse.torch.from_nir``), stepped one step at a time with explicit zero initial state.

    Options: ``dt`` (s; default the graph's metadata, else 1e-4), ``reset``, ``if_convention``, ``batch_size``.
    """

    name = "norse"
    framework = "Norse"

    def work_arounds(self, graph: nir.NIRGraph) -> tuple[nir.NIRGraph, list[str]]:
        return norse_graph(graph)

    def build(self, graph: nir.NIRGraph) -> Runner:
        try:
            with warnings.catch_warnings():  # Norse scripts functions with the deprecated torch.jit at import
                warnings.simplefilter("ignore")
                import norse
                import norse.torch
                from nirtorch.graph_executor import GraphExecutorState
        except ImportError as exc:
            raise DeployError(f"norse target: Norse is not installed ({exc}); pip install norse") from None
        dt = graph_dt(graph)
        resets = node_resets(graph)
        rewritten, changes = self.rewrite(graph)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as log:
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            try:
                module = norse.torch.from_nir(rewritten, dt=dt)
            except Exception as exc:  # the importer raises assorted types
                raise DeployError(f"norse target: norse.torch.from_nir failed ({str(exc).splitlines()[0]})") from None
            finally:
                logging.disable(logging.NOTSET)
        module.eval()
        names = {_sanitize(n): n for n in rewritten.nodes}
        if len(names) != len(rewritten.nodes):
            raise DeployError("norse target: two node names differ only in '.' vs '_' (Norse cannot tell them apart)")
        _topological_order(module, rewritten, names)
        initial = {}
        for path, node_name in names.items():
            cell = getattr(module, path, None)
            node = rewritten.nodes[node_name]
            if isinstance(node, SPIKING):
                if not _fix_cell(cell, node, resets[node_name]):
                    self.info["warnings"].append(f"{node_name}: reset by subtraction is not available for Norse's "
                                                 "IAF cell, which resets to v_reset")
                initial[path] = _zero_state(cell)
        recorder = StepRecorder(module, {p: n for p, n in names.items() if getattr(module, p, None) is not None})
        self.info.update(dt=dt, framework=f"norse {norse.__version__}", rewrites=changes,
                         importer_output=log.getvalue().strip() or None)

        def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
            state = GraphExecutorState(state={k: v for k, v in initial.items()})
            for t in range(x.shape[1]):
                _, state = module(x[:, t], state)
            return recorder.take()

        return run

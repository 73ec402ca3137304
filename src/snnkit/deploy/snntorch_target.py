"""The ``snntorch`` target: the graph imported with snnTorch's ``snntorch.import_nir.import_from_nir``.

snnTorch 1.0.0's importer has known bugs (docs/reference/nir-conventions.md). The graph is rewritten first
(``snnkit.export.rewrite``) and the imported modules corrected where the importer builds them wrong:

| bug in ``import_from_nir`` | work-around |
|---|---|
| ``dt = 1e-4`` s is hard-coded | ``rescale_time``: time constants scaled so that ``1 - 1e-4/tau'`` is the graph's decay |
| LIF refuses ``v_leak != 0`` | ``leak_to_bias``: ``v_leak / r`` added to the source layer's bias |
| LIF/CubaLIF divide the threshold by ``r dt/tau`` (``w_in dt/tau_syn``) when it is not 1 | ``fold_input_gain``: that gain multiplied into the source weights, so it is 1 |
| IF becomes ``Leaky(beta=0.9)`` with reset by subtraction, returning ``(spk, mem)`` | ``if_as_lif``: written as a LIF whose decay rounds to exactly 1 in float32 (so a ``model_snntorch.nir`` imports right in snnTorch itself) |
| ``Flatten`` counts the batch axis | ``batch_agnostic_flatten`` |
| SumPool2d padding ignored | ``pool_to_conv`` for padded SumPool2d |
| pooling ``kernel_size``/``stride`` written as scalars (snnTorch's and SpikingJelly's exporters) fail in the importer (``'numpy.int64' object is not iterable``) | ``pool_params_as_pairs`` |
| per-neuron decays left in float64 on the recurrent path (states then become float64) | the module cast to float32 |
| recurrent graphs fail (``'GraphModule' object has no attribute 'items'``) | snnTorch's own recurrent mapping (``RSynaptic``/``RLeaky`` built by its ``_nir_to_snntorch_module``) executed by nirtorch's ``GraphExecutor`` |
| ``RSynaptic``/``RLeaky`` with ``reset_delay=False`` crash on ``None / tensor`` | ``reset_delay=True`` plus the immediate reset applied after every step (what ``reset_delay=False`` means) |
| a diagonal recurrent weight becomes ``RecurrentOneToOne``, which drops the bias | refused (DeployError) when that bias is not zero |

Conventions aligned with the reference while stepping: hidden state cleared before every batch; at ``t = 0`` a
recurrent layer's bias is left out for that one step (snnTorch evaluates ``W 0 + b`` there, the reference reads a
silent recurrent edge); a reset by subtraction (snnkit's metadata, or ``reset="subtract"``) acts in the step the
neuron fires, on integrate-only modules (snnTorch's own ``"subtract"`` acts a step late, and with
``reset_delay=False`` subtracts twice after a large input). What stays different (docs/semantics.md): snnTorch
computes ``beta v + I`` in two roundings where snnkit may fuse them. Runs on the CPU.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import nir
import numpy as np
import torch

from snnkit.deploy.torch_target import FrameworkTarget, Runner, StepRecorder
from snnkit.export.rewrite import (batch_agnostic_flatten, fold_input_gain, leak_to_bias, pool_params_as_pairs,
                                   pool_to_conv, replace_nodes, rescale_time)
from snnkit.graph import DeployError, graph_dt, plan
from snnkit.graph.conventions import node_resets
from snnkit.graph.kinds import SPIKING

SNNTORCH_DT = 1e-4
"""The step length snnTorch's importer assumes (seconds)."""

def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _gain(name: str, node: nir.NIRNode):
    """The input gain snnTorch would divide into the threshold, and the node with unit gain."""
    if isinstance(node, nir.LIF):
        tau = _f64(node.tau)
        return _f64(node.r) * SNNTORCH_DT / tau, nir.LIF(tau=tau, r=tau / SNNTORCH_DT, v_leak=node.v_leak,
                                                          v_threshold=node.v_threshold, v_reset=node.v_reset)
    if isinstance(node, nir.IF):
        return _f64(node.r), nir.IF(r=np.ones_like(_f64(node.r)), v_threshold=node.v_threshold, v_reset=node.v_reset)
    if isinstance(node, nir.CubaLIF):
        ts, tm = _f64(node.tau_syn), _f64(node.tau_mem)
        k = (_f64(node.w_in) * SNNTORCH_DT / ts) * (_f64(node.r) * SNNTORCH_DT / tm)
        return k, nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=tm / SNNTORCH_DT, v_leak=node.v_leak,
                              v_threshold=node.v_threshold, v_reset=node.v_reset, w_in=ts / SNNTORCH_DT)
    return None


UNIT_DECAY_TAU = 2.0 ** 40
"""IF is written for snnTorch as a LIF with ``tau = 2**40 dt`` and ``r = 2**40``: its decay ``1 - 2**-40`` rounds to
exactly 1 in float32 and its input scale ``r dt / tau`` is exactly 1, so snnTorch builds an exact IF."""


def if_as_lif(graph: nir.NIRGraph) -> tuple[nir.NIRGraph, list[str]]:
    """Every IF (with unit gain) as the LIF of :data:`UNIT_DECAY_TAU`: snnTorch's importer turns an IF into a
    ``Leaky(beta=0.9)`` with reset by subtraction."""
    new = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.IF):
            r = np.ones_like(_f64(node.r)) * UNIT_DECAY_TAU
            new[name] = nir.LIF(tau=r * SNNTORCH_DT, r=r, v_leak=np.zeros_like(r), v_threshold=node.v_threshold,
                                v_reset=node.v_reset)
    changes = [f"{name}: IF written as a LIF whose decay rounds to 1 (tau = 2**40 dt)" for name in new]
    return (replace_nodes(graph, new) if new else graph), changes


def snntorch_graph(graph: nir.NIRGraph, dt: float) -> tuple[nir.NIRGraph, list[str]]:
    """The rewritten graph snnTorch's importer reads correctly, and the list of changes."""
    for name, node in graph.nodes.items():
        if isinstance(node, nir.CubaLIF) and np.any(_f64(node.v_leak) != 0):
            raise DeployError(f"snntorch target: node {name!r}: snnTorch's Synaptic neuron has no v_leak")
        if isinstance(node, SPIKING):
            if np.unique(_f64(node.v_threshold)).size != 1:
                raise DeployError(f"snntorch target: node {name!r}: snnTorch's importer needs one threshold per layer")
            if node.v_reset is not None and np.any(_f64(node.v_reset) != 0):
                raise DeployError(f"snntorch target: node {name!r}: snnTorch resets to 0, the graph to v_reset != 0")
    edges = set(graph.edges)
    for name, node in graph.nodes.items():
        w = np.asarray(getattr(node, "weight", np.zeros((0, 0))))
        loops = [d for s, d in edges if s == name and (d, name) in edges]
        if (isinstance(node, nir.Affine) and loops and w.ndim == 2 and np.array_equal(w, np.diag(np.diag(w)))
                and np.any(np.asarray(node.bias) != 0)):
            raise DeployError(f"snntorch target: node {name!r}: snnTorch turns a diagonal recurrent weight into "
                              "RecurrentOneToOne, which drops its bias")
    changes: list[str] = []
    for rewrite in (batch_agnostic_flatten, pool_params_as_pairs, lambda g: pool_to_conv(g, avg=False),
                    lambda g: rescale_time(g, dt, SNNTORCH_DT), leak_to_bias,
                    lambda g: fold_input_gain(g, _gain, "input gain"), if_as_lif):
        graph, done = rewrite(graph)
        changes += done
    return graph, changes


def _sanitize(name: str) -> str:
    import keyword

    name = name.replace(".", "_")
    return "nir_node_" + name if keyword.iskeyword(name) else name


def _import_feedforward(graph: nir.NIRGraph):
    from snntorch.import_nir import import_from_nir

    module = import_from_nir(graph)
    return module, {_sanitize(n): n for n in graph.nodes}


def _import_recurrent(graph: nir.NIRGraph):
    """snnTorch's recurrent path: its subgraph detection and module mapping, run by nirtorch's GraphExecutor."""
    import nirtorch
    from snntorch import import_nir as sn

    before = set(graph.nodes)
    grouped = sn._replace_rnn_subgraph_with_nirgraph(
        nir.NIRGraph(nodes=dict(graph.nodes), edges=list(graph.edges), type_check=False))
    names = {}
    for key, node in grouped.nodes.items():
        if isinstance(node, nir.NIRGraph):
            lif = [n for n, v in node.nodes.items() if isinstance(v, (nir.LIF, nir.CubaLIF))]
            if key in before or len(lif) != 1:
                raise DeployError(f"snntorch target: recurrent group {key!r} clashes with another node name")
            names[key.replace(".", "_")] = lif[0]
        else:
            names[key.replace(".", "_")] = key
    module = nirtorch.load(grouped, lambda n: sn._nir_to_snntorch_module(n, init_hidden=True))
    return module, names


@contextlib.contextmanager
def _silent_recurrence(neurons: list):
    """For one step, recurrent layers without their bias: at ``t = 0`` a recurrent edge carries nothing in the
    reference semantics, while snnTorch evaluates ``W 0 + b``."""
    saved = []
    for m in neurons:
        bias = getattr(getattr(m, "recurrent", None), "bias", None)
        if isinstance(bias, torch.Tensor):
            saved.append((bias, bias.detach().clone()))
            bias.data.zero_()
    try:
        yield
    finally:
        for bias, value in saved:
            bias.data.copy_(value)


class SnnTorchTarget(FrameworkTarget):
    """snnTorch (``import_from_nir``), stepped one step at a time; hidden state cleared before every batch.

    Options: ``dt`` (s; default the graph's metadata, else 1e-4), ``reset``, ``if_convention``, ``batch_size``.
    """

    name = "snntorch"
    framework = "snnTorch"

    def work_arounds(self, graph: nir.NIRGraph) -> tuple[nir.NIRGraph, list[str]]:
        return snntorch_graph(graph, graph_dt(graph, self.dt))

    def build(self, graph: nir.NIRGraph) -> Runner:
        try:
            import snntorch
        except ImportError as exc:
            raise DeployError(f"snntorch target: snnTorch is not installed ({exc}); pip install snntorch nirtorch") from None
        dt = graph_dt(graph)
        resets = node_resets(graph)
        rewritten, changes = self.rewrite(graph)
        recurrent = plan(rewritten).has_cycles
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as log:
            warnings.simplefilter("ignore")
            try:
                module, names = (_import_recurrent if recurrent else _import_feedforward)(rewritten)
            except DeployError:
                raise
            except Exception as exc:  # the importer raises assorted types (and asserts)
                raise DeployError(f"snntorch target: snnTorch's importer failed ({str(exc).splitlines()[0]})") from None
        module = module.float().eval()
        neurons = self._fix_modules(module, names, rewritten, resets)
        subs = dict(module.named_modules())
        recorder = StepRecorder(module, {p: n for p, n in names.items() if p in subs})
        self.info.update(dt=dt, framework=f"snntorch {snntorch.__version__}", rewrites=changes,
                         importer="recurrent (RSynaptic/RLeaky via GraphExecutor)" if recurrent else "import_from_nir",
                         importer_output=log.getvalue().strip() or None)

        def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
            for m in neurons:
                for attr in ("mem", "syn", "spk"):
                    if hasattr(m, attr):
                        setattr(m, attr, torch.zeros(0))
            state = None
            for t in range(x.shape[1]):
                with _silent_recurrence(neurons) if t == 0 else contextlib.nullcontext():
                    out = module(x[:, t]) if state is None else module(x[:, t], state)
                state = out[1] if isinstance(out, tuple) and len(out) > 1 else None
                for m in neurons:
                    _reset_now(m)
            return recorder.take()

        return run

    @staticmethod
    def _fix_modules(module: torch.nn.Module, names: dict[str, str], graph: nir.NIRGraph,
                     resets: dict[str, str]) -> list:
        """Correct recurrent neurons and resets by subtraction; return every snnTorch neuron (to clear its
        state)."""
        import snntorch as snn

        subs = dict(module.named_modules())
        neurons = []
        for path, node_name in names.items():
            m = subs.get(path)
            if not isinstance(m, snn.SpikingNeuron):
                continue
            neurons.append(m)
            if resets.get(node_name) == "subtract":
                m.reset_mechanism = "none"  # integrate only; the reset is applied after the step (_reset_now)
                m.state_function = m._base_int
                m._snnkit_reset = "subtract"
            elif isinstance(m, (snn.RSynaptic, snn.RLeaky)):
                m.reset_delay = True
                m._snnkit_reset = "zero"
        return neurons


def _reset_now(m: torch.nn.Module) -> None:
    """The reset of the reference, in the step the neuron fired, where snnTorch's own would act a step late
    (``reset_delay``) or subtract twice after a large input: ``v = 0`` or ``v = h - threshold`` where
    ``h > threshold``."""
    mode = getattr(m, "_snnkit_reset", None)
    if mode is None:
        return
    fired = m.mem > m.threshold
    if mode == "zero":
        m.mem = torch.where(fired, torch.zeros_like(m.mem), m.mem)
    else:
        m.mem = m.mem - fired.to(m.mem.dtype) * m.threshold

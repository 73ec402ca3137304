"""Small random networks built in snnTorch, Norse and SpikingJelly, run by the library itself and exported with
the library's own exporter (the helpers of tests/interop).

Each builder returns a :class:`Case`: the library's own output spikes ``own [B, T, C]`` for the input ``x``, the
graph its exporter wrote, the graph after the work-arounds a *user* applies for that exporter's known bugs
(docs/interop.md says which and why), and the target options ("documented overrides") under which the snnkit
targets must reproduce ``own``.

Conventions measured here (and written down in docs/interop.md):

- snnTorch (``snntorch.export_nir.export_to_nir``): dt = 1e-4 s hard-coded (no graph metadata), ``r = tau/dt``,
  ``w_in = tau_syn/dt``; the reset mode is dropped (NIR has none). ``reset_delay`` matters: Leaky with reset to
  zero is the same with or without it, everything else needs ``reset_delay=False``.
- Norse (``norse.torch.to_nir``): writes ``tau = dt/tau_mem_inv`` (dt times the true time constant), ``r = 1``,
  CubaLIF without ``w_in`` (read as 1), and ``None`` for modules it has no mapping for (Flatten, pooling).
- SpikingJelly (``nir_exchange.export_to_nir``): dt = 1e-4 s (no graph metadata); IF written with ``r = 1/dt``
  (its "ode" convention, ``v += dt r I``); LIF ``tau = tau_steps dt``; AvgPool2d kernel/stride as given to the
  torch module (scalars for ``AvgPool2d(2)``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import nir
import numpy as np
import torch

from conftest import quiet

SPIKE_TOL = 1e-3
"""Largest fraction of differing spike values allowed where the arithmetic differs only in rounding order
(the value of tests/test_targets_equivalence.py and docs/semantics.md)."""

FRAMEWORK_TARGETS = ("torch", "norse", "snntorch")
B, T = 4, 30




def spikes(shape, p: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < p).astype(np.float32)


def differing(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of differing spike values (shapes must agree)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a != b).mean())


def run_target(name: str, graph: nir.NIRGraph, x: np.ndarray, *, record: bool = False, **options):
    """Run ``graph`` on the snnkit target ``name`` with ``options`` (the torch reference on the CPU)."""
    from snnkit.deploy.base import get_target

    if name == "torch":
        options.setdefault("device", "cpu")
    with quiet():
        return get_target(name, **options).run(graph, x, record=record)


@dataclass
class Case:
    """One library network: what the library computed and what it exported."""

    library: str
    kind: str
    x: np.ndarray  # [B, T, *input_shape] float32
    own: np.ndarray  # the library's own output spikes [B, T, C]
    exported: nir.NIRGraph  # as the library's exporter wrote it
    graph: nir.NIRGraph  # after the user's work-arounds (the same object as ``exported`` when none is needed)
    options: dict = field(default_factory=dict)  # target options under which the targets must reproduce ``own``
    exact: bool = False  # the arithmetic is the same operation for operation (IF: v + I): equality required
    note: str = ""
    module: object = None  # the library's network (for tests that step it differently)

    @property
    def id(self) -> str:
        return f"{self.library}-{self.kind}"


def replace(graph: nir.NIRGraph, new: dict, metadata: dict | None = None) -> nir.NIRGraph:
    """A copy of ``graph`` with some nodes replaced (names and edges kept)."""
    nodes = {k: new.get(k, v) for k, v in graph.nodes.items()}
    meta = dict(graph.metadata or {})
    meta.update(metadata or {})
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=meta, type_check=False)


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# ------------------------------------------------------------------------------------------- snnTorch


def _snntorch_step(m: torch.nn.Module, x: np.ndarray, immediate_reset: list | None = None) -> np.ndarray:
    """snnTorch's own forward pass, one step at a time (hidden state reset first).

    immediate_reset: recurrent neurons built with ``reset_delay=True`` whose membrane is set to 0 right after a
    spike (what ``reset_delay=False`` means; snnTorch 1.0.0's RSynaptic crashes with ``reset_delay=False``)."""
    from snntorch import utils as snn_utils

    snn_utils.reset(m)
    xt = torch.from_numpy(x)
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            o = m(xt[:, t])
            outs.append(o[0] if isinstance(o, tuple) else o)
            for n in immediate_reset or []:
                n.mem = torch.where(n.spk.bool(), torch.zeros_like(n.mem), n.mem)
    return torch.stack(outs, 1).numpy().astype(np.float32)


def _snntorch_export(m: torch.nn.Module, sample: torch.Tensor) -> nir.NIRGraph:
    from snntorch.export_nir import export_to_nir

    with quiet():
        return export_to_nir(m, sample)


def _scale(m: torch.nn.Module, factor: float, *layers: int) -> None:
    with torch.no_grad():
        for i in layers:
            m[i].weight.mul_(factor)


def _leaky(n, *, beta=0.8, **kw):
    import snntorch as snn

    # per-neuron tensors: snnTorch's exporter fails type inference with scalar beta (nir-conventions.md)
    shape = (n,) if isinstance(n, int) else n
    return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.ones(shape), init_hidden=True, **kw)


@functools.lru_cache(maxsize=None)
def snntorch_case(kind: str) -> Case:
    import snntorch as snn

    torch.manual_seed(1)
    x = spikes((B, T, 6), 0.5, seed=0)
    sample = torch.zeros(6)
    nn = torch.nn
    immediate = []
    options: dict = {}
    note = ""
    if kind == "dense-lif":
        # reset to zero: the same spikes with snnTorch's default reset_delay=True as without
        m = nn.Sequential(nn.Linear(6, 8), _leaky(8, reset_mechanism="zero"), nn.Linear(8, 4),
                          _leaky(4, reset_mechanism="zero"))
        _scale(m, 3.0, 0, 2)
    elif kind == "dense-lif-subtract":
        # reset by subtraction is not in NIR: the override reset="subtract" restores it. reset_delay=False is
        # needed (the default delayed subtraction is not the NIR/snnkit equation, see test_snntorch_interop)
        sub = dict(beta=0.9, reset_mechanism="subtract", reset_delay=False)
        m = nn.Sequential(nn.Linear(6, 8), _leaky(8, **sub), nn.Linear(8, 4), _leaky(4, **sub))
        # every input current <= (2 - beta) threshold = 1.1: a membrane never stays above the threshold after
        # the subtraction, where snnTorch would need twice the threshold for the next spike (see docs/interop.md)
        rng = np.random.default_rng(3)
        with torch.no_grad():
            m[0].weight.copy_(torch.from_numpy(rng.uniform(0.0, 0.18, (8, 6)).astype(np.float32)))
            m[2].weight.copy_(torch.from_numpy(rng.uniform(0.0, 0.135, (4, 8)).astype(np.float32)))
            m[0].bias.zero_()
            m[2].bias.zero_()
        options = {"reset": "subtract"}
        note = "input currents <= (2 - beta) threshold"

    elif kind == "cubalif":
        def syn(n):
            return snn.Synaptic(alpha=torch.full((n,), 0.7), beta=torch.full((n,), 0.8), threshold=torch.ones(n),
                                init_hidden=True, reset_mechanism="zero", reset_delay=False)
        m = nn.Sequential(nn.Linear(6, 8), syn(8), nn.Linear(8, 4), syn(4))
    elif kind in ("recurrent", "recurrent-bias"):
        rl = snn.RLeaky(beta=0.8, linear_features=8, init_hidden=True, reset_mechanism="zero", reset_delay=False,
                        all_to_all=True)
        m = nn.Sequential(nn.Linear(6, 8), rl, nn.Linear(8, 4), _leaky(4, reset_mechanism="zero"))
        _scale(m, 4.0, 0, 2)
        with torch.no_grad():
            rl.recurrent.weight.mul_(2.0)
            if kind == "recurrent":
                rl.recurrent.bias.zero_()  # snnTorch adds the recurrent bias at t = 0, NIR's recurrent edge does not
        note = "recurrent bias zero" if kind == "recurrent" else "recurrent bias non-zero: differs at t = 0"
    elif kind == "recurrent-cubalif":
        rs = snn.RSynaptic(alpha=0.7, beta=0.8, linear_features=8, init_hidden=True, reset_mechanism="zero",
                           reset_delay=True, all_to_all=True)
        m = nn.Sequential(nn.Linear(6, 8), rs, nn.Linear(8, 4), _leaky(4, reset_mechanism="zero"))
        _scale(m, 2.0, 0, 2)
        with torch.no_grad():
            rs.recurrent.bias.zero_()
        immediate = [rs]
        note = "RSynaptic stepped with reset_delay=True plus the immediate reset (reset_delay=False crashes)"
    elif kind == "conv-pool":
        x = spikes((B, T, 1, 8, 8), 0.4, seed=0)
        sample = torch.zeros(1, 8, 8)  # no batch axis: with one, the exporter's type inference fails
        # AvgPool2d(2): the exporter writes kernel_size = stride = 2 (scalars), which snnTorch's own importer
        # cannot read (tuple(np.array(2)))
        m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), _leaky((4, 8, 8), reset_mechanism="zero"), nn.AvgPool2d(2),
                          nn.Flatten(-3, -1), nn.Linear(64, 5), _leaky(5, reset_mechanism="zero"))
        _scale(m, 3.0, 0, 4)
    else:
        raise KeyError(kind)
    m.eval()
    own = _snntorch_step(m, x, immediate)
    g = _snntorch_export(m, sample)
    return Case("snntorch", kind, x, own, g, g, options, exact=False, note=note, module=m)


# ------------------------------------------------------------------------------------------- Norse

NORSE_DT = 1e-3
"""The step of the Norse cells (their default) and the ``dt`` given to ``norse.torch.to_nir``."""


def _norse_step(m: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    xt = torch.from_numpy(x)
    state, outs = None, []
    with torch.no_grad():
        for t in range(x.shape[1]):
            o, state = m(xt[:, t], state)
            outs.append(o)
    return torch.stack(outs, 1).numpy().astype(np.float32)


def norse_writable(graph: nir.NIRGraph) -> nir.NIRGraph:
    """``norse.torch.to_nir`` leaves torch tensors and 0-d neuron parameters in the graph, which ``nir.write``
    cannot store ("Scalar datasets don't support chunk/filter options"), and Conv2d without ``input_shape``: numpy
    arrays, neuron parameters with the neuron shape, the input shape filled in (no ``None`` node may be left)."""
    import dataclasses

    from snnkit.graph import infer_shapes

    shapes = infer_shapes(graph)
    new = {}
    for k, v in graph.nodes.items():
        if isinstance(v, (nir.Input, nir.Output, nir.NIRGraph)):
            continue
        neuron = isinstance(v, (nir.LIF, nir.IF, nir.CubaLIF, nir.LI, nir.CubaLI))
        changes = {}
        for f in dataclasses.fields(v):
            a = getattr(v, f.name)
            if not isinstance(a, (torch.Tensor, np.ndarray, np.generic)):
                continue
            a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
            changes[f.name] = np.broadcast_to(a, tuple(shapes[k][0])).copy() if neuron else a
        if isinstance(v, nir.Conv2d) and v.input_shape is None:  # written as None: nir.write cannot store it
            changes["input_shape"] = np.array(shapes[k][0][1:])
        new[k] = dataclasses.replace(v, **changes)
    return replace(graph, new)


def norse_fix_time_constants(graph: nir.NIRGraph, dt_export: float = NORSE_DT,
                             dt_cells: float = NORSE_DT) -> nir.NIRGraph:
    """The user's work-around for ``norse.torch.to_nir``: true time constants (``tau / dt_export``), the
    CubaLIF input weight Norse's cells use (``w_in = tau_syn / dt``: the input enters the current unscaled) and
    the cells' ``dt`` in the graph metadata (Norse writes none); parameters as numpy arrays
    (:func:`norse_writable` first)."""
    new = {}
    for k, v in graph.nodes.items():
        if isinstance(v, nir.LIF):
            new[k] = nir.LIF(tau=_f64(v.tau) / dt_export, r=v.r, v_leak=v.v_leak, v_threshold=v.v_threshold,
                             v_reset=v.v_reset)
        elif isinstance(v, nir.CubaLIF):
            tau_syn = _f64(v.tau_syn) / dt_export
            new[k] = nir.CubaLIF(tau_syn=tau_syn, tau_mem=_f64(v.tau_mem) / dt_export, r=v.r,
                                 w_in=tau_syn / dt_cells, v_leak=v.v_leak, v_threshold=v.v_threshold,
                                 v_reset=v.v_reset)
    return replace(graph, new, {"dt": dt_cells})


@functools.lru_cache(maxsize=None)
def norse_case(kind: str) -> Case:
    import norse.torch as nt

    torch.manual_seed(1)
    x = spikes((B, T, 6), 0.5, seed=0)
    sample = torch.zeros(6)
    nn = torch.nn
    exact = False
    if kind == "dense-lif":
        m = nt.SequentialState(nn.Linear(6, 8), nt.LIFBoxCell(), nn.Linear(8, 4), nt.LIFBoxCell())
        _scale(m, 20.0, 0, 2)
    elif kind == "dense-if":
        m = nt.SequentialState(nn.Linear(6, 8), nt.IAFCell(), nn.Linear(8, 4), nt.IAFCell())
        _scale(m, 2.0, 0, 2)
        exact = True  # v + I and v > v_th in Norse and in snnkit
    elif kind == "cubalif":
        m = nt.SequentialState(nn.Linear(6, 8), nt.LIFCell(), nn.Linear(8, 4), nt.LIFCell())
        _scale(m, 6.0, 0, 2)
    elif kind == "conv-pool":
        x = spikes((B, T, 1, 8, 8), 0.5, seed=0)
        sample = torch.zeros(1, 8, 8)
        m = nt.SequentialState(nn.Conv2d(1, 4, 3, padding=1), nt.LIFBoxCell(), nn.AvgPool2d(2), nn.Flatten(-3),
                               nn.Linear(64, 5), nt.LIFBoxCell())
        _scale(m, 30.0, 0, 4)
    else:
        raise KeyError(kind)
    m.eval()
    own = _norse_step(m, x)
    with quiet():
        g = nt.to_nir(m, sample, dt=NORSE_DT)
    fixed = g
    if kind == "conv-pool":  # to_nir writes None for AvgPool2d and Flatten: the user puts the nodes in
        fixed = replace(fixed, {"2": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                                   padding=np.array([0, 0])),
                                "3": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1)})
    fixed = norse_writable(fixed)
    if kind != "dense-if":  # IF has no time constant: only the arrays need fixing
        fixed = norse_fix_time_constants(fixed)
    return Case("norse", kind, x, own, g, fixed, {}, exact=exact, module=m)


# ------------------------------------------------------------------------------------------- SpikingJelly

SJ_DT = 1e-4
"""SpikingJelly's export/import default dt (s)."""


def _sj_step(m: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    from spikingjelly.activation_based import functional

    functional.reset_net(m)
    functional.set_step_mode(m, "m")
    with torch.no_grad():
        y = m(torch.from_numpy(x).transpose(0, 1).contiguous())
    functional.reset_net(m)
    functional.set_step_mode(m, "s")
    return y.transpose(0, 1).numpy().astype(np.float32)


@functools.lru_cache(maxsize=None)
def spikingjelly_case(kind: str) -> Case:
    from spikingjelly.activation_based import layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    torch.manual_seed(1)
    x = spikes((B, T, 6), 0.5, seed=0)
    sample = torch.zeros(1, 6)
    options: dict = {}

    def dense(make, scale):
        m = torch.nn.Sequential(layer.Linear(6, 8), make(), layer.Linear(8, 4), make())
        _scale(m, scale, 0, 2)
        return m

    if kind == "dense-if":
        m = dense(neuron.IFNode, 2.0)
        options = {"if_convention": "ode"}  # SpikingJelly writes r = 1/dt and steps v += x
    elif kind == "dense-lif":
        m = dense(lambda: neuron.LIFNode(tau=2.0), 6.0)
    elif kind == "dense-lif-no-decay-input":
        m = dense(lambda: neuron.LIFNode(tau=2.0, decay_input=False), 3.0)
    elif kind == "cubalif":
        m = dense(lambda: neuron.CUBALIFNode(c_decay=0.5, v_decay=0.75, v_threshold=0.5), 1.0)
    elif kind == "conv-pool":
        x = spikes((B, T, 1, 8, 8), 0.4, seed=0)
        sample = torch.zeros(1, 1, 8, 8)
        m = torch.nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), neuron.IFNode(), layer.AvgPool2d(2), layer.Flatten(),
                                layer.Linear(64, 5), neuron.IFNode())
        _scale(m, 2.0, 0, 4)
        options = {"if_convention": "ode"}
    else:
        raise KeyError(kind)
    m.eval()
    own = _sj_step(m, x)
    with quiet():
        g = export_to_nir(m, sample)
    return Case("spikingjelly", kind, x, own, g, g, options, exact=False, module=m)


SNNTORCH_KINDS = ("dense-lif", "dense-lif-subtract", "cubalif", "recurrent", "recurrent-cubalif", "conv-pool")
NORSE_KINDS = ("dense-lif", "dense-if", "cubalif", "conv-pool")
SPIKINGJELLY_KINDS = ("dense-if", "dense-lif", "dense-lif-no-decay-input", "cubalif", "conv-pool")


def check_against_targets(case: Case, target: str, **extra):
    """Run ``case.graph`` on ``target`` with the case's overrides; assert it reproduces the library's spikes.

    Returns the fraction of differing output spike values."""
    res = run_target(target, case.graph, case.x, **{**case.options, **extra})
    assert case.own.sum() > 0, f"{case.id}: the input must make the library's network spike"
    frac = differing(res.outputs, case.own)
    if case.exact:
        assert frac == 0, f"{case.id} on {target}: {frac:.2%} of output spike values differ (exact expected)"
    else:
        assert frac <= SPIKE_TOL, f"{case.id} on {target}: {frac:.2%} of output spike values differ"
    return frac

"""One test per work-around in the norse and snntorch targets: the raw importer gets it wrong, the target right.

The bugs are those of norse 1.1.0, snntorch 1.0.0 and nirtorch 2.6 (docs/reference/nir-conventions.md).
If an upstream release fixes one, its "raw" assertion fails here: the work-around can then go.
"""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from snnkit.deploy.base import DeployError, get_target
from snnkit.export import read_nir
from snnkit.export.rewrite import batch_agnostic_flatten, fold_input_gain, leak_to_bias, pool_to_conv, rescale_time
from conftest import quiet

norse_torch = pytest.importorskip("norse.torch", reason="the norse target needs Norse")
snn = pytest.importorskip("snntorch", reason="the snntorch target needs snnTorch")
pytest.importorskip("nirtorch", reason="the importers need nirtorch")
from snntorch.import_nir import import_from_nir  # noqa: E402




def f32(*shape, value=0.0):
    return np.full(shape, value, dtype=np.float32)


def chain(*nodes, dt=None) -> nir.NIRGraph:
    g = nir.NIRGraph.from_list(*nodes, type_check=False)
    if dt is not None:
        g.metadata = {"dt": dt}
    return g


def affine(n_in, n_out, scale=1.0, seed=0):
    w = np.random.default_rng(seed).random((n_out, n_in), dtype=np.float32) * np.float32(scale)
    return nir.Affine(weight=w, bias=f32(n_out))


def lif(n, tau=2e-3, r=1.0, v_leak=0.0, thr=0.5, v_reset=0.0):
    return nir.LIF(tau=f32(n, value=tau), r=np.broadcast_to(np.float32(r), (n,)).astype(np.float32),
                   v_leak=f32(n, value=v_leak), v_threshold=f32(n, value=thr), v_reset=f32(n, value=v_reset))


def spikes(shape, p=0.4, seed=0):
    return (np.random.default_rng(seed).random(shape) < p).astype(np.float32)


def reference(graph, x):
    return get_target("torch", device="cpu").run(graph, x).outputs


def step_norse_raw(module, x, state=None):
    outs = []
    for t in range(x.shape[1]):
        y, state = module(torch.from_numpy(x[:, t]), state)
        outs.append(y.detach())
    return torch.stack(outs, 1).numpy()


def step_snntorch_raw(module, x):
    outs, state = [], None
    for t in range(x.shape[1]):
        out = module(torch.from_numpy(x[:, t])) if state is None else module(torch.from_numpy(x[:, t]), state)
        y, state = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
        outs.append(y.detach())
    return torch.stack(outs, 1).numpy()


# ---------------------------------------------------------------- norse ----------------------------------------


def test_norse_r_is_folded_into_weights():
    g = chain(affine(3, 3, scale=0.3), lif(3, r=3.0))
    x = spikes((2, 60, 3))
    with quiet():
        raw = step_norse_raw(norse_torch.from_nir(g, dt=1e-4), x)
    ref = reference(g, x)
    assert ref.sum() > 0 and not np.array_equal(raw, ref)  # Norse ignores r = 3
    assert np.array_equal(get_target("norse").run(g, x).outputs, ref)
    _, changes = fold_input_gain(g, lambda n, node: (node.r, node) if isinstance(node, nir.LIF) else None)
    assert changes and "lif" in changes[0]


def test_norse_flatten_keeps_the_batch_axis(zoo):
    g = read_nir(zoo / "cnn_sinabs.nir")
    x = spikes((2, 2, 2, 34, 34), p=0.2)
    with quiet(), pytest.raises(RuntimeError):
        step_norse_raw(norse_torch.from_nir(g, dt=1e-4), x)
    fixed, changes = batch_agnostic_flatten(g)
    assert fixed.nodes["8"].start_dim == -3 and changes
    assert np.array_equal(get_target("norse").run(g, x).outputs, reference(g, x))


def _pool_graph(kind, padding):
    conv = nir.Conv2d(input_shape=(6, 6), weight=np.random.default_rng(1).random((2, 1, 3, 3), dtype=np.float32),
                      stride=1, padding=1, dilation=1, groups=1, bias=f32(2))
    pool = kind(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([padding, padding]))
    size = 2 * ((6 + 2 * padding - 2) // 2 + 1) ** 2
    neurons = nir.LIF(tau=f32(2, 6, 6, value=1e-3), r=f32(2, 6, 6, value=10), v_leak=f32(2, 6, 6),
                      v_threshold=f32(2, 6, 6, value=0.5), v_reset=f32(2, 6, 6))  # r = tau/dt: snnTorch's unit gain
    return chain(conv, neurons, pool, nir.Flatten(input_type={"input": np.array([2, 6, 6])}, start_dim=0, end_dim=-1),
                 affine(size, 3, scale=0.8), lif(3, tau=1e-3, r=10.0), dt=1e-4)


def test_norse_avgpool_becomes_a_convolution():
    g = _pool_graph(nir.AvgPool2d, 0)
    with quiet():
        raw = norse_torch.from_nir(g, dt=1e-4)
    assert getattr(raw, "avgpool2d", None) is None  # the importer maps AvgPool2d to nothing
    x = spikes((2, 6, 1, 6, 6))
    ref = reference(g, x)
    assert ref.sum() > 0 and np.array_equal(get_target("norse").run(g, x).outputs, ref)
    conv, changes = pool_to_conv(g)
    assert isinstance(conv.nodes["avgpool2d"], nir.Conv2d) and changes


@pytest.mark.parametrize("framework", ["norse", "snntorch"])
def test_padded_sumpool_becomes_a_convolution(framework):
    g = _pool_graph(nir.SumPool2d, 1)
    x = spikes((2, 6, 1, 6, 6))
    ref = reference(g, x)
    with quiet(), pytest.raises(RuntimeError):  # padding ignored: the pooled map has the wrong size
        if framework == "norse":
            step_norse_raw(norse_torch.from_nir(g, dt=1e-4), x)
        else:
            step_snntorch_raw(import_from_nir(g), x)
    assert ref.sum() > 0 and np.array_equal(get_target(framework).run(g, x).outputs, ref)


def test_norse_v_reset_is_set_after_import():
    g = chain(affine(3, 3, scale=10.0), lif(3, v_reset=-0.4))
    x = spikes((2, 80, 3))
    ref = reference(g, x)
    with quiet():
        raw = step_norse_raw(norse_torch.from_nir(g, dt=1e-4), x)
    assert ref.sum() > 0 and not np.array_equal(raw, ref)
    assert np.array_equal(get_target("norse").run(g, x).outputs, ref)


def test_norse_cubalif_synapse_does_not_leak():
    n = 3
    cuba = nir.CubaLIF(tau_syn=f32(n, value=5e-4), tau_mem=f32(n, value=1e-3), r=f32(n, value=10),
                       v_leak=f32(n, value=0.3), v_threshold=f32(n, value=1.0), v_reset=f32(n), w_in=f32(n, value=5))
    g = chain(affine(n, n, scale=0.5), cuba)
    x = spikes((2, 80, n))
    ref = reference(g, x)
    init = {"cubalif": ((norse_torch.LIBoxState(v=torch.zeros(())), norse_torch.LIFBoxFeedForwardState(
        v=torch.zeros(()))),)}
    from nirtorch.graph_executor import GraphExecutorState

    with quiet():
        raw = step_norse_raw(norse_torch.from_nir(g, dt=1e-4), x, GraphExecutorState(state=init))
    assert ref.sum() > 0 and not np.array_equal(raw, ref)  # the synapse also relaxes towards v_leak
    assert np.array_equal(get_target("norse").run(g, x).outputs, ref)


def test_norse_state_starts_at_zero_not_v_leak(zoo):
    g = read_nir(zoo / "two_lif_neurons.nir")
    x = np.zeros((1, 400, 1), np.float32)
    ref = get_target("torch", device="cpu").run(g, x, record=True).records["lif1"]
    with quiet():
        module = norse_torch.from_nir(g, dt=1e-4)
    raw = []
    hook = module.get_submodule("lif1").register_forward_hook(lambda m, i, o: raw.append(o[0].detach()))
    state = None
    for t in range(x.shape[1]):
        _, state = module(torch.from_numpy(x[:, t]), state)
    hook.remove()
    raw = torch.stack(raw, 1).numpy()
    assert ref.sum() > 0 and np.flatnonzero(raw[0, :, 0])[0] < np.flatnonzero(ref[0, :, 0])[0]  # starts at 1.2
    assert np.array_equal(get_target("norse").run(g, x, record=True).records["lif1"], ref)


# ---------------------------------------------------------------- snntorch -------------------------------------


def test_snntorch_time_constants_rescaled_for_its_fixed_dt():
    g = chain(affine(3, 3, scale=0.2), lif(3, tau=2e-2, r=20.0), dt=1e-3)  # beta = 0.95, g = 1
    x = spikes((2, 60, 3))
    ref = reference(g, x)
    with quiet():
        raw = step_snntorch_raw(import_from_nir(g), x)  # reads beta = 1 - 1e-4/tau = 0.995
    assert ref.sum() > 0 and not np.array_equal(raw, ref)
    assert np.array_equal(get_target("snntorch").run(g, x).outputs, ref)
    scaled, _ = rescale_time(g, 1e-3, 1e-4)
    np.testing.assert_allclose(scaled.nodes["lif"].tau, 2e-3, rtol=1e-6)


def test_snntorch_v_leak_becomes_a_bias(zoo):
    g = read_nir(zoo / "two_lif_neurons.nir")
    with quiet(), pytest.raises(AssertionError, match="v_leak not supported"):
        import_from_nir(g)
    moved, changes = leak_to_bias(g)
    assert np.all(moved.nodes["lif1"].v_leak == 0) and moved.nodes["linear1"].bias[0] == pytest.approx(1.2)
    x = np.random.default_rng(0).random((2, 400, 1), dtype=np.float32)
    ref = get_target("torch", device="cpu").run(g, x, record=True).records["lif1"]
    assert ref.sum() > 0
    assert np.array_equal(get_target("snntorch").run(g, x, record=True).records["lif1"], ref)


def test_snntorch_input_gain_goes_to_weights_not_threshold():
    g = chain(affine(2, 2, scale=0.3), lif(2, tau=1e-3, r=np.array([10.0, 20.0], np.float32), thr=1.0))
    with quiet():
        raw_module = import_from_nir(g)
    thresholds = [float(m.threshold) for m in raw_module.modules() if isinstance(m, snn.Leaky)]
    assert thresholds == [pytest.approx(1.0)]  # divided by the first neuron's gain only: the second is wrong
    x = spikes((2, 80, 2), p=0.6)
    ref = reference(g, x)
    raw = step_snntorch_raw(raw_module, x)
    assert ref[..., 1].sum() > 0 and not np.array_equal(raw, ref)
    assert np.array_equal(get_target("snntorch").run(g, x).outputs, ref)


def test_snntorch_if_is_repaired():
    g = chain(affine(3, 3, scale=0.5), nir.IF(r=f32(3, value=1), v_threshold=f32(3, value=1), v_reset=f32(3)),
              affine(3, 2, scale=0.9, seed=1), nir.IF(r=f32(2, value=1), v_threshold=f32(2, value=1),
                                                      v_reset=f32(2)))
    with quiet():
        raw = import_from_nir(g)
    leaky = [m for m in raw.modules() if isinstance(m, snn.Leaky)]
    assert all(float(m.beta) == pytest.approx(0.9) and m.reset_mechanism == "subtract" and not m.init_hidden
               for m in leaky)
    with pytest.raises(TypeError):  # the IF returns (spk, mem) into the next layer
        raw(torch.ones(2, 3))
    x = spikes((2, 50, 3), p=0.5)
    ref = reference(g, x)
    assert ref.sum() > 0 and np.array_equal(get_target("snntorch").run(g, x).outputs, ref)


def test_snntorch_recurrent_graphs_use_its_recurrent_modules(zoo):
    g = read_nir(zoo / "braille_noDelay_noBias_subtract.nir")
    with quiet(), pytest.raises(AttributeError, match="items"):
        import_from_nir(read_nir(zoo / "braille_noDelay_noBias_subtract.nir"))
    res = get_target("snntorch").run(g, spikes((2, 40, 12), p=0.3))
    assert "recurrent" in res.info["importer"]


def test_snntorch_rsynaptic_without_reset_delay_crashes_upstream():
    m = snn.RSynaptic(alpha=0.5, beta=0.5, init_hidden=True, all_to_all=True, linear_features=3, reset_delay=False)
    with pytest.raises(TypeError, match="NoneType"):
        m(torch.ones(2, 3))


def _tiny_recurrent(diagonal: bool) -> nir.NIRGraph:
    n = 3
    w = np.zeros((n, n), np.float32) if diagonal else np.full((n, n), -0.01, np.float32)
    nodes = {"input": nir.Input(input_type=np.array([n])),
             "fc": nir.Affine(weight=np.eye(n, dtype=np.float32), bias=f32(n)),
             "rnn.lif": nir.CubaLIF(tau_syn=np.full(n, 2e-4), tau_mem=np.full(n, 1e-3), r=np.full(n, 10.0),
                                    v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n),
                                    w_in=np.full(n, 2.0)),
             "rnn.w": nir.Affine(weight=w, bias=f32(n, value=1.5)),
             "output": nir.Output(output_type=np.array([n]))}
    edges = [("input", "fc"), ("fc", "rnn.lif"), ("rnn.lif", "rnn.w"), ("rnn.w", "rnn.lif"), ("rnn.lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_recurrent_bias_is_silent_at_t0_on_every_target():
    """The reference's recurrent edge carries nothing at t = 0 (Norse agrees); snnTorch's RSynaptic would add
    the recurrent bias there, so the target leaves it out for that one step."""
    g = _tiny_recurrent(diagonal=False)
    x = np.zeros((1, 5, 3), np.float32)
    ref = reference(g, x)
    assert ref[0, :, 0].tolist() == [0, 1, 1, 1, 1]
    for framework in ("norse", "snntorch"):
        assert np.array_equal(get_target(framework).run(g, x).outputs, ref), framework


def test_snntorch_refuses_a_diagonal_recurrence_with_bias():
    with pytest.raises(DeployError, match="drops its bias"):
        get_target("snntorch").run(_tiny_recurrent(diagonal=True), np.zeros((1, 3, 3), np.float32))


def test_snntorch_module_runs_in_float32():
    """snnTorch's recurrent path keeps per-neuron float64 decays (so float64 states); the target casts to float32."""
    from snnkit.deploy.snntorch_target import _import_recurrent, snntorch_graph

    n = 3
    tau = np.array([1e-3, 2e-3, 4e-3])
    nodes = {"input": nir.Input(input_type=np.array([n])), "fc": affine(n, n, scale=2.0),
             "rnn.lif": nir.LIF(tau=tau, r=tau / 1e-4, v_leak=np.zeros(n), v_threshold=np.ones(n),
                                v_reset=np.zeros(n)),
             "rnn.w": nir.Affine(weight=np.full((n, n), -0.05, np.float32), bias=f32(n)),
             "output": nir.Output(output_type=np.array([n]))}
    edges = [("input", "fc"), ("fc", "rnn.lif"), ("rnn.lif", "rnn.w"), ("rnn.w", "rnn.lif"), ("rnn.lif", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    with quiet():
        module, _ = _import_recurrent(snntorch_graph(g, 1e-4)[0])
    assert any(b.dtype == torch.float64 for b in module.buffers())
    x = spikes((2, 40, n), p=0.5)
    ref = reference(g, x)
    res = get_target("snntorch").run(g, x)
    assert ref.sum() > 0 and res.outputs.dtype == np.float32 and np.array_equal(res.outputs, ref)

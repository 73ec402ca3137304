"""What NIR graphs contain, mapped exactly to Loihi 2: LI/CubaLI readouts, per-neuron decays and skip connections.

Small float NIR graphs go through ``get_target("loihi-emu")`` and ``get_target("lava")``: the quantisation has no
lossy entry for them, both targets give identical outputs and records, the float reference (``torch``) agrees
loosely (fixed point is not float), and the counts describe the graph (relay neurons are reported, not counted).
"""
from __future__ import annotations

import nir
import numpy as np
import pytest

from snnkit.deploy.base import get_target
from snnkit.deploy.loihi import LoihiGraph, netx_fit, quantize
from conftest import NO_LAVA_REASON, lava_available

DT = 1e-3


def _lif(n, tau, thr=1.0):
    tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), (n,)).copy()
    return nir.LIF(tau=tau, r=tau / DT, v_leak=np.zeros(n), v_threshold=np.broadcast_to(thr, (n,)).astype(float),
                   v_reset=np.zeros(n))


def _readout(kind, n):
    if kind == "LI":
        return nir.LI(tau=np.full(n, 0.01), r=np.full(n, 10.0), v_leak=np.full(n, 0.05))
    return nir.CubaLI(tau_syn=np.full(n, 0.004), tau_mem=np.full(n, 0.01), r=np.full(n, 10.0), v_leak=np.zeros(n),
                      w_in=np.full(n, 4.0))


def readout_mlp(kind: str, seed: int = 0) -> nir.NIRGraph:
    """Spikes -> LIF (three taus) -> LIF (two taus, per-neuron thresholds) -> LI/CubaLI readout, plus a skip
    from the first layer into the readout (one relay layer)."""
    rng = np.random.default_rng(seed)
    n_in, n_h, n_o = 10, 16, 4
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc1": nir.Affine(weight=rng.normal(0, 0.6, (n_h, n_in)), bias=rng.normal(0, 0.02, n_h)),
             "l1": _lif(n_h, rng.choice([0.002, 0.005, 0.02], n_h)),
             "fc2": nir.Linear(weight=rng.normal(0, 0.6, (n_h, n_h))),
             "l2": _lif(n_h, rng.choice([0.003, 0.01], n_h), thr=rng.uniform(0.7, 1.3, n_h)),
             "fc3": nir.Linear(weight=rng.normal(0, 0.5, (n_o, n_h))),
             "skip": nir.Linear(weight=rng.normal(0, 0.5, (n_o, n_h))),
             "ro": _readout(kind, n_o), "output": nir.Output(output_type={"output": np.array([n_o])})}
    edges = [("input", "fc1"), ("fc1", "l1"), ("l1", "fc2"), ("fc2", "l2"), ("l2", "fc3"), ("fc3", "ro"),
             ("l1", "skip"), ("skip", "ro"), ("ro", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT})


def analog_skip(seed: int = 1) -> nir.NIRGraph:
    """The direct code's analog input reaches the spiking output layer directly and through two hidden layers
    (a delayed copy of the input stream, two steps); the output layer has two taus."""
    rng = np.random.default_rng(seed)
    n_in, n_h, n_o = 12, 20, 5
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc1": nir.Affine(weight=rng.normal(0, 0.5, (n_h, n_in)), bias=rng.normal(0, 0.05, n_h)),
             "l1": _lif(n_h, 0.01), "fc2": nir.Linear(weight=rng.normal(0, 0.4, (n_h, n_h))), "l2": _lif(n_h, 0.01),
             "fc3": nir.Linear(weight=rng.normal(0.1, 0.5, (n_o, n_h))),
             "skip": nir.Linear(weight=rng.normal(0.15, 0.3, (n_o, n_in))),
             "out": _lif(n_o, np.array([0.004, 0.02, 0.004, 0.02, 0.004])),
             "output": nir.Output(output_type={"output": np.array([n_o])})}
    edges = [("input", "fc1"), ("fc1", "l1"), ("l1", "fc2"), ("fc2", "l2"), ("l2", "fc3"), ("fc3", "out"),
             ("input", "skip"), ("skip", "out"), ("out", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT, "encoder": {"name": "direct"}})


def conv_features(seed: int = 2) -> nir.NIRGraph:
    """Spikes (2, 8, 8) -> Conv -> LIF (a tau per channel) -> Conv -> LIF (taus varying inside channels: that
    convolution becomes Sparse) -> Flatten -> Linear -> LI readout, plus a skip from the first layer into the
    readout (one relay layer of 256 neurons)."""
    rng = np.random.default_rng(seed)
    c, h = 4, 8
    fmap = (c, h, h)

    def conv(c_in):
        return nir.Conv2d(input_shape=(h, h), weight=rng.normal(0, 0.5, (c, c_in, 3, 3)), stride=1, padding=1,
                          dilation=1, groups=1, bias=np.zeros(c))

    tau1 = np.broadcast_to(rng.choice([0.003, 0.02], c)[:, None, None], fmap)
    n = c * h * h
    nodes = {"input": nir.Input(input_type={"input": np.array([2, h, h])}), "conv1": conv(2),
             "l1": nir.LIF(tau=tau1.copy(), r=tau1 / DT, v_leak=np.zeros(fmap), v_threshold=np.ones(fmap),
                           v_reset=np.zeros(fmap)),
             "conv2": conv(c), "l2": nir.LIF(tau=rng.choice([0.004, 0.01], fmap), r=np.full(fmap, 1.0),
                                             v_leak=np.zeros(fmap), v_threshold=np.full(fmap, 0.5),
                                             v_reset=np.zeros(fmap)),
             "flat2": nir.Flatten(input_type={"input": np.array(fmap)}, start_dim=0, end_dim=-1),
             "fc": nir.Linear(weight=rng.normal(0, 0.3, (3, n))),
             "flat1": nir.Flatten(input_type={"input": np.array(fmap)}, start_dim=0, end_dim=-1),
             "skip": nir.Linear(weight=rng.normal(0, 0.2, (3, n))),
             "ro": nir.LI(tau=np.full(3, 0.005), r=np.full(3, 5.0), v_leak=np.zeros(3)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    nodes["l2"].r = nodes["l2"].tau / DT
    edges = [("input", "conv1"), ("conv1", "l1"), ("l1", "conv2"), ("conv2", "l2"), ("l2", "flat2"),
             ("flat2", "fc"), ("fc", "ro"), ("l1", "flat1"), ("flat1", "skip"), ("skip", "ro"), ("ro", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT})


def _inputs(graph: nir.NIRGraph, seed: int, batch: int = 6, steps: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = tuple(graph.nodes["input"].input_type["input"])
    if (graph.metadata or {}).get("encoder"):  # analog, changing every step (so that a wrong delay shows)
        return rng.random((batch, steps, *shape)).astype(np.float32)
    return (rng.random((batch, steps, *shape)) < 0.4).astype(np.float32)


CASES = {"li": lambda: readout_mlp("LI"), "cuba_li": lambda: readout_mlp("CubaLI"), "analog_skip": analog_skip,
         "conv": conv_features}


@pytest.mark.parametrize("name", list(CASES))
def test_quantisation_is_exact_and_reports_what_it_inserted(name, tmp_path):
    g = CASES[name]()
    x = _inputs(g, 0)
    lg = get_target("loihi-emu").quantised(g, x)
    assert lg.report["lossy"] == []
    groups = {layer.name: len(layer.groups()) for layer in lg.layers}
    relays = {r["source"]: (r["steps"], r["neurons"]) for r in lg.report["relays"]}
    if name == "analog_skip":
        assert groups == {"l1": 1, "l2": 1, "out": 2} and relays == {"input": (2, 0)}
        assert [p.delay for p in lg.into("out")] == [0, 2] and lg.delay == 3
    elif name == "conv":
        assert groups == {"l1": 2, "l2": 2, "ro": 1} and relays == {"l1": (1, 256)}
        assert [p.kind for p in lg.projections][:2] == ["conv", "dense"]  # conv2: decays differ inside channels
        assert any("decays differ within a channel" in n for n in lg.report["notes"])
        assert lg.layer("ro").readout
    else:
        assert groups == {"l1": 3, "l2": 2, "ro": 1} and relays == {"l1": (1, 16)}
        assert lg.layer("ro").kind == ("LI" if name == "li" else "CubaLI") and lg.layer("ro").readout
    assert any("relay" in n or "input is fed again" in n for n in lg.report["notes"])
    rep = {r["name"]: r for r in lg.report["layers"]}
    assert all(r["decay_groups"] == groups[r["name"]] for r in rep.values())
    back = LoihiGraph.load(lg.save(tmp_path))  # per-neuron decays and delays survive the files
    for a, b in zip(lg.layers, back.layers):
        assert (a.kind, a.readout) == (b.kind, b.readout) and np.array_equal(a.du, b.du)
        assert np.array_equal(a.dv, b.dv) and np.array_equal(a.dv_f, b.dv_f)
    assert [p.delay for p in back.projections] == [p.delay for p in lg.projections]
    reasons = " ".join(netx_fit(lg))
    assert "not fed by exactly the previous layer" in reasons  # a skip connection: netx is sequential


@pytest.mark.parametrize("name", list(CASES))
def test_emulator_agrees_with_the_float_reference_and_counts_the_graph(name):
    """Loose agreement (fixed point is not float): readout potentials within 15 % relative RMS, spike outputs
    within 5 % of values, at least 5 of 6 predictions equal. Counts: the graph's nodes only, relays excluded."""
    g = CASES[name]()
    x = _inputs(g, 1)
    steps = x.shape[1]
    ref = get_target("torch", device="cpu").run(g, x)
    emu = get_target("loihi-emu").run(g, x)
    a, b = emu.aligned_outputs(steps), ref.outputs
    if name == "analog_skip":
        assert b.sum() > 20 and np.mean(a != b) < 0.05
    else:
        assert emu.outputs.dtype == np.float32 and not np.all(np.mod(a, 1) == 0)  # potentials, graph units
        assert np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)) < 0.15
    assert np.mean(emu.predictions(steps) == ref.predictions()) >= 5 / 6
    assert [(s.name, s.neurons) for s in emu.layers] == [(s.name, s.neurons) for s in ref.layers]
    t_out = steps + emu.delay
    assert all(s.neuron_updates == s.neurons * x.shape[0] * t_out for s in emu.layers)
    assert emu.info["warnings"] == []
    assert emu.info["quantisation"]["relays"] == get_target("loihi-emu").quantised(g, x).report["relays"] != []


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
@pytest.mark.parametrize("name", list(CASES))
def test_lava_equals_the_emulator_on_every_layer(name):
    g = CASES[name]()
    x = _inputs(g, 2, batch=3)
    emu = get_target("loihi-emu").run(g, x, record=True)
    lava = get_target("lava").run(g, x, record=True)
    assert set(lava.records) == set(emu.records) == {layer.name for layer in emu.layers if layer.neurons}
    for layer, rec in emu.records.items():
        np.testing.assert_array_equal(lava.records[layer], rec, err_msg=layer)
    np.testing.assert_array_equal(lava.outputs, emu.outputs)
    assert [s.synops for s in lava.layers] == [s.synops for s in emu.layers]
    assert lava.info["processes"] == get_target("lava").quantised(g, x).lava_processes()


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
def test_lava_floating_point_runs_readouts_groups_and_relays_as_the_reference():
    g = readout_mlp("CubaLI")
    x = _inputs(g, 3, batch=3)
    ref = get_target("torch", device="cpu").run(g, x)
    lava = get_target("lava", tag="floating_pt").run(g, x)
    a, b = lava.aligned_outputs(x.shape[1]), ref.outputs
    assert np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)) < 1e-4


def test_refused_mappings_are_one_line():
    g = readout_mlp("LI")
    g.nodes["ro"] = nir.I(r=np.ones(4))
    with pytest.raises(ValueError, match="node 'ro' \\(I, non-spiking integrator\\) is not supported"):
        quantize(g)


def test_netx_names_readouts_and_decay_groups():
    """Each layer netx cannot carry is named: a readout, and a layer of several decay groups."""
    g = readout_mlp("LI")
    g.edges = [e for e in g.edges if "skip" not in e]
    del g.nodes["skip"]
    reasons = netx_fit(quantize(g, weight_exp_range=(0, 0)))
    assert any("'ro': a non-spiking LI readout" in r for r in reasons)
    assert any("'l1': decays differ between its neurons" in r for r in reasons)

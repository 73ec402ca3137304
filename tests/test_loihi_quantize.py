"""Quantisation of float NIR graphs to Loihi 2 fixed point (numpy only), its report, files and netx export."""
from __future__ import annotations

import subprocess
import sys

import h5py
import nir
import numpy as np
import pytest

from snnkit.deploy.loihi import LoihiGraph, QuantizeError, netx_fit, quantize, write_netx
from snnkit.deploy.loihi import nirops
from snnkit.deploy.loihi.quantize import canonical_mantissas, decays
from snnkit.graph import infer_shapes, ops
from conftest import ZOO

DT = 1e-3


def _mlp(w1, w2, *, tau=0.01, thr=1.0, bias=None, v_leak=0.0, neuron="LIF"):
    n_in, n_h, n_out = w1.shape[1], w1.shape[0], w2.shape[0]

    def cell(n):
        if neuron == "IF":
            return nir.IF(r=np.ones(n), v_threshold=np.full(n, thr), v_reset=np.zeros(n))
        beta = 1 - DT / tau
        return nir.LIF(tau=np.full(n, tau), r=np.full(n, 1 / (1 - beta)), v_leak=np.full(n, v_leak),
                       v_threshold=np.full(n, thr) if np.isscalar(thr) else np.asarray(thr, float),
                       v_reset=np.zeros(n))

    b = np.zeros(n_h) if bias is None else bias
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc1": nir.Affine(weight=w1, bias=b), "l1": cell(n_h),
             "fc2": nir.Linear(weight=w2), "l2": cell(n_out),
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("input", "fc1"), ("fc1", "l1"), ("l1", "fc2"), ("fc2", "l2"), ("l2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT})


def test_importing_the_quantiser_and_the_worker_does_not_import_torch():
    code = ("import sys, snnkit.deploy.loihi, snnkit.deploy.loihi.quantize, snnkit.deploy.loihi.netx, "
            "snnkit.deploy.loihi.netx_read, snnkit.deploy.loihi.netx_check, "
            "snnkit.deploy.loihi.graph, snnkit.deploy.lava, snnkit.deploy.lava.worker; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_decays_follow_lavas_conventions():
    assert decays("LIF", 0.0, 1 - 0.04) == (4095, 164)  # du 4095 empties the current every step
    assert decays("IF", 0.0, 1.0) == (4095, 0)
    du, dv = decays("CubaLIF", 1 - 1 / 2.25, 1 - 0.1)
    assert dv == round(4096 * 0.1) and du == round(4096 / 2.25) - 1  # Lava adds 1 to du
    assert (4096 - du - 1) / 4096 == pytest.approx(1 - 1 / 2.25, abs=1 / 4096)


def test_canonical_mantissas_match_lavas_weight_forms():
    rng = np.random.default_rng(0)
    mixed = canonical_mantissas(rng.normal(0, 100, 500))
    assert np.all(mixed % 2 == 0) and mixed.min() >= -256 and mixed.max() <= 254
    exc = canonical_mantissas(rng.uniform(0, 300, 50))
    assert exc.min() >= 0 and exc.max() == 255 and np.any(exc % 2 == 1)
    inh = canonical_mantissas(-rng.uniform(0, 300, 50))
    assert inh.max() <= 0 and inh.min() == -255


def test_weights_thresholds_and_biases_are_reproduced_within_the_report():
    rng = np.random.default_rng(1)
    w1, w2 = rng.normal(0, 0.4, (20, 10)), rng.normal(0, 0.5, (5, 20))
    thr = rng.uniform(0.5, 2.0, 5)  # per-neuron thresholds are folded into per-neuron scales
    g = _mlp(w1, w2, bias=rng.normal(0, 0.05, 20), v_leak=0.1)
    g.nodes["l2"].v_threshold = thr
    lg = quantize(g)
    assert [layer.name for layer in lg.layers] == ["l1", "l2"] and lg.delay == 2
    p2 = lg.into("l2")[0]
    beta = 1 - DT / 0.01
    # reference: threshold units, w~ = W g / theta with g = (1 - beta) r = 1 here
    w_t = w2 / thr[:, None]
    w_q = p2.weight * 2.0 ** p2.weight_exp / lg.layer("l2").vth
    rep = {r["name"]: r for r in lg.report["layers"]}
    err = np.abs(w_q - w_t).max()
    assert err == pytest.approx(rep["l2"]["projections"][0]["weight_max_abs_err_thr"])
    assert err <= 2.0 ** p2.weight_exp / lg.layer("l2").vth + 1e-12  # within one mantissa step
    l1 = lg.layer("l1")
    bias_t = ((1 - beta) * 0.1 + g.nodes["fc1"].bias) / 1.0  # v_leak and the connection bias, per step
    np.testing.assert_allclose(l1.bias_int() / (64 * l1.vth), bias_t, atol=1 / (64 * l1.vth))
    assert l1.dv == round(4096 * (1 - beta)) and l1.du == 4095
    for r in lg.report["layers"]:
        assert r["headroom"]["bits"] >= 1 and not r["headroom"]["overflow_risk"]
        assert 0 < r["weights_rel_rmse"] < 0.02


def test_report_counts_weights_that_became_zero_and_lossy_features():
    w1 = np.full((4, 3), 0.5)
    w1[0, 0] = 1e-5  # far below the mantissa step: becomes zero
    g = _mlp(w1, np.full((2, 4), 0.5))
    g.metadata["reset"] = {"l1": "subtract", "l2": "zero"}
    g.nodes["l2"].tau = np.array([0.01, 0.02])  # per-neuron decays: exact, one Lava process per group
    g.nodes["l2"].v_reset = np.array([0.0, 0.3])  # reset to a non-zero potential: lossy
    lg = quantize(g)
    rep = {r["name"]: r for r in lg.report["layers"]}
    assert rep["l1"]["projections"][0]["became_zero"] == 1
    assert rep["l1"]["projections"][0]["nonzero_float"] == 12
    assert rep["l1"]["lossy"] == [] and rep["l1"]["reset"] == "subtract"  # exact: LIFSubtractReset
    assert lg.layer("l1").reset == "subtract" and lg.layer("l2").reset == "zero"
    assert rep["l2"]["decay_groups"] == 2 and rep["l2"]["dv"] == [205, 410]
    assert [m for m in rep["l2"]["lossy"]] == ["v_reset != 0 is not available on Loihi 2: runs with reset to zero"]
    assert lg.report["lossy"] == [m for m in lg.report["lossy"] if m.startswith("l2: ")]


def test_save_and_load_round_trip(tmp_path):
    lg = quantize(nir.read(ZOO / "cnn_sinabs.nir"), source="cnn_sinabs.nir")
    lg.save(tmp_path / "q")
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["export_report.json", "loihi_graph.json",
                                                                   "loihi_params.npz"]
    back = LoihiGraph.load(tmp_path / "q")
    assert back.input == lg.input and back.output == lg.output and back.report == lg.report
    for a, b in zip(lg.layers + lg.projections, back.layers + back.projections):
        for k, v in vars(a).items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, getattr(b, k))
            else:
                assert getattr(b, k) == v, k
    with pytest.raises(ValueError, match="not a saved Loihi graph"):
        LoihiGraph.load(tmp_path)


@pytest.mark.parametrize("seed", range(3))
def test_pooling_folded_into_the_next_convolution_is_exact(seed):
    """SumPool/AvgPool -> Conv2d becomes one strided convolution; it must equal the probed exact map."""
    rng = np.random.default_rng(seed)
    c, h = 3, 8
    k = [2, 4][seed % 2]
    pool = (nir.SumPool2d if seed % 2 else nir.AvgPool2d)(kernel_size=np.array([k, k]), stride=np.array([k, k]),
                                                         padding=np.array([0, 0]))
    conv = nir.Conv2d(input_shape=(h // k, h // k), weight=rng.normal(size=(4, c, 3, 3)), stride=1, padding=1,
                      dilation=1, groups=1, bias=rng.normal(size=4))
    nodes = {"input": nir.Input(input_type={"input": np.array([c, h, h])}), "pool": pool, "conv": conv}
    edges = [("input", "pool"), ("pool", "conv")]
    shapes = infer_shapes(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    preds = {"input": [], "pool": ["input"], "conv": ["pool"], "t": ["conv"]}
    region = nirops.region_into("t", {**nodes, "t": None}, preds, lambda n: n == "input")
    chain = nirops.as_conv_chain(region, nodes, shapes)
    assert chain is not None and chain.weight.shape[2:] == (3 * k, 3 * k) and chain.stride == (k, k)
    target_shape = shapes["conv"][1]
    maps, b = nirops.linear_maps(region, nodes, shapes, target_shape)
    x = rng.normal(size=(5, c, h, h))
    via_chain = ops.conv2d(x, chain.weight, chain.stride, chain.padding, chain.dilation, chain.groups)
    via_chain = via_chain + chain.bias[None, :, None, None]
    np.testing.assert_allclose(via_chain.reshape(5, -1), x.reshape(5, -1) @ maps["input"].T + b, atol=1e-9)


def test_zoo_graphs_quantise_and_name_their_lossy_parts():
    lgs = {name: quantize(nir.read(ZOO / f"{name}.nir"), source=name)
           for name in ["lif_norse", "two_lif_neurons", "cnn_sinabs", "braille_noDelay_bias_zero",
                        "braille_noDelay_noBias_subtract"]}
    assert lgs["lif_norse"].delay == 1 and lgs["cnn_sinabs"].delay == 5
    kinds = [p.kind for p in lgs["cnn_sinabs"].projections]
    assert kinds == ["conv", "conv", "conv", "dense", "dense"]  # pool 4 folded into conv 5; 7+8+9 dense
    assert lgs["cnn_sinabs"].projections[2].nodes == ["4", "5"]
    rec = [p for p in lgs["braille_noDelay_bias_zero"].projections if p.recurrent]
    assert [(p.src, p.dst) for p in rec] == [("lif1.lif", "lif1.lif")]
    notes = lgs["braille_noDelay_bias_zero"].report["notes"]
    assert any("CubaLIF with a connection bias" in n for n in lgs["braille_noDelay_bias_zero"].report["lossy"])
    assert any(n.startswith("lif1.lif: the recurrent connection's bias") for n in notes)
    assert lgs["braille_noDelay_noBias_subtract"].report["notes"] == []
    assert lgs["two_lif_neurons"].layer("lif1").bias_int()[0] > 0  # v_leak 1.2 becomes a bias


def test_unsupported_graphs_fail_with_one_line_naming_the_node():
    w = np.ones((2, 2))
    integrator = _mlp(w, w)
    integrator.nodes["l2"] = nir.I(r=np.ones(2))
    with pytest.raises(QuantizeError, match="node 'l2' \\(I, non-spiking integrator\\)"):
        quantize(integrator, source="i.nir")
    hidden_li = _mlp(w, w)
    hidden_li.nodes["l1"] = nir.LI(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2))
    with pytest.raises(QuantizeError, match="readout 'l1' \\(LI\\) must feed the Output node alone"):
        quantize(hidden_li)
    readout = _mlp(w, w)
    readout.edges = [e for e in readout.edges if e != ("l2", "output")] + [("fc2", "output")]
    with pytest.raises(QuantizeError, match="Output node must be fed by a spiking layer or an LI/CubaLI readout"):
        quantize(readout)
    between = _mlp(w, w)
    between.nodes["back"] = nir.Linear(weight=w)
    between.edges += [("l2", "back"), ("back", "l1")]
    with pytest.raises(QuantizeError, match="recurrence between different layers"):
        quantize(between)
    zero_thr = _mlp(w, w, thr=0.0)
    with pytest.raises(QuantizeError, match="thresholds must be > 0"):
        quantize(zero_thr)
    assert issubclass(QuantizeError, ValueError)  # CLIs turn it into exit code 2


def test_input_coding():
    g = _mlp(np.ones((3, 2)), np.ones((1, 3)))
    spikes = quantize(g, input_mode="spikes").input
    xi, info = spikes.encode(np.array([[[0, 1], [2, 0]]], float))
    np.testing.assert_array_equal(xi, [[[0, 1], [1, 0]]])
    assert info == {"non_binary_values": 1}
    analog = quantize(g, input_mode="analog", input_range=2.0, input_bits=4).input
    xi, info = analog.encode(np.array([[[1.0, -3.0]]]))
    assert analog.scale == 15 / 2 and analog.message_bits == 5
    np.testing.assert_array_equal(xi, [[[8, -15]]])
    assert info == {"clipped_values": 1}
    with pytest.raises(ValueError, match="per step"):
        analog.encode(np.zeros((1, 2, 3)))


def test_netx_file_holds_what_lava_runs(tmp_path):
    lg = quantize(nir.read(ZOO / "cnn_sinabs.nir"), weight_exp_range=(0, 0))
    assert netx_fit(lg) == []
    notes = write_netx(lg, tmp_path / "cnn.net")
    assert notes == []
    with h5py.File(tmp_path / "cnn.net") as f:
        layers = [f["layer"][str(i)] for i in range(len(f["layer"]))]
        types = [g["type"][0].decode() for g in layers]
        assert types == ["input", "conv", "conv", "conv", "flatten", "dense", "dense"]
        np.testing.assert_array_equal(layers[0]["shape"][()], [2, 34, 34])
        synapse_layers = [g for g, t in zip(layers, types) if t in ("conv", "dense")]
        for g, layer, proj in zip(synapse_layers, lg.layers, lg.projections):
            np.testing.assert_array_equal(g["weight"][()].astype(int), proj.effective_weight())
            n = g["neuron"]
            assert n["type"][0] == b"CUBA"
            assert int(n["iDecay"][()]) - 1 == layer.du and int(n["vDecay"][()]) == layer.dv
            assert int(n["vThMant"][()]) == layer.vth
            if proj.kind == "conv":
                assert tuple(g["stride"][()]) == proj.stride and tuple(g["padding"][()]) == proj.padding
        assert tuple(layers[3]["stride"][()]) == (2, 2)  # the folded pooling


def test_netx_refuses_what_it_cannot_express(tmp_path):
    g = nir.read(ZOO / "braille_noDelay_bias_zero.nir")
    lg = quantize(g, weight_exp_range=(1, 1))
    reasons = netx_fit(lg)
    assert reasons and all("weight exponent 1" in r for r in reasons)
    with pytest.raises(ValueError, match="does not fit lava-dl's netx format: projection"):
        write_netx(lg, tmp_path / "b.net")
    assert not (tmp_path / "b.net").exists()
    ok = quantize(g, weight_exp_range=(0, 0))
    notes = write_netx(ok, tmp_path / "b.net")
    assert any("bias << 6" in n for n in notes)
    with h5py.File(tmp_path / "b.net") as f:
        assert f["layer"]["1"]["type"][0] == b"dense_rec" and "weight_rec" in f["layer"]["1"]

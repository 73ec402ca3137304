"""Export to NIR and back (issue 3): parameters per docs/semantics.md, metadata, lossy cases, exact round trips."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from torch import nn

from snnkit.deploy.base import DeployError
from snnkit.export import ExportReport, from_nir, read_nir, to_nir, write_nir
from snnkit.graph import flatten_graph, graph_metadata, plan
from snnkit.models import SpikingModel, build
from snnkit.nn import LIF, BatchNormTT, Conv2d, CubaLIF, DirectEncoder, Flatten, SumPool2d


SHAPE = [1, 8, 8]


def F(v: float) -> np.float64:
    """A float32 parameter value, widened for float64 arithmetic."""
    return np.float64(np.float32(v))


def _model(seed: int = 0, scale: float = 3.0, **cfg) -> SpikingModel:
    """A random model whose weights are scaled up so that every layer spikes."""
    torch.manual_seed(seed)
    m = build({"arch": "mlp", "input_shape": SHAPE, "num_classes": 10, "hidden": [24], **cfg}).eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.1, 0.1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("weight") and p.dim() > 1:
                p.mul_(scale)
    return m


def _round_trip(model: SpikingModel, tmp_path, name="m.nir"):
    graph = to_nir(model)
    path = write_nir(graph, tmp_path / name)
    return graph, from_nir(read_nir(path))


def _compare(model, net, n=48, seed=1):
    x = torch.rand((n, *model.config["input_shape"]), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        inp = model.encoder(x)
        ref = model.layers(inp)
        got = net(inp)
    return ref, got


CONFIGS = {
    "mlp-lif": {},
    "mlp-lif-subtract": {"reset": "subtract", "beta": 0.73, "threshold": 0.6},
    "mlp-if": {"neuron": "if"},
    "mlp-poisson": {"encoder": {"name": "poisson", "seed": 3}},
    "mlp-latency": {"encoder": {"name": "latency"}, "timesteps": 6},
    "mlp-bn": {"batchnorm": True},
    "convnet-bn": {"arch": "convnet", "channels": [4, 6], "fc": [12]},
    "convnet": {"arch": "convnet", "channels": [4, 6], "fc": [12], "batchnorm": False},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_outputs_identical(name, tmp_path):
    model = _model(**CONFIGS[name])
    _, net = _round_trip(model, tmp_path)
    ref, got = _compare(model, net)
    assert ref.sum() > 0, "the test model must spike"
    assert torch.equal(ref, got)


def test_round_trip_identical_for_every_layer(tmp_path):
    model = _model(arch="convnet", channels=[4], fc=[8], batchnorm=False)
    _, net = _round_trip(model, tmp_path)
    x = torch.rand((16, *SHAPE), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        recorded = model.run(x)
        outs = net.run(model.encoder(x))
    for layer, spikes in recorded.spikes.items():
        assert torch.equal(outs[layer], spikes), layer


def test_lif_parameters_follow_semantics(tmp_path):
    model = _model(beta=0.8, threshold=0.7, dt=2e-3)
    graph = to_nir(model)
    lif = graph.nodes["2_lif"]
    assert isinstance(lif, nir.LIF)
    np.testing.assert_allclose(lif.tau, 2e-3 / (1 - F(0.8)), rtol=1e-12)
    np.testing.assert_allclose(lif.r, 1 / (1 - F(0.8)), rtol=1e-12)
    assert lif.tau.shape == (24,) and np.all(lif.v_threshold == np.float32(0.7)) and np.all(lif.v_reset == 0)
    assert np.all(lif.v_leak == 0)
    # read back: beta = 1 - dt/tau, g = (1-beta) r exactly (float32)
    net = from_nir(graph)
    layer = net.modules_by_name()["2_lif"]
    assert torch.all(layer.beta == torch.tensor(0.8)) and torch.all(layer.input_scale == 1.0)


def test_if_and_cubalif_parameters():
    enc = DirectEncoder(4)
    layers = nn.Sequential(OrderedDict(
        [("flat", Flatten()), ("fc", nn.Linear(4, 3)),
         ("cuba", CubaLIF(alpha=0.6, beta=0.85, threshold=0.5, syn_scale=1.0, input_scale=2.0))]))
    model = SpikingModel(enc, layers, {"input_shape": [4], "num_classes": 3, "dt": 1e-3})
    graph = to_nir(model)
    c = graph.nodes["cuba"]
    np.testing.assert_allclose(c.tau_syn, 1e-3 / (1 - F(0.6)), rtol=1e-12)
    np.testing.assert_allclose(c.tau_mem, 1e-3 / (1 - F(0.85)), rtol=1e-12)
    np.testing.assert_allclose(c.w_in, 1 / (1 - F(0.6)), rtol=1e-12)
    np.testing.assert_allclose(c.r, 2 / (1 - F(0.85)), rtol=1e-12)
    with torch.no_grad():
        layers.fc.weight.mul_(4)
    x = torch.rand(8, 4)
    net = from_nir(to_nir(model))
    with torch.no_grad():
        assert torch.equal(model.layers(enc(x)), net(enc(x)))
    if_graph = to_nir(_model(neuron="if"))
    assert isinstance(if_graph.nodes["2_if"], nir.IF) and np.all(if_graph.nodes["2_if"].r == 1)


def test_metadata(tmp_path):
    model = _model(encoder={"name": "poisson", "seed": 7}, timesteps=5, reset="subtract", dt=5e-4)
    _round_trip(model, tmp_path)
    meta = graph_metadata(read_nir(tmp_path / "m.nir"))
    assert meta["dt"] == 5e-4 and meta["timesteps"] == 5
    assert meta["encoder"] == {"name": "poisson", "seed": 7}
    assert meta["reset"] == {"2_lif": "subtract", "4_lif": "subtract"}
    assert meta["input_shape"] == SHAPE and meta["num_classes"] == 10 and meta["logit_scale"] == 10.0
    assert "snnkit_version" in meta


def test_subtract_reset_is_reported_and_only_snnkit_reads_it(tmp_path):
    model = _model(reset="subtract", beta=0.7, threshold=0.5, scale=6.0)
    report = ExportReport()
    graph = to_nir(model, report=report)
    assert len(report.warnings) == 2 and all("subtraction" in w for w in report.warnings)
    assert all(np.all(graph.nodes[n].v_reset == 0) for n in ("2_lif", "4_lif"))
    # A reader without snnkit's metadata resets to zero: different spikes.
    plain = nir.NIRGraph(nodes=graph.nodes, edges=graph.edges, metadata={"dt": graph.metadata["dt"]},
                         type_check=False)
    ref, exact = _compare(model, from_nir(graph))
    _, zero = _compare(model, from_nir(plain))
    assert torch.equal(ref, exact)
    assert not torch.equal(ref, zero)
    assert from_nir(plain).resets == {"2_lif": "zero", "4_lif": "zero"}


def test_pruned_weights_stay_exact_zeros(tmp_path):
    for cfg in ({}, {"batchnorm": True}, {"arch": "convnet", "channels": [4], "fc": [8]}):
        model = _model(**cfg)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p[torch.rand_like(p) < 0.5] = 0.0
        graph = to_nir(model)
        for name, m in model.layers.named_children():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                w = graph.nodes[name].weight
                assert np.array_equal(w == 0, m.weight.detach().numpy() == 0), name


def test_batchnorm_folded_with_note():
    model = _model(batchnorm=True)
    report = ExportReport()
    graph = to_nir(model, report=report)
    assert not any("bn" in n for n in graph.nodes)
    assert any("folded" in n for n in report.notes)
    bad = SpikingModel(DirectEncoder(2), nn.Sequential(OrderedDict(
        [("flat", Flatten()), ("bn", BatchNormTT(64))])),
        {"input_shape": SHAPE, "num_classes": 64})
    with pytest.raises(ValueError, match="BatchNormTT must directly follow"):
        to_nir(bad)


def test_sumpool_and_unsupported_layers():
    enc = DirectEncoder(3)
    layers = nn.Sequential(OrderedDict([("conv", Conv2d(1, 2, 3, padding=1)), ("pool", SumPool2d(2)),
                                        ("lif", LIF(0.9)), ("flat", Flatten()), ("fc", nn.Linear(32, 3)),
                                        ("out", LIF(0.9))]))
    model = SpikingModel(enc, layers, {"input_shape": SHAPE, "num_classes": 3})
    graph = to_nir(model)
    assert isinstance(graph.nodes["pool"], nir.SumPool2d)
    x = torch.rand(4, *SHAPE) * 4
    with torch.no_grad():
        assert torch.equal(layers(enc(x)), from_nir(graph)(enc(x)))
    layers.add_module("act", nn.ReLU())
    with pytest.raises(ValueError, match="ReLU has no NIR mapping"):
        to_nir(model)


def test_recurrent_network_written_back_with_cycles(tmp_path, zoo):
    net = from_nir(zoo / "braille_noDelay_bias_zero.nir")
    graph = to_nir(net)
    assert ("lif1.w_rec", "lif1.lif") in graph.edges and plan(graph).has_cycles
    net2 = from_nir(read_nir(write_nir(graph, tmp_path / "b.nir")))
    x = (torch.rand(3, 40, 12, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    with torch.no_grad():
        assert torch.equal(net(x), net2(x))


def test_flatten_nested_subgraph(zoo):
    flat = read_nir(zoo / "braille_noDelay_bias_zero.nir")
    inner = {"lif": flat.nodes["lif1.lif"], "w_rec": flat.nodes["lif1.w_rec"],
             "input": nir.Input(input_type=np.array([38])), "output": nir.Output(output_type=np.array([38]))}
    sub = nir.NIRGraph(nodes=inner, edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
                       type_check=False)
    outer = {k: v for k, v in flat.nodes.items() if not k.startswith("lif1.")}
    outer["lif1"] = sub
    nested = nir.NIRGraph(nodes=outer, edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"),
                                              ("lif2", "output")], type_check=False)
    g = flatten_graph(nested)
    assert set(g.nodes) == set(flat.nodes)
    assert set(g.edges) == set(flat.edges)
    x = (torch.rand(2, 30, 12, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    with torch.no_grad():
        assert torch.equal(from_nir(nested)(x), from_nir(flat)(x))


def test_stepped_and_layerwise_execution_agree(zoo):
    """The step-at-a-time path (used for cycles) computes what the layer-at-a-time path computes: the same
    spikes; analog values up to the summation order of a matrix product over [B*T] vs [B] rows."""
    net = from_nir(zoo / "cnn_sinabs.nir")
    x = (torch.rand(1, 8, 2, 34, 34, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    with torch.no_grad():
        layerwise = net.run(x)
        stepped = net._run_stepped(x)
    for name, node in net.graph.nodes.items():
        if isinstance(node, nir.IF):
            assert layerwise[name].sum() > 0 and torch.equal(layerwise[name], stepped[name]), name
        else:
            torch.testing.assert_close(layerwise[name], stepped[name], rtol=1e-6, atol=1e-5)


def test_recurrent_edge_reads_previous_step():
    """A recurrent edge is silent at t = 0 and then carries the previous step's output (docs/semantics.md)."""
    n = 2
    nodes = {"input": nir.Input(input_type=np.array([n])),
             "fc": nir.Linear(weight=np.eye(n, dtype=np.float32)),
             "lif": nir.IF(r=np.ones(n), v_threshold=np.full(n, 0.5), v_reset=np.zeros(n)),
             "rec": nir.Affine(weight=np.zeros((n, n), np.float32), bias=np.full(n, 1.0, np.float32)),
             "output": nir.Output(output_type=np.array([n]))}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    net = from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    with torch.no_grad():
        out = net.run(torch.zeros(1, 4, n))
    assert out["lif"][0, :, 0].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert out["rec"][0, 0].tolist() == [1.0, 1.0]


def test_li_and_cubali_readouts_follow_semantics_and_round_trip(tmp_path):
    """LI / CubaLI: the charge of LIF / CubaLIF without fire and reset, the output is h (docs/semantics.md);
    the same in the stepped path, and written back as the same nodes."""
    dt, n, T = 1e-3, 3, 9
    li = nir.LI(tau=np.array([0.002, 0.005, 0.01]), r=np.array([2.0, 5.0, 10.0]), v_leak=np.array([0.0, 0.1, -0.2]))
    cuba = nir.CubaLI(tau_syn=np.full(n, 0.004), tau_mem=np.full(n, 0.01), r=np.full(n, 10.0), v_leak=np.zeros(n),
                      w_in=np.full(n, 4.0))
    x = torch.rand(2, T, n, generator=torch.Generator().manual_seed(2))
    for node in (li, cuba):
        g = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([n])), "ro": node,
                                "output": nir.Output(output_type=np.array([n]))},
                         edges=[("input", "ro"), ("ro", "output")], metadata={"dt": dt}, type_check=False)
        net = from_nir(g)
        with torch.no_grad():
            out, stepped = net(x), net._run_stepped(x)["output"]
        xs = x.double().numpy()
        v, i, expected = np.zeros((2, n)), np.zeros((2, n)), []
        for t in range(T):
            if isinstance(node, nir.LI):
                beta = 1 - dt / node.tau
                v = beta * v + (1 - beta) * (node.v_leak + node.r * xs[:, t])
            else:
                alpha, beta = 1 - dt / node.tau_syn, 1 - dt / node.tau_mem
                i = alpha * i + (1 - alpha) * node.w_in * xs[:, t]
                v = beta * v + (1 - beta) * (node.v_leak + node.r * i)
            expected.append(v)
        np.testing.assert_allclose(out.numpy(), np.stack(expected, 1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stepped, out)
        back = read_nir(write_nir(to_nir(net), tmp_path / "ro.nir"))
        assert type(back.nodes["ro"]) is type(node) and "ro" not in back.metadata.get("reset", {})
        with torch.no_grad():
            torch.testing.assert_close(from_nir(back)(x), out)


def test_unsupported_node_and_bad_parameters():
    g = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((2, 2), np.float32), bias=np.zeros(2, np.float32)),
                               nir.Threshold(threshold=np.ones(2)))
    with pytest.raises(DeployError, match="Threshold is not supported"):
        from_nir(g)
    lif = nir.LIF(tau=np.full(2, 1e-4), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))
    g = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((2, 2), np.float32)), lif)
    with pytest.raises(DeployError, match="outside"):
        from_nir(g, dt=1e-3)
    assert from_nir(g, dt=1e-5).dt == 1e-5


def test_unreadable_file_names_the_file(zoo, tmp_path):
    bad = zoo / "braille_noDelay_bias_zero_subgraph.nir"
    with pytest.raises(DeployError, match=r"braille_noDelay_bias_zero_subgraph\.nir: not a readable NIR graph"):
        read_nir(bad)
    junk = tmp_path / "junk.nir"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(DeployError, match="junk.nir: not a readable NIR graph"):
        read_nir(junk)
    with pytest.raises(DeployError, match="no such NIR file"):
        read_nir(tmp_path / "missing.nir")

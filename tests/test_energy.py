"""snnkit.energy: the figure data, energy arithmetic against hand computation, user model files, and the
shared operation counter (energy.counting.layer_stats) against brute force and NeuroBench."""
from __future__ import annotations

import json
import math
from importlib import resources

import nir
import numpy as np
import pytest
import torch

from snnkit.deploy.base import TargetResult
from snnkit.energy.counting import LayerStats, layer_stats
from snnkit.energy import (EnergyModelError, builtin_figures, builtin_models, energy_of, load_models,
                           resolve_models)
from snnkit.energy.counting import Activity

RAW = json.loads(resources.files("snnkit.energy").joinpath("figures.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ the data file


@pytest.mark.parametrize("fid", sorted(RAW["figures"]))
def test_every_figure_has_source_node_voltage_and_how_obtained(fid):
    f = RAW["figures"][fid]
    assert isinstance(f["value_pj"], (int, float)) and f["value_pj"] > 0
    for key in ("operation", "source", "technology", "voltage", "obtained"):
        assert isinstance(f[key], str) and len(f[key].strip()) > 3, (fid, key)
    assert any(ch.isdigit() for ch in f["source"]), f"{fid}: the source should name a year/volume/file"


def test_builtin_models_reference_known_figures_and_compose_as_published():
    figures, models = builtin_figures(), builtin_models()
    for m in models.values():
        for c in m.costs.values():
            assert set(c.figures) <= figures.keys()
    # The SNN papers' "MAC 4.6 pJ / AC 0.9 pJ" is Horowitz's fp32 mult + add vs add.
    fp32 = models["horowitz45-fp32"]
    assert fp32.pj("mac") == pytest.approx(figures["horowitz45.fp32_mult"].value_pj + figures["horowitz45.fp32_add"].value_pj)
    assert fp32.pj("mac") == pytest.approx(4.6) and fp32.pj("synop") == pytest.approx(0.9)
    assert models["horowitz45-int8"].pj("mac") == pytest.approx(0.23)
    assert models["loihi1-davies2018"].pj("neuron_update_active") > models["loihi1-davies2018"].pj("neuron_update_inactive")
    # Loihi 2 has no public table: present, unavailable, with the reason.
    assert not models["loihi2"].available and "no public" in models["loihi2"].reason.lower()


# ------------------------------------------------------------------------------------ energy arithmetic


def _record() -> TargetResult:
    """A hand-built run: 2 samples, 8 steps; analog-fed first layer, spike-fed second layer."""
    layers = [
        LayerStats("fc1", "Affine", macs=100),
        LayerStats("lif1", "LIF", neurons=5, spikes=7, neuron_updates=80),
        LayerStats("fc2", "Affine", synops=50),
        LayerStats("lif2", "LIF", neurons=3, spikes=2, neuron_updates=48),
    ]
    return TargetResult(target="hand", outputs=np.zeros((2, 8, 3)), layers=layers, wall_s=0.1)


def test_energy_matches_hand_computation():
    r = _record()
    pj = 1e-12
    e = energy_of(r, "horowitz45-fp32")  # 100 MACs x 4.6 + 50 ACs x 0.9 + 128 updates x (3.7 + 0.9)
    assert e.total_j == pytest.approx((100 * 4.6 + 50 * 0.9 + 128 * 4.6) * pj)
    assert e.total_j_min == e.total_j
    assert e.per_sample_j == pytest.approx(e.total_j / 2)
    assert [le.name for le in e.layers] == ["fc1", "lif1", "fc2", "lif2"]
    assert e.layers[0].joules == pytest.approx(460 * pj) and e.layers[0].terms == {"mac": pytest.approx(460 * pj)}
    assert e.terms["synop"].count == 50 and e.terms["mac"].count == 100 and e.terms["neuron_update"].count == 128
    assert e.terms["synop"].counted_from == "synops"
    assert set(e.figures) == {"horowitz45.fp32_add", "horowitz45.fp32_mult"}
    assert all(f.source for f in e.figures.values())

    d = energy_of(r, "loihi1-davies2018")  # upper: every update active; lower: only the 9 that spiked
    assert d.total_j == pytest.approx((150 * 23.6 + 128 * 81) * pj)
    assert d.total_j_min == pytest.approx((150 * 23.6 + 9 * 81 + 119 * 52) * pj)
    assert any("upper bound" in n for n in d.notes) and any("graded spike" in n for n in d.notes)

    s = energy_of(r, "loihi1-sanafe")  # plus 69.3 pJ per emitted spike
    assert s.total_j == pytest.approx((150 * 35.5 + 128 * 72.8 + 9 * 69.3) * pj)
    assert s.total_j_min == pytest.approx((150 * 35.5 + 9 * 72.8 + 119 * 51.2 + 9 * 69.3) * pj)
    assert s.layers[1].terms["spike"] == pytest.approx(7 * 69.3 * pj)

    t = energy_of(r, "truenorth")  # no neuron-update figure: reported as not costed
    assert t.total_j == pytest.approx(150 * 26 * pj)
    assert t.not_costed and "neuron_updates (128)" in t.not_costed[0]
    json.dumps(t.summary())  # JSON-ready


def test_unknown_and_unavailable_models_raise_one_line():
    with pytest.raises(EnergyModelError, match="no public per-operation energy table"):
        energy_of(_record(), "loihi2")
    with pytest.raises(EnergyModelError, match="unknown energy model 'nope'"):
        energy_of(_record(), "nope")


# ----------------------------------------------------------------------------------- user model files

USER = {
    "schema": "snnkit.energy-models/1",
    "figures": {
        "lab.synop": {"value_pj": 10.0, "operation": "synaptic op", "source": "our lab measurement, 2025 run 7",
                      "technology": "22 nm", "voltage": "0.8 V", "obtained": "power meter, averaged over 1e9 ops"},
    },
    "models": {
        "lab-chip": {"description": "a measured chip", "platform": "lab",
                     "costs": {"synop": {"figures": ["lab.synop"]},
                               "mac": {"figures": ["lab.synop", "horowitz45.fp32_mult"], "note": "built-in figure reused"}}},
    },
}


def test_user_model_file_works(tmp_path):
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(USER))
    (model,) = resolve_models([str(path)])
    assert model.name == "lab-chip" and model.origin == str(path)
    e = energy_of(_record(), model)
    assert e.total_j == pytest.approx((50 * 10.0 + 100 * (10.0 + 3.7)) * 1e-12)
    assert "neuron_updates (128)" in e.not_costed[0]
    assert resolve_models(["truenorth", str(path)])[0].name == "truenorth"


def _broken(mutate):
    data = json.loads(json.dumps(USER))
    mutate(data)
    return json.dumps(data)


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON (line 1"),
    ("[]", "must be a JSON object"),
    (_broken(lambda d: d["figures"]["lab.synop"].pop("source")), "figures.lab.synop.source: missing"),
    (_broken(lambda d: d["figures"]["lab.synop"].update(value_pj="ten")), "figures.lab.synop.value_pj"),
    (_broken(lambda d: d["models"]["lab-chip"]["costs"]["synop"].update(figures=["nope"])), "unknown figure 'nope'"),
    (_broken(lambda d: d["models"]["lab-chip"]["costs"].update(neuron_update_active={"figures": ["lab.synop"]})),
     "go together"),
    (_broken(lambda d: d["models"]["lab-chip"]["costs"].update(watts={"figures": ["lab.synop"]})), "unknown cost term"),
    (_broken(lambda d: d.update(models={})), "models: missing or empty"),
    (_broken(lambda d: d.update(schema="other/2")), "schema"),
])
def test_malformed_model_file_gives_one_line_naming_the_file(tmp_path, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(EnergyModelError) as info:
        load_models(path)
    msg = str(info.value)
    assert msg.startswith(str(path) + ": ") and "\n" not in msg and fragment in msg, msg


def test_missing_model_file_and_unknown_name():
    with pytest.raises(EnergyModelError, match="no such energy model file"):
        resolve_models(["/nonexistent/model.json"])
    with pytest.raises(EnergyModelError, match="neither a built-in energy model"):
        resolve_models(["no-such-model"])


# -------------------------------------------------------------- the shared counter against brute force


def _conv_graph(stride, padding, dilation, groups, rng):
    """Input (4, 7, 7) -> Conv2d -> LIF -> Flatten -> Affine (some zero weights) -> LIF -> Output."""
    c_in, c_out, k, hw = 4, 8, 3, 7
    w = rng.normal(size=(c_out, c_in // groups, k, k)).astype(np.float32)
    w[rng.random(w.shape) < 0.4] = 0.0
    h_out = (hw + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    n_hidden = c_out * h_out * h_out
    a = rng.normal(size=(5, n_hidden)).astype(np.float32)
    a[rng.random(a.shape) < 0.5] = 0.0
    a[:, 0] = 0.0  # an input with no outgoing synapse at all

    def lif(shape):
        return nir.LIF(tau=np.full(shape, 0.01), r=np.ones(shape), v_leak=np.zeros(shape), v_threshold=np.ones(shape))

    nodes = {
        "input": nir.Input(input_type={"input": np.array([c_in, hw, hw])}),
        "conv": nir.Conv2d(input_shape=(hw, hw), weight=w, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, bias=np.zeros(c_out, dtype=np.float32)),
        "lif1": lif((c_out, h_out, h_out)),
        "flat": nir.Flatten(input_type={"input": np.array([c_out, h_out, h_out])}, start_dim=0),
        "fc": nir.Affine(weight=a, bias=np.zeros(5, dtype=np.float32)),
        "lif2": lif((5,)),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    edges = [("input", "conv"), ("conv", "lif1"), ("lif1", "flat"), ("flat", "fc"), ("fc", "lif2"), ("lif2", "output")]
    # nir 1.0.8 infers a grouped Conv2d's input channels as weight.shape[1] (without x groups): skip its check
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=groups == 1)
    return graph, (c_in, hw, hw), (c_out, h_out, h_out)


def _brute_conv(x, w, stride, padding, dilation, groups, out_hw):
    """For every non-zero input value (each spike), count the non-zero weights that reach an output position."""
    c_out, cin_g, k, _ = w.shape
    cout_g = c_out // groups
    total = 0
    for b, t, c, y, xx in np.argwhere(x != 0):
        g = c // cin_g
        n = 0
        for o in range(g * cout_g, (g + 1) * cout_g):
            for ky in range(k):
                for kx in range(k):
                    if w[o, c - g * cin_g, ky, kx] == 0:
                        continue
                    oy, ox = y + padding - ky * dilation, xx + padding - kx * dilation
                    if oy % stride or ox % stride:
                        continue
                    oy, ox = oy // stride, ox // stride
                    n += 0 <= oy < out_hw and 0 <= ox < out_hw
        total += n * (int(x[b, t, c, y, xx]) if float(x[b, t, c, y, xx]).is_integer() and x[b, t, c, y, xx] > 0 else 1)
    return total


def _brute_affine(x, w):
    return int(sum(np.count_nonzero(w[:, i]) * x[b, t, i] for b, t, i in np.argwhere(x != 0)))


@pytest.mark.parametrize("stride, padding, dilation, groups", [(2, 1, 1, 1), (1, 0, 2, 1), (3, 2, 1, 2), (1, 1, 1, 4)])
@pytest.mark.parametrize("analog_input", [False, True])
def test_layer_stats_synops_match_brute_force(stride, padding, dilation, groups, analog_input):
    rng = np.random.default_rng(stride * 100 + padding * 10 + dilation + groups)
    graph, in_shape, hid_shape = _conv_graph(stride, padding, dilation, groups, rng)
    B, T = 2, 3
    x = (rng.random((B, T, *in_shape)) < 0.3).astype(np.float32)
    if analog_input:
        x = x * rng.random(x.shape).astype(np.float32)  # real values where there were spikes
    s1 = (rng.random((B, T, *hid_shape)) < 0.25).astype(np.float32)
    s2 = (rng.random((B, T, 5)) < 0.5).astype(np.float32)
    flat = s1.reshape(B, T, -1)
    activity = {"input": Activity.from_output(x), "lif1": Activity.from_output(s1),
                "flat": Activity.from_output(flat), "lif2": Activity.from_output(s2)}
    stats = {s.name: s for s in layer_stats(graph, activity, B, T, {"conv": in_shape, "fc": (flat.shape[-1],)})}

    conv_ops = _brute_conv(x, graph.nodes["conv"].weight, stride, padding, dilation, groups, hid_shape[1])
    assert conv_ops > 0
    if analog_input:
        assert (stats["conv"].macs, stats["conv"].synops) == (conv_ops, 0)
    else:
        assert (stats["conv"].synops, stats["conv"].macs) == (conv_ops, 0)
    assert stats["fc"].synops == _brute_affine(flat, graph.nodes["fc"].weight) and stats["fc"].macs == 0
    assert stats["lif1"].neurons == math.prod(hid_shape)
    assert stats["lif1"].neuron_updates == math.prod(hid_shape) * B * T
    assert stats["lif1"].spikes == int(s1.sum()) and stats["lif2"].spikes == int(s2.sum())
    assert list(stats) == ["conv", "lif1", "fc", "lif2"]


def test_sumpool_counts_arrive_as_several_spikes():
    """A SumPool2d output of k (k spikes pooled together) costs k synaptic ops per outgoing synapse."""
    rng = np.random.default_rng(5)
    w = rng.normal(size=(3, 8)).astype(np.float32)
    w[rng.random(w.shape) < 0.5] = 0.0
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([8])}),
                                "fc": nir.Affine(weight=w, bias=np.zeros(3, dtype=np.float32)),
                                "output": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("input", "fc"), ("fc", "output")])
    counts = rng.integers(0, 5, size=(2, 4, 8)).astype(np.float32)
    (st,) = layer_stats(graph, {"input": Activity.from_output(counts)}, 2, 4, {"fc": (8,)})
    assert st.synops == _brute_affine(counts, w) and st.macs == 0


def test_conv_fanout_is_the_same_under_no_grad():
    """Counting a convolution's fan-out must not depend on the caller's autograd mode: attacks query targets
    under ``torch.no_grad()`` (it once raised there)."""
    from snnkit.energy.counting import fanout

    graph, in_shape, _ = _conv_graph(2, 1, 1, 1, np.random.default_rng(11))
    with torch.no_grad():
        quiet = fanout(graph.nodes["conv"], in_shape)
    loud = fanout(graph.nodes["conv"], in_shape)
    x = np.zeros((1, 1, *in_shape), np.float32)
    x[0, 0, 1, 3, 4] = 1.0  # one spike: its fan-out is the brute-force count of the synapses it reaches
    w = graph.nodes["conv"].weight
    assert quiet[1, 3, 4] == _brute_conv(x, w, 2, 1, 1, 1, 4) > 0
    assert np.array_equal(quiet, loud)


# --------------------------------------------------------------------- NeuroBench as an independent oracle


def test_synops_agree_with_neurobench():
    """Same weights, same activity: our layer_stats against NeuroBench 2.x SynapticOperations.

    NeuroBench counts, per connection layer call, the non-zero (input, weight) pairs; ACs when the input is in
    {-1, 0, 1}, MACs otherwise, divided by the batch size.
    """
    workload = pytest.importorskip("neurobench.metrics.workload",
                                   reason="NeuroBench is not installed (pip install --no-deps neurobench)")
    from neurobench.models import TorchModel

    from snnkit.nn import LIF, Conv2d, Flatten

    rng = np.random.default_rng(7)
    graph, in_shape, hid_shape = _conv_graph(2, 1, 1, 1, rng)
    conv_node, fc_node = graph.nodes["conv"], graph.nodes["fc"]
    torch.manual_seed(0)
    conv = Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
    fc = torch.nn.Linear(fc_node.weight.shape[1], 5, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(conv_node.weight))
        fc.weight.copy_(torch.from_numpy(fc_node.weight))
    lif1, lif2 = LIF(beta=0.9, threshold=0.5), LIF(beta=0.9, threshold=0.5)
    net = torch.nn.Sequential(conv, lif1, Flatten(), fc, lif2)

    B, T = 3, 4
    x = torch.rand(B, T, *in_shape) * (torch.rand(B, T, *in_shape) < 0.5)  # analog input: MACs
    lif1.record = lif2.record = True
    model = TorchModel(net)
    model.register_hooks()
    metric = workload.SynapticOperations()
    with torch.no_grad():
        preds = model(x)
        nb = metric(model, preds, (x, torch.zeros(B)))
    s1, s2 = lif1.recorded["spikes"].numpy(), lif2.recorded["spikes"].numpy()
    assert s1.sum() > 0, "the case must reach the second layer"

    activity = {"input": Activity.from_output(x.numpy()), "lif1": Activity.from_output(s1),
                "flat": Activity.from_output(s1.reshape(B, T, -1)), "lif2": Activity.from_output(s2)}
    stats = {s.name: s for s in layer_stats(graph, activity, B, T, {"conv": in_shape, "fc": (math.prod(hid_shape),)})}
    assert nb["Effective_MACs"] > 0 and nb["Effective_ACs"] > 0
    assert stats["conv"].macs == round(nb["Effective_MACs"] * B)
    assert stats["fc"].synops == round(nb["Effective_ACs"] * B)


def test_torch_target_counts_agree_with_neurobench_on_a_convnet():
    """End to end: an snnkit ConvNet (analog first layer, BatchNorm folded at export, AvgPool2d, Linear) run by
    the torch target; its synops and MACs per sample against NeuroBench on the original torch layers, and the
    dense op count of report.metrics against NeuroBench's Dense."""
    workload = pytest.importorskip("neurobench.metrics.workload",
                                   reason="NeuroBench is not installed (pip install --no-deps neurobench)")
    from neurobench.models import TorchModel

    from snnkit.deploy.base import get_target
    from snnkit.export import to_nir
    from snnkit.models import build
    from snnkit.report.metrics import static_metrics

    torch.manual_seed(3)
    model = build({"arch": "convnet", "input_shape": [1, 8, 8], "num_classes": 10, "channels": [4], "fc": [16],
                   "timesteps": 4}).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(3.0)
                m.weight[m.weight.abs() < 0.05] = 0.0  # pruned synapses
    x = torch.rand(6, 1, 8, 8)
    xe = model.encoder(x)
    graph = to_nir(model)
    result = get_target("torch", device="cpu").run(graph, xe.numpy())

    nb_model = TorchModel(model.layers)
    nb_model.register_hooks()
    with torch.no_grad():
        nb = workload.SynapticOperations()(nb_model, nb_model(xe), (xe, torch.zeros(6)))
    macs = sum(layer.macs for layer in result.layers)
    assert result.total_synops > 0 and macs > 0
    assert result.total_synops / 6 == pytest.approx(nb["Effective_ACs"])
    assert macs / 6 == pytest.approx(nb["Effective_MACs"])
    assert static_metrics(graph).dense_ops_per_step * 4 == pytest.approx(nb["Dense"])


def test_huge_integer_values_are_analog_not_counts():
    """An input of 1e30 is integer-valued but no count of events: it is analog, with no overflow on the way."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        act = Activity.from_output(np.full((2, 3, 4), 1e30, dtype=np.float32))
    assert act.analog and act.events.tolist() == [6, 6, 6, 6]
    assert not Activity.from_output(np.full((2, 3, 4), 2.0)).analog

"""Re-attack orchestration: the reference's twin and BPTR sources, per-graph build caches, the differentiable
views of targets, attack sets per side, and ``reattack`` on loihi-emu and torch (the re-check's comparison logic
with stand-in targets; the real Lava run is in tests/test_cli_attack.py)."""
from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snnkit import data
from snnkit.attack import TargetScores
from snnkit.attack.reattack import reattack, run_side
from snnkit.attack.recheck import recheck
from snnkit.attack.registry import ATTACKS, Settings, build_attacks, parse_attacks
from snnkit.attack.sides import Side, reference_sources
from snnkit.attack.target import TargetModule
from snnkit.deploy.base import get_target
from snnkit.deploy.cache import BuildCache
from snnkit.export import to_nir
from snnkit.export.onnx_twin import ann_twin
from snnkit.models import build
from snnkit.models.spiking import TwinUndefined

FRAMEWORKS = all(importlib.util.find_spec(m) for m in ("norse", "snntorch", "nirtorch"))
EPS = 0.1


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.lru_cache(maxsize=None)
def digits_mlp():
    """A digits MLP (T = 6) trained for a second: accurate enough that attacks have something to break."""
    x, y = data.load("digits", "train")
    torch.manual_seed(0)
    model = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [48], "timesteps": 6})
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(150):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@functools.lru_cache(maxsize=None)
def graph():
    return to_nir(digits_mlp())


def samples(n=24):
    return data.load("digits", "test", limit=n)


# --- the reference's sources: twin and BPTR ----------------------------------------------------------------

def test_twin_is_the_rate_network_of_the_model_and_the_onnx_twin():
    model = digits_mlp()
    x, _ = samples()
    twin = model.twin()
    with torch.no_grad():
        got = twin(x)
        h = x.flatten(1)
        for name, m in model.layers.named_children():  # the definition, written out: rate = clamp(drive/thr)
            if name.endswith(("_lif", "_if")):
                h = torch.clamp(m.drive(h) / m.threshold, 0, 1)
            elif not name.endswith("flatten"):
                h = m(h)
        assert torch.allclose(got, h * model.logit_scale, atol=1e-6)
        assert torch.allclose(got, ann_twin(graph())(x), atol=1e-5)  # the ONNX twin is the same code
    # the twin shares the model's modules: it follows its weights
    fc = model.layers[1]
    saved = fc.bias.detach().clone()
    try:
        with torch.no_grad():
            fc.bias.add_(5.0)
            assert not torch.allclose(twin(x), got)
    finally:
        with torch.no_grad():
            fc.bias.copy_(saved)


def test_twin_undefined_for_the_latency_code_and_bptr_forward_is_the_model():
    lat = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [8], "encoder": {"name": "latency"}})
    with pytest.raises(TwinUndefined, match="latency"):
        lat.twin()
    model = digits_mlp()
    x, y = samples()
    xr = x.clone().requires_grad_(True)
    out = model.bptr()(xr)
    with torch.no_grad():
        assert torch.equal(out, model(x))  # the forward pass is the spiking model, bit for bit
    (grad,) = torch.autograd.grad(F.cross_entropy(out, y), xr)
    assert (grad != 0).float().mean() > 0.5  # rate gradients reach the input
    sources, members, notes = reference_sources(model, ("triangle:gamma=1",))
    assert list(sources) == ["reference", "twin", "bptr"] and not notes
    assert list(members) == ["reference", "twin", "bptr", "surrogate:triangle:gamma=1"]
    with torch.no_grad():
        assert torch.equal(members["surrogate:triangle:gamma=1"](x), model(x))
    _, _, lat_notes = reference_sources(lat, ())
    assert any("twin" in n and "latency" in n for n in lat_notes)


# --- build caches -------------------------------------------------------------------------------------------

def test_build_cache_is_keyed_by_graph_identity_and_evicts():
    cache = BuildCache(size=2)
    a, b, c = object(), object(), object()
    calls = []

    def build(tag):
        return lambda: calls.append(tag) or tag

    assert cache.get(a, 1, build("a1")) == "a1" and cache.get(a, 1, build("again")) == "a1"
    assert cache.get(a, 2, build("a2")) == "a2"  # another key: another build
    cache.get(b, 1, build("b1"))  # evicts (a, 1), the least recently used
    assert cache.get(a, 1, build("a1'")) == "a1'"
    cache.get(c, None, build("c"))
    assert calls == ["a1", "a2", "b1", "a1'", "c"] and cache.hits == 1 and cache.misses == 5
    with pytest.raises(ValueError):
        BuildCache(0)


def test_targets_build_once_per_graph_and_give_the_same_results():
    x, _ = samples(8)
    from snnkit.deploy.inputs import encode

    enc = encode(x.numpy(), graph().metadata)
    torch_t = get_target("torch", device="cpu")
    first, second = torch_t.run(graph(), enc), torch_t.run(graph(), enc)
    assert torch_t._networks.misses == 1 and torch_t._networks.hits == 1
    assert np.array_equal(first.outputs, second.outputs) and first.layers == second.layers
    assert second.info == first.info
    torch_t.run(to_nir(digits_mlp()), enc)  # an equal graph, another object: built again
    assert torch_t._networks.misses == 2

    emu = get_target("loihi-emu")
    r1, r2 = emu.run(graph(), enc), emu.run(graph(), enc)
    assert emu._graphs.misses == 1 and emu._emulators.misses == 1 and emu._emulators.hits == 1
    assert np.array_equal(r1.outputs, r2.outputs) and r1.layers == r2.layers
    louder = 3 * enc  # another input range (4, not 1): quantised again, with another input scale
    assert emu.quantised(graph(), louder).input.scale != emu.quantised(graph(), enc).input.scale
    assert emu._graphs.misses == 2
    assert emu.quantised(graph(), enc) is emu.quantised(graph(), enc)


# --- differentiable views of targets -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["torch", pytest.param("norse", marks=pytest.mark.skipif(
    not FRAMEWORKS, reason="norse/snntorch/nirtorch not installed")), pytest.param("snntorch", marks=pytest.mark.skipif(
        not FRAMEWORKS, reason="norse/snntorch/nirtorch not installed"))])
def test_target_module_is_the_target_with_gradients(name):
    x, y = samples(16)
    options = {"device": "cpu"} if name == "torch" else {}
    module = TargetModule(name, graph(), **options)
    xr = x.clone().requires_grad_(True)
    out = module(xr)
    assert torch.equal(out.detach(), TargetScores(name, graph(), **options)(x))
    (grad,) = torch.autograd.grad(F.cross_entropy(out, y), xr)
    assert (grad != 0).float().mean() > 0.5
    if name == "torch":
        with torch.no_grad():
            assert torch.equal(out, digits_mlp()(x))  # the torch target is the reference semantics


def test_loihi_view_is_bit_exact_with_loihi_emu_and_differentiable():
    x, y = samples(16)
    for emu in (get_target("loihi-emu"), get_target("lava")):  # lava's view is the same model (no Lava run)
        module = TargetModule(emu, graph(), x)
        assert not module.exact and module.via == "loihi-emu differentiable mode"
        xr = x.clone().requires_grad_(True)
        out = module(xr)
        assert torch.equal(out.detach(), TargetScores(get_target("loihi-emu"), graph())(x))
        (grad,) = torch.autograd.grad(F.cross_entropy(out, y), xr)
        assert (grad != 0).float().mean() > 0.5
    with pytest.raises(Exception, match="needs probe inputs"):
        TargetModule(get_target("loihi-emu"), graph())


# --- attack sets ---------------------------------------------------------------------------------------------

def test_attack_names_and_sides():
    assert parse_attacks("transfer, Square,transfer") == ["transfer", "square"]
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        parse_attacks("pgd,cw")
    model = digits_mlp()
    sources, members, _ = reference_sources(model, ("atan:alpha=2",))
    s = Settings(eps=EPS, steps=3, queries=10)
    ref = Side("reference", model, True, adaptive=model).context(sources, members, s, 10)
    emu = Side("loihi-emu", TargetScores("loihi-emu", graph()), False, adaptive=model).context(sources, members, s, 10)
    with pytest.raises(ValueError, match="needs gradients of the target; loihi-emu has none"):
        build_attacks(["pgd"], emu)
    with pytest.raises(ValueError, match="Linf"):
        build_attacks(["square"], Side("reference", model, True).context(sources, members,
                                                                         Settings(eps=EPS, norm="L2"), 10))
    names = ["transfer", "square", "adaptive", "noise", "ensemble"]
    assert list(build_attacks(names, ref)) == list(build_attacks(names, emu))
    std_ref = build_attacks(["standard"], ref)
    std_emu = build_attacks(["standard"], emu)
    assert {"FGSM", "PGD-3", "APGD-CE", "APGD-DLR", "Square-10", "Ensemble[PGD-3]"} <= set(std_ref)
    assert set(std_emu) == {"Noise-0.1", "Square-10", "Ensemble[PGD-3]", "Adaptive[PGD-3]", "Adaptive[APGD-CE]"}
    assert std_emu["Ensemble[PGD-3]"].kind == "transfer" and std_ref["Ensemble[PGD-3]"].kind == "white-box"
    # the target's ensemble has every reference-derived member; the reference's has itself once
    assert len(std_emu["Ensemble[PGD-3]"].members()) == len(members) == len(std_ref["Ensemble[PGD-3]"].members())
    assert set(ATTACKS) >= {"fgsm", "pgd", "pgd-l2", "bim", "apgd-ce", "apgd-dlr", "square", "transfer", "noise",
                            "ensemble", "adaptive", "standard"}


# --- reattack ------------------------------------------------------------------------------------------------

def test_reattack_on_loihi_emu_beside_the_reference():
    x, y = samples(30)
    s = Settings(eps=EPS, steps=8, queries=60, progress=False)
    out = reattack(digits_mlp(), graph(), get_target("loihi-emu"), ["transfer", "square", "adaptive"], x, y, s)
    res, arrays = out.summary, out.arrays
    assert {"target", "attack", "eps", "n_samples", "clean_accuracy", "robust_accuracy"} <= set(res)
    assert res["target"] == "loihi-emu" and res["n_samples"] == 30 and res["eps"] == EPS
    ref = res["reference"]
    names = ["Transfer[PGD-8]", "Square-60", "Adaptive[PGD-8]"]
    assert [a["name"] for a in res["attacks"]] == [a["name"] for a in ref["attacks"]] == names
    assert res["clean_accuracy"] > 0.8 and ref["clean_accuracy"] > 0.8
    for side in (res, ref):
        assert side["robust_accuracy"] == min(a["robust_accuracy"] for a in side["attacks"])
        assert side["robust_accuracy"] < side["clean_accuracy"] - 0.2  # eps 0.1 breaks a plain digits MLP
        assert all(a["max_distance"] <= EPS + 1e-6 for a in side["attacks"])
    assert [e["target"] for e in res["evaluations"]] == ["reference", "loihi-emu"]
    sq = res["queries"]["Square-60"]
    assert 2 <= sq["median_per_sample"] <= sq["max_per_sample"] <= 60
    assert res["queries"]["answered"]["by"] == "loihi-emu" and res["queries"]["answered"]["queries"] > 0
    assert res["adaptive_via"] == "loihi-emu differentiable mode"

    # the saved adversarial examples reproduce the verdicts when run on the target again
    scores = TargetScores("loihi-emu", graph())
    clean = arrays["target_clean_correct"]
    for k, name in enumerate(arrays["target_attacks"]):
        adv = torch.from_numpy(arrays["target_adversarial"][k])
        assert float((adv - x).abs().max()) <= EPS + 1e-6
        ok = (scores(adv).argmax(1) == y).numpy() & clean
        assert np.array_equal(ok, arrays["target_correct"][k]), name
    # transfer success rate: fooled among the clean-correct, from the per-sample verdicts
    tr = arrays["target_correct"][0]
    assert res["transfer_success_rate"] == pytest.approx((clean & ~tr).sum() / clean.sum())


def test_reattack_torch_target_equals_the_reference():
    x, y = samples(20)
    out = reattack(digits_mlp(), graph(), get_target("torch", device="cpu"), ["pgd", "noise"], x, y,
                   Settings(eps=EPS, steps=5, progress=False, device="cpu"))
    res, arrays = out.summary, out.arrays
    ref = res["reference"]
    assert res["clean_accuracy"] == ref["clean_accuracy"]
    assert [a["robust_accuracy"] for a in res["attacks"]] == [a["robust_accuracy"] for a in ref["attacks"]]
    assert np.array_equal(arrays["target_adversarial"], arrays["reference_adversarial"])
    assert res["gradient_sparsity"] is not None and res["transfer_success_rate"] is None


def test_recheck_compares_outputs_and_verdicts():
    """The re-check logic with stand-ins for Lava: a second emulator agrees bit for bit; one that flips an
    output spike is caught."""
    x, y = samples(12)
    s = Settings(eps=EPS, steps=4, queries=20, progress=False)
    emu = get_target("loihi-emu")
    side = Side("lava", TargetScores(emu, graph()), False)
    sources, members, _ = reference_sources(digits_mlp(), ())
    emulated = run_side(side, build_attacks(["transfer", "square"], side.context(sources, members, s, 10)), x, y, s)
    report, check = recheck(graph(), x, y, emulated, get_target("loihi-emu"), emu)
    assert check["outputs_bit_exact"] and check["verdicts_agree"] and check["samples"] == 3 * 12
    assert [r.correct.tolist() for r in report.results.values()] == \
        [r.correct.tolist() for r in emulated.report.results.values()]

    class Flipping:
        name = "lava"

        def run(self, g, enc):
            result = emu.run(g, enc)
            result.outputs = result.outputs.copy()
            result.outputs[:, result.delay:, :] = 0.0  # a silent output layer: every sample "class 0"
            return result

    _, bad = recheck(graph(), x, y, emulated, Flipping(), emu)
    assert not bad["outputs_bit_exact"] and bad["differing_output_values"] > 0
    assert not bad["verdicts_agree"] and bad["differing_verdicts"] > 0

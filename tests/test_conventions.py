"""What NIR leaves open (dt, reset, IF's convention) is decided once for every target, and what no target can run
is refused alike by all of them (snnkit.graph.conventions); the interop defects of the graph rewrites."""
from __future__ import annotations

import json

import nir
import numpy as np
import pytest

from snnkit.cli import deploy as deploy_cli
from snnkit.deploy.base import DeployError, get_target
from snnkit.export.rewrite import pool_params_as_pairs, rescale_time
from snnkit.graph import read_nir
from snnkit.graph.conventions import resolve
from conftest import NO_LAVA_REASON, ZOO, lava_available

FRAMEWORKS = ["norse", "snntorch"]
ALL = ["torch", *FRAMEWORKS, "loihi-emu"] + (["lava"] if lava_available() else [])


def _lif_graph(tau: float, dt: float | None = 1e-3, weight: float = 3.0) -> nir.NIRGraph:
    n = 4
    meta = {} if dt is None else {"dt": dt}
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([n])}),
        "fc": nir.Affine(weight=np.eye(n, dtype=np.float32) * weight, bias=np.zeros(n, dtype=np.float32)),
        "lif": nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                       v_reset=np.zeros(n)),
        "output": nir.Output(output_type={"output": np.array([n])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], metadata=meta)


def _spikes(b=3, t=30, n=4, p=0.5, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((b, t, n)) < p).astype(np.float32)


@pytest.mark.parametrize("target", ALL)
def test_tau_below_dt_is_refused_alike_by_every_target(target):
    g = _lif_graph(tau=5e-4, dt=1e-3)
    with pytest.raises(DeployError) as e:
        get_target(target).run(g, _spikes())
    assert str(e.value) == ("node 'lif': beta = 1 - dt/tau is outside [0, 1] for dt = 0.001 s and tau in "
                            "[0.0005, 0.0005] s; pass the graph's dt (--dt)")


@pytest.mark.parametrize("target", ALL)
def test_non_finite_parameters_are_refused_alike_by_every_target(target):
    g = _lif_graph(tau=2e-2)
    g.nodes["fc"].weight[1, 2] = np.nan
    with pytest.raises(DeployError, match=r"^node 'fc' \(Affine\): its weight holds NaN or infinite values$"):
        get_target(target).run(g, _spikes())


def test_dt_reaches_the_loihi_targets_from_the_command_line(tmp_path, capsys):
    """A Norse-exported LIF graph has no dt in its metadata; with --dt 1e-3 the Loihi targets step it as the
    reference does (at the 1e-4 s default its membrane barely moves)."""
    g = nir.read(ZOO / "lif_norse.nir")
    assert "dt" not in (g.metadata or {})
    np.save(tmp_path / "x.npy", _spikes(b=2, t=200, n=1, p=0.3))
    outs = {}
    for target in ("torch", "loihi-emu"):
        for dt in ("1e-4", "1e-3"):
            argv = [str(ZOO / "lif_norse.nir"), "--target", target, "--input", str(tmp_path / "x.npy"), "--dt", dt,
                    "--json"]
            assert deploy_cli.main(argv) == 0
            outs[target, dt] = json.loads(capsys.readouterr().out)
    assert outs["torch", "1e-3"]["total_spikes"] != outs["torch", "1e-4"]["total_spikes"]
    # the Loihi emulator follows the reference's dt (its own rounding aside: a few percent of spikes)
    for dt in ("1e-4", "1e-3"):
        ref, emu = outs["torch", dt]["layers"][-1]["spikes"], outs["loihi-emu", dt]["layers"][-1]["spikes"]
        assert abs(emu - ref) <= max(3, 0.1 * ref), (dt, ref, emu)
    assert "the graph has no dt" not in " ".join(outs["torch", "1e-3"].get("info", {}).get("warnings", []))


def test_a_graph_without_dt_says_which_dt_it_ran_with():
    res = get_target("torch", device="cpu").run(_lif_graph(tau=2e-2, dt=None), _spikes())
    assert res.info["warnings"] == ["the graph has no dt: 0.0001 s assumed (--dt sets it)"]


def _if_graph(r: float, dt: float | None) -> nir.NIRGraph:
    n = 3
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([n])}),
        "fc": nir.Linear(weight=np.eye(n, dtype=np.float32) * 0.4),
        "if": nir.IF(r=np.full(n, r), v_threshold=np.ones(n), v_reset=np.zeros(n)),
        "output": nir.Output(output_type={"output": np.array([n])})},
        edges=[("input", "fc"), ("fc", "if"), ("if", "output")], metadata={} if dt is None else {"dt": dt})


@pytest.mark.parametrize("target", ALL)
def test_if_with_r_one_over_dt_is_read_as_nir_ode_on_every_target(target):
    """SpikingJelly 2.0 writes IF with r = 1/dt (v += dt r I); snnkit, Norse and snnTorch step v += r I. The same
    network written both ways runs identically, with a note naming the choice; the override reads it literally."""
    x = _spikes(t=20, n=3)
    ode = get_target(target).run(_if_graph(r=1e3, dt=1e-3), x)
    per_step = get_target(target).run(_if_graph(r=1.0, dt=1e-3), x)
    assert per_step.total_spikes > 0 and np.array_equal(ode.outputs, per_step.outputs)
    assert any("r = 1/dt" in w and "--if-convention per-step" in w for w in ode.info["warnings"])
    literal = get_target(target, if_convention="per-step").run(_if_graph(r=1e3, dt=1e-3), x)
    assert literal.total_spikes > ode.total_spikes  # a gain of 1000 per step: a spike at every input


def test_resolve_leaves_snnkit_graphs_and_per_step_ifs_alone():
    r = resolve(_if_graph(r=1.0, dt=1e-3))
    assert r.if_convention == "per-step" and r.notes == []
    g = _if_graph(r=1e3, dt=1e-3)
    g.metadata["snnkit_version"] = "0.1.0"  # snnkit's own IFs are per-step whatever their r
    assert resolve(g).if_convention == "per-step"
    with pytest.raises(DeployError, match="unknown IF convention 'euler'"):
        resolve(g, if_convention="euler")


def test_reset_override_reaches_every_torch_based_target():
    """A snnTorch network with its default subtractive reset exports as reset-to-zero; --reset subtract gives the
    library's arithmetic on the reference."""
    g, x = _lif_graph(tau=2e-2, weight=30.0), _spikes(t=40)
    zero = get_target("torch", device="cpu").run(g, x, record=True)
    sub = get_target("torch", device="cpu", reset="subtract").run(g, x, record=True)
    assert sub.total_spikes > zero.total_spikes  # the charge above threshold is kept
    emu = get_target("loihi-emu", reset="subtract").run(g, x)  # exact on Loihi too (LIFSubtractReset)
    assert emu.info["quantisation"]["lossy"] == [] and not emu.info["warnings"]
    agree = (emu.aligned_outputs(x.shape[1]) == sub.outputs).mean()
    assert agree > 0.95, agree


def test_snntorch_export_keeps_the_graph_meaning(tmp_path):
    """The time constants rescaled for snnTorch's fixed 1e-4 s come with that dt in the metadata, so snnkit reads
    the rewritten file as the original."""
    g = _lif_graph(tau=2e-2, dt=1e-3)
    rescaled, changes = rescale_time(g, 1e-3, 1e-4)
    assert changes and rescaled.metadata["dt"] == 1e-4
    x = _spikes(t=50)
    a = get_target("torch", device="cpu").run(g, x)
    b = get_target("torch", device="cpu").run(rescaled, x)
    assert a.total_spikes > 0 and np.array_equal(a.outputs, b.outputs)


def _pool_graph(kernel) -> nir.NIRGraph:
    c, h = 2, 4
    rng = np.random.default_rng(1)
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([c, h, h])}),
        "conv": nir.Conv2d(input_shape=(h, h), weight=rng.normal(size=(c, c, 1, 1)).astype(np.float32) + 1.0,
                           stride=1, padding=0, dilation=1, groups=1, bias=np.zeros(c, dtype=np.float32)),
        "lif": nir.LIF(tau=np.full((c, h, h), 2e-3), r=np.ones((c, h, h)), v_leak=np.zeros((c, h, h)),
                       v_threshold=np.full((c, h, h), 0.5), v_reset=np.zeros((c, h, h))),
        "pool": nir.AvgPool2d(kernel_size=kernel, stride=kernel, padding=0 if np.ndim(kernel) == 0 else np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([c, h // 2, h // 2])}, start_dim=0, end_dim=-1),
        "fc": nir.Linear(weight=rng.normal(size=(3, c * (h // 2) ** 2)).astype(np.float32) + 0.5),
        "out_lif": nir.LIF(tau=np.full(3, 2e-3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.full(3, 0.5),
                           v_reset=np.zeros(3)),
        "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", "flat"), ("flat", "fc"),
               ("fc", "out_lif"), ("out_lif", "output")], metadata={"dt": 1e-3})


def test_scalar_pooling_parameters_are_read_by_snntorch():
    """snnTorch's and SpikingJelly's exporters write AvgPool2d kernel_size/stride as scalars, which snnTorch's own
    importer cannot iterate: the snntorch target writes them as pairs first."""
    pytest.importorskip("snntorch", reason="the snntorch target needs snnTorch")
    scalar = _pool_graph(2)  # as those exporters write it
    fixed, changes = pool_params_as_pairs(scalar)
    assert changes == ["pool: AvgPool2d kernel_size/stride/padding as pairs"]
    assert fixed.nodes["pool"].kernel_size.tolist() == [2, 2]
    x = (np.random.default_rng(0).random((2, 12, 2, 4, 4)) < 0.5).astype(np.float32)
    ref = get_target("torch", device="cpu").run(scalar, x)
    res = get_target("snntorch").run(scalar, x)
    assert ref.total_spikes > 0 and np.array_equal(ref.outputs, res.outputs)


@pytest.mark.parametrize("target", ["loihi-emu", pytest.param("lava", marks=[
    pytest.mark.lava, pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)])])
def test_cubalif_bias_on_loihi_is_said_loudly_with_its_measured_size(target):
    g = read_nir(ZOO / "braille_noDelay_bias_zero.nir")
    x = (np.random.default_rng(0).random((4, 40, 12)) < 0.3).astype(np.float32)
    res = get_target(target).run(g, x)
    warnings = res.info["warnings"]
    assert any(w.startswith("not exact on Loihi: ") and "CubaLIF with a connection bias" in w for w in warnings)
    measured = [w for w in warnings if w.startswith("measured on the first 4 inputs:")]
    assert len(measured) == 1 and "of output spike values" in measured[0]
    effect = get_target(target).quantised(g, x).report["lossy_effect"]
    assert effect["samples"] == 4 and 0 < effect["differing_output_spikes"] <= 1

"""The options every target takes for what NIR leaves open (``dt``, ``reset``, ``if_convention``), the one
validation every target applies, and the same through ``snn-deploy`` (``--dt --reset --if-convention --json
--save-output``), on library exports.
"""
from __future__ import annotations

import contextlib
import io
import json
import re

import nir
import numpy as np
import pytest

from conftest import NO_LAVA_REASON, lava_available
from interop_nets import differing, run_target, spikes

from snnkit.graph import DeployError

ALL_TARGETS = ("torch", "norse", "snntorch", "lava", "loihi-emu")
FRAMEWORK_TARGETS = ("torch", "norse", "snntorch")


def _needs(target: str) -> None:
    if target in ("norse", "snntorch"):
        pytest.importorskip(target, reason=f"the {target} target needs {target}, which is not installed")
    if target == "lava" and not lava_available():
        pytest.skip(NO_LAVA_REASON)


def _lif_graph(tau: float, *, cuba: bool = False, bias: float = 0.0, metadata: dict | None = None) -> nir.NIRGraph:
    n = 4
    w = np.random.default_rng(0).uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    if cuba:
        neuron = nir.CubaLIF(tau_syn=np.full(n, tau), tau_mem=np.full(n, 2 * tau), r=np.full(n, 2 * tau / 1e-4),
                             w_in=np.full(n, tau / 1e-4), v_leak=np.zeros(n), v_threshold=np.ones(n),
                             v_reset=np.zeros(n))
    else:
        neuron = nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / 1e-4), v_leak=np.zeros(n), v_threshold=np.ones(n),
                         v_reset=np.zeros(n))
    g = nir.NIRGraph.from_list(nir.Affine(weight=w, bias=np.full(n, bias, np.float32)), neuron, type_check=False)
    g.metadata = dict(metadata or {})
    return g


@pytest.mark.parametrize("cuba", [False, True], ids=["lif", "cubalif"])
def test_tau_shorter_than_dt_is_refused_alike_by_every_target(cuba):
    """tau = 5e-5 s at the default dt = 1e-4 s gives a decay below 0: every target refuses it before running,
    with the same one-line DeployError (no Lava environment is needed to refuse it)."""
    g = _lif_graph(5e-5, cuba=cuba)
    x = spikes((2, 5, 3), 0.5)
    messages = {}
    for target in ALL_TARGETS:
        if target in ("norse", "snntorch"):
            pytest.importorskip(target, reason=f"the {target} target needs {target}")
        with pytest.raises(DeployError) as e:
            run_target(target, g, x)
        messages[target] = str(e.value)
    assert all("\n" not in m and "dt" in m for m in messages.values()), messages
    assert len(set(messages.values())) == 1, messages


@pytest.mark.parametrize("option,value", [("reset", "sideways"), ("if_convention", "sometimes")])
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_unknown_option_values_are_refused_in_one_line(target, option, value):
    _needs(target)
    g = _lif_graph(1e-3)
    with pytest.raises(DeployError) as e:
        run_target(target, g, spikes((1, 3, 3), 0.5), **{option: value})
    assert "\n" not in str(e.value) and value in str(e.value)


def _if_graph(rs: list[float], dt: float | None = None) -> nir.NIRGraph:
    """Affine -> IF (r = rs[0]) -> Affine -> IF (r = rs[1]) ..., unit weights on a diagonal."""
    n, nodes = 3, []
    for r in rs:
        nodes += [nir.Affine(weight=np.eye(n, dtype=np.float32) * 0.4, bias=np.zeros(n, np.float32)),
                  nir.IF(r=np.full(n, r), v_threshold=np.ones(n), v_reset=np.zeros(n))]
    g = nir.NIRGraph.from_list(*nodes, type_check=False)
    g.metadata = {} if dt is None else {"dt": dt}
    return g


@pytest.mark.parametrize("target", ["torch", "norse", "snntorch", "loihi-emu"])
def test_auto_if_convention_says_what_it_chose(target):
    """A third-party graph whose every IF has r = 1/dt is read as "ode" (SpikingJelly's convention), with a line
    in ``info["warnings"]``; the same graph with ``if_convention="ode"`` gives the same spikes, "per-step" others."""
    _needs(target)
    g = _if_graph([1e4, 1e4])
    x = spikes((2, 12, 3), 0.6)
    auto = run_target(target, g, x)
    said = " ".join(auto.info.get("warnings", []) + auto.info.get("notes", []))
    assert re.search(r"\bode\b", said, re.IGNORECASE) and "1/dt" in said, said
    assert np.array_equal(auto.outputs, run_target(target, g, x, if_convention="ode").outputs)
    assert not np.array_equal(auto.outputs, run_target(target, g, x, if_convention="per-step").outputs)


@pytest.mark.parametrize("target", ["torch", "norse", "snntorch", "loihi-emu"])
def test_auto_if_convention_on_a_mixed_graph_says_per_step(target):
    """IFs with r = 1/dt beside IFs with r = 1 fit neither convention throughout: "auto" reads them per step
    and must say so (the graph is ambiguous)."""
    _needs(target)
    g = _if_graph([1e4, 1.0])
    res = run_target(target, g, spikes((2, 12, 3), 0.6))
    said = " ".join(res.info.get("warnings", []) + res.info.get("notes", []))
    assert "per-step" in said, said


def test_cubalif_bias_on_loihi_is_a_loud_warning():
    """Loihi adds a connection bias to v, not to a CubaLIF's synaptic current: every result says so in
    ``info["warnings"]``, with the measured cost (percent of output spike values differing from the reference)."""
    g = _lif_graph(5e-4, cuba=True, bias=0.3)
    res = run_target("loihi-emu", g, spikes((4, 30, 3), 0.3))
    warnings = res.info.get("warnings", [])
    assert any("CubaLIF" in w and "bias" in w for w in warnings), warnings
    assert any(re.search(r"\d+(\.\d+)? ?%", w) for w in warnings), warnings


# --------------------------------------------------------------------------------------------- snn-deploy


def _deploy(args: list[str]) -> tuple[int, dict | None, str]:
    from snnkit.cli import deploy

    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        rc = deploy.main(args)
    return rc, (json.loads(out.getvalue()) if rc == 0 else None), err.getvalue()


def _saved(path) -> np.ndarray:
    with np.load(path) as z:
        return z["outputs"]


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_snn_deploy_if_convention_on_a_spikingjelly_export(tmp_path, target):
    pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed")
    _needs(target)
    from interop_nets import spikingjelly_case

    case = spikingjelly_case("dense-if")
    nir.write(tmp_path / "sj.nir", case.graph)
    np.save(tmp_path / "x.npy", case.x)
    out = tmp_path / "out.npz"
    rc, summary, err = _deploy([str(tmp_path / "sj.nir"), "--target", target, "--input", str(tmp_path / "x.npy"),
                                "--if-convention", "ode", "--json", "--save-output", str(out)])
    assert rc == 0, err
    assert differing(_saved(out), case.own) == 0
    rc, _, err = _deploy([str(tmp_path / "sj.nir"), "--target", target, "--input", str(tmp_path / "x.npy"),
                          "--if-convention", "per-step", "--json", "--save-output", str(out)])
    assert rc == 0 and differing(_saved(out), case.own) > 0.05


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_snn_deploy_reset_subtract_on_a_snntorch_export(tmp_path, target):
    pytest.importorskip("snntorch", reason="snnTorch is not installed")
    _needs(target)
    from interop_nets import SPIKE_TOL, snntorch_case

    case = snntorch_case("dense-lif-subtract")
    nir.write(tmp_path / "snt.nir", case.graph)
    np.save(tmp_path / "x.npy", case.x)
    out = tmp_path / "out.npz"
    rc, summary, err = _deploy([str(tmp_path / "snt.nir"), "--target", target, "--input", str(tmp_path / "x.npy"),
                                "--reset", "subtract", "--json", "--save-output", str(out)])
    assert rc == 0, err
    assert differing(_saved(out), case.own) <= SPIKE_TOL


@pytest.mark.parametrize("target", ["torch", "loihi-emu", "lava"])
def test_snn_deploy_dt_reaches_every_target(tmp_path, target):
    """A Norse export (time constants fixed, no metadata dt) needs ``--dt 1e-3``, the cells' step: the saved
    outputs equal those of the same graph carrying dt = 1e-3 in its metadata, and differ from the default 1e-4."""
    pytest.importorskip("norse", reason="Norse is not installed")
    _needs(target)
    from interop_nets import norse_case, replace

    case = norse_case("dense-lif")
    with_dt = case.graph
    without = replace(with_dt, {})
    without.metadata = {}
    nir.write(tmp_path / "with.nir", with_dt)
    nir.write(tmp_path / "without.nir", without)
    np.save(tmp_path / "x.npy", case.x)
    common = ["--target", target, "--input", str(tmp_path / "x.npy"), "--json", "--device", "cpu"]
    if target == "lava":
        common.remove("--device"), common.remove("cpu")
    rc, _, err = _deploy([str(tmp_path / "without.nir"), *common, "--dt", "1e-3", "--save-output",
                          str(tmp_path / "a.npz")])
    assert rc == 0, err
    if target == "lava":  # one Lava run: compare with the bit-exact emulator on the graph that carries its dt
        expected = run_target("loihi-emu", with_dt, case.x, device="cpu")
        assert np.array_equal(_saved(tmp_path / "a.npz"), expected.aligned_outputs(case.x.shape[1]))
        return
    rc, _, err = _deploy([str(tmp_path / "with.nir"), *common, "--save-output", str(tmp_path / "b.npz")])
    assert rc == 0, err
    assert np.array_equal(_saved(tmp_path / "a.npz"), _saved(tmp_path / "b.npz"))
    if target == "torch":
        assert differing(_saved(tmp_path / "a.npz"), case.own) == 0
    rc, _, err = _deploy([str(tmp_path / "without.nir"), *common, "--save-output", str(tmp_path / "c.npz")])
    assert rc == 0 and not np.array_equal(_saved(tmp_path / "a.npz"), _saved(tmp_path / "c.npz"))


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_snn_deploy_refuses_tau_below_dt_in_the_same_line(tmp_path, target):
    _needs(target)
    nir.write(tmp_path / "g.nir", _lif_graph(5e-5))
    np.save(tmp_path / "x.npy", spikes((2, 5, 3), 0.5))
    rc, _, err = _deploy([str(tmp_path / "g.nir"), "--target", target, "--input", str(tmp_path / "x.npy")])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1
    reference = _deploy([str(tmp_path / "g.nir"), "--target", "torch", "--input", str(tmp_path / "x.npy")])[2]
    assert lines[0] == reference.strip()


@pytest.mark.parametrize("library", ["snntorch", "spikingjelly"])
def test_scalar_pooling_parameters_from_a_file_on_the_snntorch_target(tmp_path, library):
    """snnTorch's and SpikingJelly's exporters write ``AvgPool2d(2)`` as ``kernel_size = stride = 2`` (scalars;
    ``np.int64`` once read from a file), which snnTorch's importer cannot iterate: the snntorch target writes them
    as pairs, whether the graph comes from memory (the interop cases) or from a ``.nir`` file (here)."""
    pytest.importorskip(library, reason=f"{library} is not installed")
    pytest.importorskip("snntorch", reason="the snntorch target needs snnTorch")
    import interop_nets
    from snnkit.graph import read_nir

    case = getattr(interop_nets, f"{library}_case")("conv-pool")
    pool = next(n for n in case.exported.nodes.values() if isinstance(n, nir.AvgPool2d))
    assert np.ndim(pool.kernel_size) == 0 and np.ndim(pool.stride) == 0
    nir.write(tmp_path / "g.nir", case.graph)
    res = run_target("snntorch", read_nir(tmp_path / "g.nir"), case.x, **case.options)
    assert differing(res.outputs, case.own) <= interop_nets.SPIKE_TOL

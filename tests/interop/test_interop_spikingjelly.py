"""SpikingJelly -> NIR -> snnkit: networks built and run in SpikingJelly 2.0.0, exported with its own
``spikingjelly.activation_based.nir_exchange.export_to_nir``, deployed on snnkit's torch, norse and snntorch
targets.

SpikingJelly steps an IF as ``v += x`` but writes ``nir.IF`` with ``r = 1/dt`` (meaning ``v += dt r I``: the "ode"
convention); snnkit, Norse and snnTorch step ``v += r I`` ("per-step"). ``if_convention="ode"`` (or "auto", which
detects every IF's ``r`` equal to ``1/dt``) reads it right. LIF and CubaLIF need no override.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed: the SpikingJelly interop tests need it")
pytest.importorskip("nirtorch", reason="SpikingJelly's NIR exchange needs nirtorch, which is not installed")
pytest.importorskip("norse", reason="the norse target needs Norse, which is not installed")
pytest.importorskip("snntorch", reason="the snntorch target needs snnTorch, which is not installed")

from interop_nets import (FRAMEWORK_TARGETS, SJ_DT, SPIKINGJELLY_KINDS, _sj_step, check_against_targets,  # noqa: E402
                          differing, quiet, run_target, spikingjelly_case)


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
@pytest.mark.parametrize("kind", SPIKINGJELLY_KINDS)
def test_spikingjelly_network_runs_the_same_on_every_target(kind, target):
    check_against_targets(spikingjelly_case(kind), target)


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
@pytest.mark.parametrize("kind", ["dense-if", "conv-pool"])
def test_spikingjelly_if_is_detected_by_auto(kind, target):
    """Without an override ("auto", the default) the graph's IFs all have ``r = 1/dt`` for the graph's dt
    (1e-4 s, no metadata): read as "ode", SpikingJelly's spikes come out."""
    case = spikingjelly_case(kind)
    check_against_targets(case, target, if_convention="auto")


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_spikingjelly_if_read_per_step_is_wrong(target):
    """Forced "per-step", ``r = 1/dt = 1e4`` multiplies the input: far too many spikes (measured 24 % of the
    output values differ)."""
    case = spikingjelly_case("dense-if")
    res = run_target(target, case.graph, case.x, if_convention="per-step")
    assert differing(res.outputs, case.own) > 0.05
    assert np.all(np.asarray(case.graph.nodes["_1"].r) == pytest.approx(1 / SJ_DT))


def test_spikingjelly_fires_at_the_threshold_nir_above_it():
    """SpikingJelly's Heaviside is ``x >= 0``: it fires when ``v`` equals the threshold; NIR (and snnkit,
    Norse, snnTorch) fire when ``v > v_threshold``. Only a membrane landing exactly on the threshold tells them
    apart (here 0.5 + 0.5 = 1.0)."""
    from spikingjelly.activation_based import layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    m = torch.nn.Sequential(layer.Linear(1, 1, bias=False), neuron.IFNode(v_threshold=1.0))
    with torch.no_grad():
        m[0].weight.fill_(0.5)
    x = np.ones((1, 6, 1), np.float32)
    own = _sj_step(m, x)
    with quiet():
        g = export_to_nir(m, torch.zeros(1, 1))
    ref = run_target("torch", g, x, if_convention="ode")
    assert own[0, :, 0].tolist() == [0, 1, 0, 1, 0, 1]
    assert ref.outputs[0, :, 0].tolist() == [0, 0, 1, 0, 0, 1]


def test_spikingjelly_refuses_soft_reset():
    """SpikingJelly's exporter refuses reset by subtraction (``v_reset=None``): NIR has no field for it."""
    from spikingjelly.activation_based import layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    m = torch.nn.Sequential(layer.Linear(2, 2), neuron.IFNode(v_reset=None))
    with quiet(), pytest.raises(NotImplementedError, match="soft reset"):
        export_to_nir(m, torch.zeros(1, 2))

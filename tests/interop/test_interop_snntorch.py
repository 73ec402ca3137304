"""snnTorch -> NIR -> snnkit: networks built and run in snnTorch 1.0.0, exported with its own
``snntorch.export_nir.export_to_nir``, deployed on snnkit's torch, norse and snntorch targets.

Each kind must give snnTorch's own output spikes on every target, under the overrides docs/interop.md lists
(only ``reset="subtract"`` for reset by subtraction, which NIR cannot carry). Agreement is within SPIKE_TOL:
snnTorch computes ``beta * mem + input`` in two roundings where snnkit may fuse them (measured: no differing spike).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("snntorch", reason="snnTorch is not installed: the snnTorch interop tests need it")
pytest.importorskip("nirtorch", reason="snnTorch's NIR exporter needs nirtorch, which is not installed")
pytest.importorskip("norse", reason="the norse target needs Norse, which is not installed")

from interop_nets import (FRAMEWORK_TARGETS, SNNTORCH_KINDS, SPIKE_TOL, _snntorch_export,  # noqa: E402
                          check_against_targets, differing, run_target, snntorch_case, spikes)

from snnkit.graph import DeployError  # noqa: E402


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
@pytest.mark.parametrize("kind", SNNTORCH_KINDS)
def test_snntorch_network_runs_the_same_on_every_target(kind, target):
    check_against_targets(snntorch_case(kind), target)


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_snntorch_reset_by_subtraction_is_lost_without_the_override(target):
    """The exporter drops ``reset_mechanism`` (NIR has no field for it): read as reset to zero, the spikes differ
    (measured 5.4 % of the output values); ``reset="subtract"`` restores them (previous test)."""
    case = snntorch_case("dense-lif-subtract")
    res = run_target(target, case.graph, case.x)
    assert differing(res.outputs, case.own) > 0.01


def test_snntorch_default_delayed_subtraction_is_not_nir():
    """snnTorch's default Leaky (``reset_mechanism="subtract"``, ``reset_delay=True``) computes
    ``mem[t] = beta mem[t-1] + I[t] - thr s[t-1]``: the threshold is subtracted after the decay and a step late.
    NIR's (and snnkit's) subtraction is ``v = h - thr`` in the spike's step, then decayed. No override reproduces
    it: such networks must be built with ``reset_delay=False`` (or reset to zero)."""
    import snntorch as snn

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(6, 8), snn.Leaky(beta=torch.full((8,), 0.9), threshold=torch.ones(8),
                                                             init_hidden=True))
    assert m[1].reset_mechanism == "subtract" and m[1].reset_delay  # the defaults
    x = spikes((4, 30, 6), 0.5)
    from interop_nets import _snntorch_step

    own = _snntorch_step(m, x)
    g = _snntorch_export(m, torch.zeros(6))
    res = run_target("torch", g, x, reset="subtract")
    assert own.sum() > 0 and differing(res.outputs, own) > 0.01


def test_snntorch_subtraction_needs_twice_the_threshold_after_a_big_input():
    """snnTorch's ``reset_delay=False`` subtraction fires on ``beta m + I - thr`` (not ``beta m + I``) in the step
    after a membrane stayed above the threshold once reduced: equal to NIR's subtraction only while every input
    current is at most ``(2 - beta) thr``. The interop case keeps to that; a stronger drive shows the difference."""
    import snntorch as snn

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(6, 5), snn.Leaky(beta=torch.full((5,), 0.8), threshold=torch.ones(5),
                                                             init_hidden=True, reset_delay=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.full((5, 6), 0.3))
        m[0].bias.zero_()
    x = spikes((4, 30, 6), 0.6)
    from interop_nets import _snntorch_step

    own = _snntorch_step(m, x)
    g = _snntorch_export(m, torch.zeros(6))
    assert differing(run_target("torch", g, x, reset="subtract").outputs, own) > 0.01


def test_snntorch_recurrent_bias_enters_at_t0_in_snntorch_only():
    """An RLeaky's recurrent Linear has a bias. snnTorch adds ``W s[-1] + b = b`` at t = 0; NIR's recurrent edge
    carries nothing there (docs/semantics.md). The targets agree with each other (snnkit's snntorch target drops
    the bias for that one step) and with snnTorch stepped with the bias removed at t = 0 only."""
    from snntorch import utils as snn_utils

    case = snntorch_case("recurrent-bias")
    outs = {t: run_target(t, case.graph, case.x).outputs for t in FRAMEWORK_TARGETS}
    assert all(np.array_equal(outs["torch"], o) for o in outs.values())
    assert differing(outs["torch"], case.own) > 0  # measured: 0.4 % of the output values

    m, rl = case.module, case.module[1]
    snn_utils.reset(m)
    xt, steps = torch.from_numpy(case.x), []
    bias = rl.recurrent.bias.detach().clone()
    with torch.no_grad():
        for t in range(case.x.shape[1]):
            rl.recurrent.bias.copy_(torch.zeros_like(bias) if t == 0 else bias)
            steps.append(m(xt[:, t]))
        rl.recurrent.bias.copy_(bias)
    aligned = torch.stack(steps, 1).numpy()
    assert differing(aligned, outs["torch"]) <= SPIKE_TOL


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_snntorch_leaky_with_beta_one_is_read_as_if_or_refused(target):
    """An IF built in snnTorch is ``Leaky(beta=1)``; its exporter writes ``tau = dt/(1-beta) = inf`` and
    ``r = tau/dt = inf``. Read naively, ``(1 - beta) r`` is NaN and the layer never fires (measured: 0 spikes on
    every target, silently). A target must either read it as the IF it is (the limit ``(1-beta) r = 1``) or refuse
    it in one line; it must not run it silently as a dead layer."""
    import snntorch as snn
    from interop_nets import _snntorch_step

    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(6, 4), snn.Leaky(beta=torch.ones(4), threshold=torch.ones(4),
                                                             init_hidden=True, reset_mechanism="zero"))
    x = spikes((4, 30, 6), 0.5)
    own = _snntorch_step(m, x)
    g = _snntorch_export(m, torch.zeros(6))
    assert own.sum() > 0 and np.all(np.isinf(np.asarray(g.nodes["1"].tau)))
    try:
        res = run_target(target, g, x)
    except DeployError as e:
        assert "\n" not in str(e)
        return
    assert np.array_equal(res.outputs, own), f"{target}: {res.outputs.sum():.0f} spikes, snnTorch {own.sum():.0f}"

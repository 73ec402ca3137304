"""Norse -> NIR -> snnkit: networks built and run in Norse 1.1.0, exported with its own ``norse.torch.to_nir``,
deployed on snnkit's torch, norse and snntorch targets.

Norse's exporter has two bugs a user must work around before deploying (docs/interop.md):

- it writes ``tau = dt / tau_mem_inv``, i.e. ``dt`` times the true time constant (and CubaLIF without ``w_in``,
  read as 1, where Norse's own cell adds the input to the current unscaled: ``w_in = tau_syn / dt``), and no
  graph ``dt``: :func:`interop_nets.norse_fix_time_constants` divides by the export ``dt`` and records the cells' one;
- modules it has no mapping for (Flatten, AvgPool2d) become ``None`` nodes: the user puts the NIR nodes in.

IF (``IAFCell``) needs nothing and is exact (``v + I``, ``v > v_th`` in both).
"""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

pytest.importorskip("norse", reason="Norse is not installed: the Norse interop tests need it")
pytest.importorskip("nirtorch", reason="Norse's NIR exporter needs nirtorch, which is not installed")
pytest.importorskip("snntorch", reason="the snntorch target needs snnTorch, which is not installed")

from interop_nets import (FRAMEWORK_TARGETS, NORSE_DT, NORSE_KINDS, check_against_targets, differing,  # noqa: E402
                          norse_case, run_target)

from snnkit.graph import DeployError  # noqa: E402


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
@pytest.mark.parametrize("kind", NORSE_KINDS)
def test_norse_network_runs_the_same_on_every_target(kind, target):
    check_against_targets(norse_case(kind), target)


def test_norse_exporter_writes_dt_times_tau():
    """``to_nir(..., dt=1e-3)`` of cells with ``tau_mem_inv = 100`` (tau = 10 ms) writes tau = 1e-5 s."""
    case = norse_case("dense-lif")
    cell = case.module[1]
    tau = np.asarray(case.exported.nodes["1"].tau, np.float64)
    np.testing.assert_allclose(tau, NORSE_DT / float(cell.p.tau_mem_inv), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(case.graph.nodes["1"].tau), 1 / float(cell.p.tau_mem_inv), rtol=1e-6)


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
@pytest.mark.parametrize("kind", ["dense-lif", "cubalif"])
def test_norse_export_as_written_is_refused(kind, target):
    """Unfixed, the exported tau (1e-5 s) is shorter than the step every reader assumes (1e-4 s without graph
    metadata): every target refuses it with the same one-line DeployError instead of running a decay < 0."""
    case = norse_case(kind)
    with pytest.raises(DeployError) as e:
        run_target(target, case.exported, case.x)
    assert "\n" not in str(e.value) and "dt" in str(e.value)


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_norse_lif_export_runs_with_dt_times_dt(target):
    """The other work-around for a LIF-only Norse export: leave tau as written and pass ``dt = dt_cells x
    dt_export`` (``1 - dt/tau`` is then Norse's decay). Not for CubaLIF, whose ``w_in`` is wrong as well."""
    case = norse_case("dense-lif")
    res = run_target(target, case.exported, case.x, dt=NORSE_DT * NORSE_DT)
    assert case.own.sum() > 0 and differing(res.outputs, case.own) == 0


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_norse_unmapped_modules_are_none_nodes(target):
    """Norse's exporter has no Flatten or pooling mapping: it writes ``None`` nodes, which every target names."""
    case = norse_case("conv-pool")
    assert case.exported.nodes["2"] is None and case.exported.nodes["3"] is None
    with pytest.raises(DeployError, match="'2'"):
        run_target(target, case.exported, case.x, dt=NORSE_DT * NORSE_DT)


def test_norse_exports_no_recurrent_cell():
    """Norse's recurrent cells have no ``to_nir`` mapping: ``LIFRecurrentCell`` becomes a ``None`` node (no
    recurrent edge, no LIF), so Norse exports no recurrent kind."""
    import norse.torch as nt
    from conftest import quiet

    m = nt.SequentialState(torch.nn.Linear(6, 8), nt.LIFRecurrentCell(8, 8))
    with quiet():
        g = nt.to_nir(m, torch.zeros(6), dt=NORSE_DT)
    assert g.nodes["1"] is None
    assert not any(isinstance(n, (nir.LIF, nir.CubaLIF, nir.NIRGraph)) for n in g.nodes.values())


@pytest.mark.parametrize("kind", NORSE_KINDS)
def test_norse_export_cannot_be_written_until_fixed(tmp_path, kind):
    """``nir.write`` fails on what ``to_nir`` returns (0-d tensors as neuron parameters: "Scalar datasets don't
    support chunk/filter options"; Conv2d ``input_shape=None``; None nodes). After the user's fixes
    (``interop_nets.norse_writable``) the file round-trips and runs with Norse's own spikes."""
    from snnkit.graph import read_nir

    case = norse_case(kind)
    with pytest.raises((TypeError, AttributeError)):
        nir.write(tmp_path / "raw.nir", case.exported)
    nir.write(tmp_path / "fixed.nir", case.graph)
    res = run_target("torch", read_nir(tmp_path / "fixed.nir"), case.x)
    assert differing(res.outputs, case.own) == (0 if case.exact else pytest.approx(0, abs=1e-3))

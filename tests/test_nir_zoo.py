"""Third-party NIR graphs (tests/data/nir-zoo) in snnkit's executor, and the NIR paper's LIF traces."""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from snnkit.deploy.base import DeployError
from snnkit.export import from_nir, read_nir
from snnkit.graph import input_shape


READABLE = ["lif_norse.nir", "lif_rockpool.nir", "two_lif_neurons.nir", "cnn_sinabs.nir",
            "braille_noDelay_bias_zero.nir", "braille_noDelay_noBias_subtract.nir"]


def test_zoo_lists_what_we_expect(zoo):
    assert sorted(p.name for p in zoo.glob("*.nir")) == sorted(READABLE + ["braille_noDelay_bias_zero_subgraph.nir"])


@pytest.mark.parametrize("name", READABLE)
def test_every_readable_zoo_graph_runs(zoo, name):
    graph = read_nir(zoo / name)
    net = from_nir(graph)
    assert net.dt == 1e-4  # third-party files carry no dt: the documented default
    x = (torch.rand(2, 25, *input_shape(graph), generator=torch.Generator().manual_seed(0)) < 0.3).float()
    with torch.no_grad():
        y = net(x)
    assert y.shape[:2] == (2, 25) and set(torch.unique(y).tolist()) <= {0.0, 1.0}


def test_rockpool_graph_is_read_without_its_broken_type_check(zoo):
    with pytest.raises(ValueError):
        nir.read(zoo / "lif_rockpool.nir")
    graph = read_nir(zoo / "lif_rockpool.nir")
    assert "type mismatch" in graph.metadata["_type_check_failed"]


def test_unreadable_zoo_graph(zoo):
    with pytest.raises(DeployError, match=r"braille_noDelay_bias_zero_subgraph\.nir: .*'lif'"):
        read_nir(zoo / "braille_noDelay_bias_zero_subgraph.nir")


def _trace(zoo: Path, name: str) -> np.ndarray:
    """A NIR paper trace: per step (input spike, membrane after reset, output spike)."""
    return np.loadtxt(zoo / name, delimiter=",")


def _run_lif_norse(zoo: Path, drive: np.ndarray):
    net = from_nir(zoo / "lif_norse.nir")
    lif = net.modules_by_name()["1"]
    lif.record = True
    with torch.no_grad():
        s = net(torch.tensor(drive, dtype=torch.float32).reshape(1, -1, 1))[0, :, 0].numpy()
    h = lif.recorded["v"][0, :, 0].detach().numpy()
    lif.record = False
    return s, np.where(s > 0, 0.0, h)  # membrane after reset (v_reset = 0)


def test_lif_norse_reproduces_norse_and_snntorch_spike_times(zoo):
    norse, snn = _trace(zoo, "lif_norse.csv"), _trace(zoo, "lif_snntorch.csv")
    assert np.array_equal(norse[:, 0], snn[:, 0]) and norse[:, 0].sum() > 20
    spikes, v = _run_lif_norse(zoo, norse[:, 0])
    assert spikes.sum() == 4
    assert np.array_equal(np.flatnonzero(spikes), np.flatnonzero(norse[:, 2]))
    assert np.array_equal(np.flatnonzero(spikes), np.flatnonzero(snn[:, 2]))
    # Norse's voltage column is the same membrane (float32 rounding apart) ...
    assert np.max(np.abs(v - norse[:, 1])) < 1e-6
    # ... snnTorch's is in threshold-scaled units: its importer divides the threshold by r dt/tau = 0.04.
    assert np.max(np.abs(v / 0.04 - snn[:, 1])) < 1e-4


def test_lif_norse_lava_traces_lag_one_step(zoo):
    """Lava's traces show every output spike one step later: Loihi's pipeline delays each connection layer
    (the Affine here) by one step (docs/semantics.md, targets table)."""
    norse = _trace(zoo, "lif_norse.csv")
    spikes, _ = _run_lif_norse(zoo, norse[:, 0])
    for name in ("lif_lava_cpu_float.csv", "lif_lava_cpu_fixed.csv"):
        lava = _trace(zoo, name)
        assert np.array_equal(lava[:, 0], norse[:, 0])
        assert np.array_equal(np.flatnonzero(lava[:, 2]), np.flatnonzero(spikes) + 1), name

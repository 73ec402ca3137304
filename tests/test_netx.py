"""The netx file taken to Loihi 2 hardware is the verified one.

- Read back (:mod:`snnkit.deploy.loihi.netx_read`): the integers lava-dl's netx gives Lava, its weight
  re-encoding and Lava's first-step truncation included; the emulator runs them.
- On Lava: lava-dl 0.6's own ``netx.hdf5.Network`` loads the file in the Lava worker and runs it on
  ``Loihi2SimCfg(fixed_pt)``; every layer's spikes equal ``loihi-emu``'s on the same parameters, bit for bit
  (exported digits MLP and ConvNet, and a hand-made file with netx's awkward weight cases).
- ``snn-export --target lava`` reports it: the netx accuracy beside the lava target's and the reference's, what
  each difference costs, and what netx cannot carry.
- ``snn-lava-env`` installs lava-dl and upgrades an environment made before it.

Tests that need Lava with lava-dl skip only when no such environment exists.
"""
from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest

import snnkit
from snnkit.cli import export as export_cli
from snnkit.cli import lava_env as lava_env_cli
from snnkit.deploy.lava import env as lava_env
from snnkit.deploy.loihi import quantize, write_netx
from snnkit.deploy.loihi.netx_check import emulate, same_parameters
from snnkit.deploy.loihi.netx_read import NetxReadError, netx_synapse, read_netx
from conftest import ZOO, lava_available, scaled_model_file


def _netx_available() -> bool:
    if not lava_available():
        return False
    from snnkit.deploy.lava.target import find_lava_python

    return lava_env.has_netx(find_lava_python())


NO_NETX_REASON = ("no Lava environment with lava-dl 0.6 (no Python 3.10 to build one, or an environment made before "
                  "netx support); create or upgrade one with `snn-lava-env`")
needs_netx = pytest.mark.skipif(not _netx_available(), reason=NO_NETX_REASON)


# --- reading a file back (no Lava needed) -----------------------------------------------------------------

def test_a_written_graph_reads_back_as_the_same_integers(tmp_path):
    lg = quantize(nir.read(ZOO / "cnn_sinabs.nir"), weight_exp_range=(0, 0))
    assert write_netx(lg, tmp_path / "cnn.h5") == []
    back = read_netx(tmp_path / "cnn.h5")
    assert same_parameters(back, lg) == [] and back.report["netx"]["notes"] == []
    assert [p.kind for p in back.projections] == ["conv", "conv", "conv", "dense", "dense"]
    x = (np.random.default_rng(0).random((3, 6, 2, 34, 34)) < 0.2).astype(np.int32)
    a, b = emulate(lg, x), emulate(back, x)
    assert all(np.array_equal(a[k], b[k]) for k in a) and sum(int(r.sum()) for r in a.values()) > 0


def test_netx_weight_encoding():
    """netx re-derives mantissas, exponent and weight bits; Lava's Dense then clips and truncates them."""
    mant, exp, bits = netx_synapse(np.array([[254, -256, 0, 2]]))  # snnkit's mixed-sign weights: kept as they are
    assert (exp, bits) == (0, 8) and mant.tolist() == [[254, -256, 0, 2]]
    mant, exp, bits = netx_synapse(np.array([[12, 0, 60]]))  # excitatory, under-filled: shifted up
    assert exp == -2 and mant.tolist() == [[48, 0, 240]] and bits == 4
    with pytest.raises(ValueError, match="all-zero"):
        netx_synapse(np.zeros((2, 3), int))


def test_the_reader_says_where_netx_changes_weights(tmp_path):
    """No positive weight and a most negative weight of -128: netx scales it to -256, Lava clips that to -255
    and truncates it to -248, so the neuron receives -124; the emulator runs what Lava runs."""
    path = _handmade(tmp_path / "f.h5")
    g = read_netx(path)
    [note1, note2, note3] = g.report["netx"]["notes"]
    assert "layer 'layer1'" in note1 and "changes 1 of 30 weights (largest change 4)" in note1
    p1 = g.projections[0]
    assert p1.weight_exp == -1 and p1.effective_weight()[0, 0] == -248
    rec = [p for p in g.projections if p.recurrent][0]
    assert not rec.effective_weight().any()  # truncated by a negative count: Lava zeroes these weights
    with pytest.raises(NetxReadError, match=r"f\.h5: layer 1: neuron type 'SDNN' is not supported"):
        with h5py.File(path, "a") as f:
            del f["layer/1/neuron/type"]
            f["layer/1/neuron"].create_dataset("type", (1,), "S10", [b"SDNN"])
        read_netx(path)


def test_conv_biases_that_vary_within_a_channel_are_kept_per_neuron(tmp_path):
    lg = quantize(nir.read(ZOO / "cnn_sinabs.nir"), weight_exp_range=(0, 0))
    layer = lg.layers[0]
    c, h, w = layer.shape
    layer.bias_mant = (np.arange(c * h * w).reshape(layer.shape) % 7 - 3).astype(np.int32) * 64
    layer.bias_exp = np.zeros(layer.shape, np.int32)
    layer.bias_mant[0, 0, 0] = 5000 * 64  # beyond the 13-bit mantissa at netx's exponent 6
    notes = write_netx(lg, tmp_path / "b.h5")
    assert any("1 biases exceed Loihi's 13-bit mantissa" in n for n in notes)
    with h5py.File(tmp_path / "b.h5") as f:
        assert f["layer/1/bias"].shape == (w, h, c)
    back = read_netx(tmp_path / "b.h5")
    expected = layer.bias_int() // 64
    expected[0, 0, 0] = 4095
    np.testing.assert_array_equal(back.layers[0].bias_int(), expected * 64)


# --- the export report (the emulator checks run everywhere) -----------------------------------------------

def _export(capsys, model: Path, out: Path, probe: int) -> dict:
    rc = export_cli.main([str(model), "--target", "lava", "-o", str(out), "--probe", str(probe), "--json"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(stdout)


def test_export_report_measures_the_netx_file_beside_the_lava_target(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SNNKIT_LAVA_ENV", str(tmp_path / "no-lava"))
    s = _export(capsys, scaled_model_file(tmp_path / "m.pt"), tmp_path / "e", probe=12)
    check = s["checks"]["lava"]
    netx = check["netx"]
    assert netx["written"] and netx["file"] == s["files"]["netx"] and netx["samples"] == 12
    assert netx["reference_accuracy"] == check["reference_accuracy"]
    # netx has no per-layer exponent: this model's file is quantised with exponent 0 and its biases rounded
    assert not netx["same_parameters_as_lava_target"]
    assert netx["causes"][0].startswith("re-quantised with weight exponent 0 (the lava target uses exponents -")
    assert "biases rounded to multiples of 64 (netx applies bias << 6)" in netx["causes"]
    costs = netx["costs"]
    assert set(costs) == {"weight_exponent_0", "netx_biases_and_encoding"}
    assert sum(costs.values()) == pytest.approx(netx["accuracy_cost"])
    assert netx["accuracy_cost"] == pytest.approx(netx["lava_target_accuracy"] - netx["accuracy"])
    assert any(w.startswith("netx: the file runs other integers than the lava target (re-quantised") and
               f"reaches {100 * netx['accuracy']:.1f} % on the 12 probe samples" in w for w in s["warnings"])
    # no Lava environment here: said so, not hidden
    assert netx["lava_dl"] == {"ran": False, "reason": f"lava: SNNKIT_LAVA_ENV={tmp_path / 'no-lava'} is not a "
                               f"Lava environment (no Python interpreter there); create one with "
                               f"`snn-lava-env {tmp_path / 'no-lava'}`"}
    assert any(n.startswith("netx: not run with lava-dl on Lava: lava: SNNKIT_LAVA_ENV=") for n in s["notes"])


def test_what_netx_cannot_carry_is_measured(tmp_path, capsys, monkeypatch):
    """Reset by subtraction: no file; the closest network netx can carry (reset to zero) is measured."""
    monkeypatch.setenv("SNNKIT_LAVA_ENV", str(tmp_path / "no-lava"))
    s = _export(capsys, scaled_model_file(tmp_path / "sub.pt", reset="subtract"), tmp_path / "e", probe=12)
    assert "netx" not in s["files"]
    netx = s["checks"]["lava"]["netx"]
    assert not netx["written"] and "reset by subtraction" in netx["reason"]
    closest = netx["closest"]
    assert "reset to zero instead of by subtraction" in closest["changes"]
    assert closest["accuracy_cost"] == pytest.approx(closest["lava_target_accuracy"] - closest["accuracy"])
    assert "reset_to_zero" in closest["costs"]  # each change's share of the cost
    assert sum(closest["costs"].values()) == pytest.approx(closest["accuracy_cost"])
    assert any(w.startswith("netx: no file written (layer ") and "the closest network netx can carry" in w
               and f"reaches {100 * closest['accuracy']:.1f} %" in w for w in s["warnings"])


# --- on Lava, with lava-dl's own netx ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits MLP and ConvNet, trained briefly."""
    from snnkit.train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("netx-trained")
    for name, model, epochs in [("mlp", {"arch": "mlp", "hidden": [48], "timesteps": 6}, 4),
                                ("convnet", {"arch": "convnet", "channels": [6], "fc": [16], "timesteps": 6}, 3)]:
        train(TrainConfig(dataset="digits", model=model, epochs=epochs, batch_size=128, seed=3), root / name,
              progress=False)
    return root


@pytest.mark.lava
@needs_netx
@pytest.mark.parametrize("name, probe", [("mlp", 16), ("convnet", 4)])
def test_exported_digits_netx_file_runs_on_lava_as_on_the_emulator(trained, name, probe, tmp_path, capsys):
    s = _export(capsys, trained / name / "model.pt", tmp_path / name, probe=probe)
    netx = s["checks"]["lava"]["netx"]
    dl = netx["lava_dl"]
    assert dl["ran"], dl
    assert dl["identical"] and dl["differing_values"] == 0 and dl["samples"] == probe
    assert dl["spikes"] > 0 and dl["layers"] == (2 if name == "mlp" else 3)
    assert dl["imports"] in ("stand-in", "torch")
    assert dl["accuracy"] is not None and netx["accuracy"] is not None
    with h5py.File(s["files"]["netx"]) as f:
        types = [f["layer"][k]["type"][0].decode() for k in sorted(f["layer"], key=int)]
    assert types == (["input", "flatten", "dense", "dense"] if name == "mlp"
                     else ["input", "conv", "flatten", "dense", "dense"])  # the pooling folded into fc


@pytest.mark.lava
@needs_netx
def test_netx_awkward_weights_on_lava_equal_the_emulator_and_the_lava_target(tmp_path):
    """A hand-made file (not snnkit's) with netx's awkward cases: weights netx re-encodes lossily, odd mixed
    weights, a recurrent block whose two matrices Lava classifies differently. lava-dl's netx on Lava, the
    emulator and snnkit's own Lava network on the read-back graph give the same spikes."""
    from snnkit.deploy.lava.target import run_lava, run_netx

    path = _handmade(tmp_path / "f.h5")
    g = read_netx(path)
    x = (np.random.default_rng(2).random((4, 12, 6)) < 0.4).astype(np.int32)
    want = emulate(g, x)
    got, info = run_netx(path, g, x)
    [(own, _)] = run_lava([(g, x)])
    for name, r in want.items():
        assert r.sum() > 0, name
        np.testing.assert_array_equal(got[name], r, err_msg=f"netx {name}")
        np.testing.assert_array_equal(own[name], r, err_msg=f"lava target {name}")
    assert info["pauses"] == 4  # the recurrent block's buffer is zeroed when each sample reaches it


def _handmade(path: Path) -> Path:
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        root = f.create_group("layer")

        def block(i, kind, shape, weight, bias, idecay, vdecay, vth, **extra):
            g = root.create_group(str(i))
            g.create_dataset("type", (1,), "S10", [kind.encode()])
            g.create_dataset("shape", data=np.asarray(shape))
            if weight is None:
                return
            g.create_dataset("weight", data=weight)
            for k, v in extra.items():
                g.create_dataset(k, data=v)
            g.create_dataset("bias", data=np.asarray(bias))
            n = g.create_group("neuron")
            n.create_dataset("type", (1,), "S10", [b"CUBA"])
            for k, v in (("iDecay", idecay), ("vDecay", vdecay), ("vThMant", vth), ("refDelay", 1)):
                n.create_dataset(k, data=v)

        block(0, "input", [6], None, None, 0, 0, 0)
        w1 = -rng.integers(0, 3, size=(5, 6)) * 8
        w1[0, 0] = -128
        block(1, "dense", [5], w1, [40, 35, 50, 45, 60], 4096, 300, 120)
        block(2, "dense_rec", [4], rng.integers(-60, 200, size=(4, 5)) | 1, [25, 10, 30, 20], 1024, 128, 80,
              weight_rec=-rng.integers(0, 3, size=(4, 4)) * 24)
        w3 = -rng.integers(0, 3, size=(3, 4)) * 32
        w3[1, 2] = -64
        block(3, "dense", [3], w3, [60, 70, 80], 4096, 0, 100)
    return path


# --- the environment ----------------------------------------------------------------------------------------

def _fake_env(root: Path, stamp: str | None) -> Path:
    """A venv-shaped folder whose interpreter logs its arguments and succeeds."""
    (root / "bin").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("home = /nowhere\n")
    py = root / "bin" / "python"
    py.write_text(f"#!/bin/sh\necho \"$@\" >> {root / 'calls.log'}\n")
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    if stamp is not None:
        (root / lava_env.STAMP).write_text(stamp)
    return root


def test_an_environment_made_before_netx_is_upgraded_in_place(tmp_path, capsys):
    env = _fake_env(tmp_path / "old", "lava-nc==0.10.0 numpy<2 nir>=1.0.8\n")
    assert lava_env.is_outdated(env) and not lava_env.is_complete(env)
    rc = lava_env_cli.main([str(env), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out) == {"python": str(env / "bin" / "python"), "created": False, "upgraded": True}
    assert f"upgrading the Lava environment in {env} (adds lava-dl==0.6.0 for netx)" in err
    calls = (env / "calls.log").read_text().splitlines()
    assert calls[0].startswith("-m pip install --disable-pip-version-check lava-nc==0.10.0")
    assert calls[1] == "-m pip install --disable-pip-version-check --no-deps lava-dl==0.6.0"
    assert "lava.lib.dl.netx" in calls[2]
    assert lava_env.is_complete(env) and (env / "pyvenv.cfg").is_file()
    # complete now: running it again does nothing
    assert lava_env.create(env, log=io.StringIO()) == env / "bin" / "python"
    assert len((env / "calls.log").read_text().splitlines()) == 3


def test_the_stand_ins_are_only_the_names_netx_touches():
    root = Path(snnkit.__file__).parent / "deploy" / "lava" / "netx_imports"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.py"))
    assert files == ["lava/lib/dl/slayer/__init__.py", "lava/lib/dl/slayer/neuron/__init__.py",
                     "lava/lib/dl/slayer/neuron/rf.py", "torch/__init__.py"]
    names = {}
    for f in ("torch/__init__.py", "lava/lib/dl/slayer/neuron/rf.py"):
        ns: dict = {}
        exec(compile((root / f).read_text(), f, "exec"), ns)
        names[f] = sorted(k for k in ns if not k.startswith("__"))
    assert names == {"torch/__init__.py": ["SNNKIT_STAND_IN", "is_tensor", "tensor"],
                     "lava/lib/dl/slayer/neuron/rf.py": ["neuron_params"]}
    import torch  # the main environment's torch is the real one

    assert not hasattr(torch, "SNNKIT_STAND_IN") and hasattr(torch, "Tensor")

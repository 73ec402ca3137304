"""``snn-export`` and ``snn-deploy`` (issue 3): outputs, JSON, acceptance runs and one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from snnkit.cli import deploy as deploy_cli
from snnkit.cli import export as export_cli
from snnkit.models import build, save
from conftest import run_cli, scaled_model_file


BIN = Path(sys.executable).parent
READABLE = ["lif_norse.nir", "lif_rockpool.nir", "two_lif_neurons.nir", "cnn_sinabs.nir",
            "braille_noDelay_bias_zero.nir", "braille_noDelay_noBias_subtract.nir"]
FRAMEWORKS_PRESENT = all(__import__("importlib").util.find_spec(m) for m in ("norse", "snntorch", "nirtorch"))
needs_frameworks = pytest.mark.skipif(not FRAMEWORKS_PRESENT, reason="norse, snntorch and nirtorch are not installed")


@pytest.fixture
def model_file(tmp_path) -> Path:
    return scaled_model_file(tmp_path / "model.pt")


def _json(capsys, rc_expected=0, fn=None, argv=None):
    rc = fn(argv)
    out, err = capsys.readouterr()
    assert rc == rc_expected, err
    return json.loads(out)


def _error(capsys, fn, argv) -> str:
    rc = fn(argv)
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("fn", [export_cli.main, deploy_cli.main])
def test_help(fn, capsys):
    with pytest.raises(SystemExit) as exc:
        fn(["--help"])
    assert exc.value.code == 0
    assert "--json" in capsys.readouterr().out


# ------------------------------------------------------------------ snn-export ---------------------------------


def test_export_nir(model_file, tmp_path, capsys):
    out = tmp_path / "nir"
    s = _json(capsys, fn=export_cli.main, argv=[str(model_file), "--target", "nir", "-o", str(out), "--json"])
    assert (out / "model.nir").is_file() and (out / "export_report.json").is_file()
    report = json.loads((out / "export_report.json").read_text())
    assert report["checks"]["round_trip"]["identical"] and report["checks"]["round_trip"]["samples"] == 64
    assert "digits" in report["checks"]["probe"]
    assert [n["name"] for n in report["nodes"]] == ["input", "0_flatten", "1_fc", "2_lif", "3_fc", "4_lif", "output"]
    assert s["files"]["nir"] == str(out / "model.nir")
    assert nir.read(out / "model.nir").metadata["timesteps"] == 6


@needs_frameworks
@pytest.mark.parametrize("target", ["norse", "snntorch"])
def test_export_for_frameworks(model_file, tmp_path, capsys, target):
    out = tmp_path / target
    _json(capsys, fn=export_cli.main, argv=[str(model_file), "--target", target, "-o", str(out), "--json"])
    report = json.loads((out / "export_report.json").read_text())
    assert (out / "model.nir").is_file() and (out / f"model_{target}.nir").is_file()
    check = report["checks"][target]
    assert check["identical"] and check["predictions_equal"] == 1.0
    assert any(f"{target} rewrite" in n for n in report["notes"])  # e.g. r folded into the weights


def test_export_onnx(model_file, tmp_path, capsys):
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package")
    out = tmp_path / "onnx"
    _json(capsys, fn=export_cli.main, argv=[str(model_file), "--target", "onnx", "-o", str(out), "--json"])
    report = json.loads((out / "export_report.json").read_text())
    onnx_check = report["checks"]["onnx"]
    assert (out / "model.onnx").is_file() and (out / "model.nir").is_file()
    assert onnx_check["checker"] == "passed" and onnx_check["max_abs_diff_onnx_vs_torch"] < 1e-4
    assert 0 <= onnx_check["predictions_equal_to_snn"] <= 1 and 0 <= onnx_check["twin_accuracy"] <= 1
    import onnx

    model = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["logits"]


def test_export_onnx_says_when_no_twin_exists(tmp_path, capsys):
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package")
    path = scaled_model_file(tmp_path / "lat.pt", encoder={"name": "latency"})
    out = tmp_path / "o"
    rc = export_cli.main([str(path), "--target", "onnx", "-o", str(out)])
    _, err = capsys.readouterr()
    assert rc == 2 and "latency" in err and "no ONNX file written" in err
    assert (out / "model.nir").is_file() and not (out / "model.onnx").exists()
    report = json.loads((out / "export_report.json").read_text())
    assert report["checks"]["onnx"]["exported"] is False


def test_export_lava(model_file, tmp_path, capsys):
    import h5py

    out = tmp_path / "lava"
    summary = _json(capsys, fn=export_cli.main, argv=[str(model_file), "--target", "lava", "-o", str(out), "--json"])
    assert {"loihi_graph.json", "loihi_params.npz", "export_report.json"} <= {p.name for p in (out / "loihi").iterdir()}
    report = json.loads((out / "export_report.json").read_text())
    check = report["checks"]["lava"]
    assert check["delay_steps"] >= 1
    # the expected float-vs-Loihi gap, measured on the probe through the bit-exact emulator
    assert check["run_on"] == "loihi-emu" and check["samples"] == 64
    assert check["accuracy_gap"] == pytest.approx(check["reference_accuracy"] - check["target_accuracy"])
    # A feed-forward MLP fits lava-dl's netx format: the HDF5 is written, one layer per netx layer.
    assert summary["files"]["netx"] == str(out / "loihi" / "model_netx.h5")
    with h5py.File(out / "loihi" / "model_netx.h5") as f:
        layers = [f["layer"][k] for k in sorted(f["layer"], key=int)]
        dense = [layer for layer in layers if layer["type"][()][0].decode() == "dense"]
        assert len(dense) >= 2
        assert all(abs(layer["weight"][()]).max() <= 255 for layer in dense)


def test_export_reports_subtract_reset(tmp_path, capsys):
    path = scaled_model_file(tmp_path / "sub.pt", reset="subtract")
    s = _json(capsys, fn=export_cli.main, argv=[str(path), "--target", "nir", "-o", str(tmp_path / "e"), "--json"])
    assert len(s["warnings"]) == 2 and all("subtraction" in w for w in s["warnings"])


@needs_frameworks
def test_export_reports_what_a_framework_cannot_represent(tmp_path, capsys, monkeypatch):
    """A per-neuron threshold is fine for NIR and snnkit but not for snnTorch's importer: a report warning."""
    torch.manual_seed(0)
    model = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [8]}).eval()
    save(model, tmp_path / "m.pt")
    model.layers[2].threshold = torch.linspace(0.5, 1.5, 8)  # the hidden LIF layer (model files keep scalars)
    monkeypatch.setattr("snnkit.models.io.load", lambda path, device="cpu": model)
    out = tmp_path / "e"
    rc = export_cli.main([str(tmp_path / "m.pt"), "--target", "snntorch", "-o", str(out), "--probe", "0"])
    _, err = capsys.readouterr()
    assert rc == 2 and "one threshold per layer" in err
    report = json.loads((out / "export_report.json").read_text())
    assert any("one threshold per layer" in w for w in report["warnings"])
    assert (out / "model.nir").is_file() and not (out / "model_snntorch.nir").exists()


def test_export_badscaled_model_file(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    err = _error(capsys, export_cli.main, [str(bad), "--target", "nir"])
    assert "bad.pt" in err


# ------------------------------------------------------------------ snn-deploy ---------------------------------


def test_deploy_json_keys_and_saved_output(model_file, tmp_path, capsys):
    out = tmp_path / "o.npz"
    s = _json(capsys, fn=deploy_cli.main, argv=[str(model_file), "--target", "torch", "--dataset", "digits",
                                                "--limit", "40", "--device", "cpu", "--json",
                                                "--save-output", str(out)])
    for key in ("target", "n_samples", "accuracy", "layers", "total_spikes", "total_synops", "wall_s"):
        assert key in s
    assert s["n_samples"] == 40 and s["timesteps"] == 6 and 0 <= s["accuracy"] <= 1
    assert {"name", "neurons", "spikes", "synops", "neuron_updates"} <= set(s["layers"][0])
    assert s["total_spikes"] == sum(layer["spikes"] for layer in s["layers"]) > 0
    assert s["layers"][0]["macs"] > 0  # the first layer is fed analog values by the direct encoder
    saved = np.load(out)
    assert saved["outputs"].shape == (40, 6, 10) and saved["labels"].shape == (40,)
    assert float((saved["predictions"] == saved["labels"]).mean()) == pytest.approx(s["accuracy"])


def test_deploy_input_array_t_or_bt(tmp_path, zoo, capsys):
    x = (np.random.default_rng(0).random((30, 12)) < 0.3)  # [T, ...], bool
    np.save(tmp_path / "x.npy", x)
    s = _json(capsys, fn=deploy_cli.main, argv=[str(zoo / "braille_noDelay_bias_zero.nir"), "--target", "torch",
                                                "--input", str(tmp_path / "x.npy"), "--json",
                                                "--save-output", str(tmp_path / "y.npz")])
    assert s["n_samples"] == 1 and s["timesteps"] == 30 and "accuracy" not in s
    assert np.load(tmp_path / "y.npz")["outputs"].shape == (1, 30, 7)


@needs_frameworks
@pytest.mark.parametrize("name", READABLE)
def test_every_readable_zoo_graph_deploys_from_the_cli(zoo, name, tmp_path, capsys):
    """Acceptance: torch, norse and snntorch, same output spikes (cnn_sinabs.nir and both braille graphs included)."""
    shape = {"cnn_sinabs.nir": (2, 6, 2, 34, 34)}.get(name)
    g = nir.read(zoo / name, type_check=name != "lif_rockpool.nir")
    in_shape = tuple(int(s) for s in next(n for n in g.nodes.values() if isinstance(n, nir.Input)).input_type["input"])
    shape = shape or (2, 40, *in_shape)
    np.save(tmp_path / "x.npy", (np.random.default_rng(1).random(shape) < 0.3).astype(np.float32))
    outputs = {}
    for target in ("torch", "norse", "snntorch"):
        argv = [str(zoo / name), "--target", target, "--input", str(tmp_path / "x.npy"), "--json",
                "--save-output", str(tmp_path / f"{target}.npz"), "--device", "cpu"]
        s = _json(capsys, fn=deploy_cli.main, argv=argv)
        assert s["target"] == target and s["n_samples"] == shape[0]
        outputs[target] = np.load(tmp_path / f"{target}.npz")["outputs"]
    assert np.array_equal(outputs["torch"], outputs["norse"]) and np.array_equal(outputs["torch"], outputs["snntorch"])


@needs_frameworks
def test_acceptance_digits_trained_with_snn_train(tmp_path, capsys):
    """A digits model trained with snn-train gives the same accuracy on all three targets, from the CLI alone."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = run_cli("snn-train", "--dataset", "digits", "--hidden", "32", "--timesteps", "6", "--epochs", "2",
                  "--out", str(tmp_path / "run"), "--no-progress", "--json")
    assert run.returncode == 0, run.stderr
    trained = json.loads(run.stdout)["test_accuracy"]
    model = str(tmp_path / "run" / "model.pt")
    res = subprocess.run([str(BIN / "snn-deploy"), model, "--target", "torch", "--dataset", "digits", "--device",
                          "cpu", "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    accuracy = {"torch": json.loads(res.stdout)["accuracy"]}
    for target in ("norse", "snntorch"):  # the same command, in this process (saves interpreter start-ups)
        capsys.readouterr()
        accuracy[target] = _json(capsys, fn=deploy_cli.main, argv=[model, "--target", target, "--dataset", "digits",
                                                                   "--json"])["accuracy"]
    assert accuracy["torch"] == pytest.approx(trained, abs=1e-12)
    assert accuracy["norse"] == accuracy["torch"] and accuracy["snntorch"] == accuracy["torch"], accuracy


def test_deploy_from_exported_nir_equals_model(model_file, tmp_path, capsys):
    export_cli.main([str(model_file), "--target", "nir", "-o", str(tmp_path / "e"), "--probe", "0"])
    capsys.readouterr()
    a = _json(capsys, fn=deploy_cli.main, argv=[str(model_file), "--target", "torch", "--dataset", "digits",
                                                "--limit", "30", "--json", "--device", "cpu"])
    b = _json(capsys, fn=deploy_cli.main, argv=[str(tmp_path / "e" / "model.nir"), "--target", "torch",
                                                "--dataset", "digits", "--limit", "30", "--json", "--device", "cpu"])
    assert a["accuracy"] == b["accuracy"] and a["layers"] == b["layers"]


# ------------------------------------------------------------------ bad input ----------------------------------


def test_unreadable_graph(zoo, capsys):
    err = _error(capsys, deploy_cli.main, [str(zoo / "braille_noDelay_bias_zero_subgraph.nir"), "--target", "torch",
                                           "--input", "whatever.npy"])
    assert "braille_noDelay_bias_zero_subgraph.nir" in err and "not a readable NIR graph" in err


def test_unknown_node_type(tmp_path, capsys):
    g = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((2, 2), np.float32), bias=np.zeros(2, np.float32)),
                               nir.Threshold(threshold=np.ones(2)))
    nir.write(tmp_path / "thr.nir", g)
    np.save(tmp_path / "x.npy", np.zeros((4, 2), np.float32))
    for target in ("torch",) + (("norse", "snntorch") if FRAMEWORKS_PRESENT else ()):
        err = _error(capsys, deploy_cli.main, [str(tmp_path / "thr.nir"), "--target", target,
                                               "--input", str(tmp_path / "x.npy")])
        assert "thr.nir" in err and "Threshold" in err


@pytest.mark.parametrize("array, problem", [
    (np.zeros((10, 3), np.float32), "does not end with the graph's input shape"),
    (np.array(["a", "b"]), "not a real number type"),
    (np.zeros((2, 3, 4, 12), np.float32), "expected [T, 12] or [B, T, 12]"),
    (np.full((5, 12), np.nan, np.float32), "NaN"),
])
def test_bad_input_arrays(zoo, tmp_path, capsys, array, problem):
    np.save(tmp_path / "bad.npy", array)
    err = _error(capsys, deploy_cli.main, [str(zoo / "braille_noDelay_bias_zero.nir"), "--target", "torch",
                                           "--input", str(tmp_path / "bad.npy")])
    assert "bad.npy" in err and problem in err


def test_other_bad_requests(zoo, model_file, tmp_path, capsys):
    graph = str(zoo / "cnn_sinabs.nir")
    err = _error(capsys, deploy_cli.main, [graph, "--target", "torch", "--dataset", "digits"])
    assert "cnn_sinabs.nir" in err and "[2, 34, 34]" in err
    err = _error(capsys, deploy_cli.main, [graph, "--target", "nope", "--input", "x.npy"])
    assert "unknown target 'nope'" in err
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    err = _error(capsys, deploy_cli.main, [graph, "--target", "torch", "--input", str(tmp_path / "junk.npy")])
    assert "junk.npy" in err
    np.save(tmp_path / "x.npy", np.zeros((5, 12), np.float32))
    err = _error(capsys, deploy_cli.main, [str(zoo / "braille_noDelay_bias_zero.nir"), "--target", "torch",
                                           "--input", str(tmp_path / "x.npy"), "--timesteps", "7"])
    assert "5 steps" in err
    err = _error(capsys, deploy_cli.main, [str(tmp_path / "missing.pt"), "--target", "torch", "--dataset", "digits"])
    assert "missing.pt" in err

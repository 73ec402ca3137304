"""A new target in one file plus one registry line (docs/architecture.md, "Adding a target").

``tests/targets/stepped_target.py`` defines ``torch-stepped`` (snnkit's executor, one step at a time); one call to
``register_target`` makes it known. ``snn-deploy``, ``snn-attack`` and ``snn-report`` then run it, and ask it, not
its name, what it can do: it offers its own network with gradients (inherited from ``TorchBasedTarget``), so
white-box attacks run on it; it writes no files of its own, so ``snn-export`` does not offer it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from snnkit.cli import attack as attack_cli
from snnkit.cli import deploy as deploy_cli
from snnkit.cli import export as export_cli
from snnkit.cli import report as report_cli
from snnkit.deploy import TARGETS, register_target
from snnkit.deploy.base import exports, get_target

NAME = "torch-stepped"


@pytest.fixture
def stepped():
    sys.path.insert(0, str(Path(__file__).parent / "targets"))
    register_target(NAME, "stepped_target:SteppedTarget")  # the one registry line
    try:
        yield NAME
    finally:
        TARGETS.pop(NAME)
        sys.path.remove(str(Path(__file__).parent / "targets"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from snnkit.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    train(TrainConfig(dataset="digits", model={"arch": "mlp", "hidden": [32], "timesteps": 6}, epochs=3,
                      batch_size=64, seed=0), out, progress=False)
    return out / "model.pt"


def _json(capsys, main, argv) -> dict:
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_snn_deploy_runs_the_new_target(stepped, model_file, capsys):
    common = [str(model_file), "--dataset", "digits", "--limit", "60", "--json"]
    new = _json(capsys, deploy_cli.main, [*common, "--target", stepped])
    ref = _json(capsys, deploy_cli.main, [*common, "--target", "torch", "--device", "cpu"])
    assert new["target"] == stepped and new["n_samples"] == 60 and new["info"]["stepped"] is True
    # another order of the same arithmetic: the same network up to float rounding
    assert abs(new["accuracy"] - ref["accuracy"]) <= 0.05 and new["accuracy"] > 0.5
    assert abs(new["total_spikes"] - ref["total_spikes"]) <= 0.01 * ref["total_spikes"]
    assert [layer["name"] for layer in new["layers"]] == [layer["name"] for layer in ref["layers"]]


def test_snn_attack_asks_the_new_target_what_it_can_do(stepped, model_file, capsys):
    res = _json(capsys, attack_cli.main, [str(model_file), "--target", stepped, "--attack", "pgd", "--steps", "3",
                                          "--eps", "0.1", "--limit", "16", "--quiet", "--json"])
    assert res["target"] == stepped and [a["name"] for a in res["attacks"]] == ["PGD-3"]
    assert res["attacks"][0]["kind"] == "white-box"  # gradients of the target itself
    assert res["adaptive_via"] == f"{stepped} (the target itself)" and "recheck" not in res
    assert res["robust_accuracy"] < res["clean_accuracy"]


def test_snn_report_includes_the_new_target(stepped, model_file, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_cli.main([str(model_file), "--dataset", "digits", "--limit", "12", "--targets", f"torch,{stepped}",
                            "--no-raster", "--no-progress", "--energy-model", "truenorth", "-o", str(out)]) == 0
    (rep,) = json.loads((out / "report.json").read_text())["models"]
    entry = next(t for t in rep["targets"] if t["name"] == stepped)
    assert entry["status"] == "ok" and entry["agreement"]["predictions"] >= 0.9
    # a target that says nothing about its memory holds the graph as torch does: dense float32
    assert entry["footprint"]["layout"].startswith("dense float32") and entry["footprint"]["stored_over_dense"] == 1.0
    assert stepped in (out / "report.html").read_text()


def test_what_the_new_target_cannot_do_is_known_without_its_name(stepped, capsys):
    assert not exports(stepped) and exports("lava") and exports("norse")
    assert stepped not in export_cli.choices()
    assert get_target(stepped).query_proxy() is None

"""Models, model files, the trainer (determinism, resume) and snn-train (acceptance on digits)."""
import json

import pytest
import torch

import snnkit
from snnkit.models import ModelFileError, build, save
from snnkit.train import TrainConfig, train
from conftest import run_cli


@pytest.mark.parametrize("arch", ["mlp", "convnet", "vgg"])
def test_model_file_round_trip_weights_only(tmp_path, arch):
    torch.manual_seed(0)
    cfg = {"arch": arch, "input_shape": [1, 8, 8], "num_classes": 10, "learn_beta": True,
           "encoder": {"name": "poisson", "seed": 5}}
    model = build(cfg).eval()
    save(model, tmp_path / "m.pt")
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # plain data only: no code is unpickled
    assert raw["format"] == "snnkit.model"
    loaded = snnkit.load(tmp_path / "m.pt")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))
    assert loaded(x).shape == (3, 10)
    run = loaded.run(x)
    assert run.outputs.shape == (3, 8, 10)
    assert set(run.spikes) == set(run.membranes) == set(loaded.spiking_layers())


def test_model_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        snnkit.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="junk.pt: not a readable snnkit model file"):
        snnkit.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="other.pt: not an snnkit model file"):
        snnkit.load(tmp_path / "other.pt")


def small_config(**kw):
    return TrainConfig(dataset="digits", model={"arch": "mlp", "hidden": [64]}, epochs=4, batch_size=128,
                       seed=7, **kw)


def test_same_seed_same_metrics_and_weights(tmp_path):
    m1 = train(small_config(), tmp_path / "a", progress=False)
    m2 = train(small_config(), tmp_path / "b", progress=False)
    strip = lambda h: [{k: v for k, v in e.items() if k != "time_s"} for e in h]  # noqa: E731
    assert strip(m1["history"]) == strip(m2["history"])
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    m3 = train(TrainConfig(**{**small_config().__dict__, "seed": 8}), tmp_path / "c", progress=False)
    assert strip(m3["history"]) != strip(m1["history"])


def test_resume_after_interruption_gives_same_final_weights(tmp_path):
    train(small_config(), tmp_path / "full", progress=False)
    partial = train(small_config(), tmp_path / "resumed", progress=False, stop_after=2)
    assert partial["stopped_after_epoch"] == 2
    assert not (tmp_path / "resumed" / "model.pt").exists()
    train(small_config(), tmp_path / "resumed", progress=False, resume=True)
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_resume_refuses_other_config(tmp_path):
    train(small_config(), tmp_path / "r", progress=False, stop_after=1)
    with pytest.raises(ValueError, match=r"different training config \(lr differ\)"):
        train(TrainConfig(**{**small_config().__dict__, "lr": 0.1}), tmp_path / "r", progress=False, resume=True)


def test_resume_from_a_checkpoint_older_than_the_config_fields(tmp_path):
    """A checkpoint written before TrainConfig gained ``augment`` and ``amp`` (and the augmentation's generator
    state) resumes, and ends where an uninterrupted run ends."""
    whole = train(small_config(), tmp_path / "whole", progress=False)
    train(small_config(), tmp_path / "old", progress=False, stop_after=2)
    ckpt_path = tmp_path / "old" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    for key in ("augment", "amp"):
        del ckpt["train_config"][key]
    del ckpt["augment_rng"]
    torch.save(ckpt, ckpt_path)
    resumed = train(small_config(), tmp_path / "old", progress=False, resume=True)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]


def snn_train(*args):
    return run_cli("snn-train", *args)


def test_snn_train_help_and_bad_input(tmp_path):
    assert snn_train("--help").returncode == 0
    bad = snn_train("--surrogate", "gauss", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "unknown surrogate" in bad.stderr
    missing = snn_train("--dataset", "mnist", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "y"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize("arch,target", [("mlp", 0.96), ("convnet", 0.97)])
def test_acceptance_digits_accuracy_and_time(tmp_path, arch, target):
    """Issue 2 acceptance: MLP >= 96 %, ConvNet >= 97 % on digits (T=8, direct).

    The time budget (under 60 s each on 2 cores) is measured by scripts/demo.py and reported in the README,
    not asserted here: a timed unit test fails on a loaded machine and proves nothing on a fast one.
    """
    epochs = {"mlp": "30", "convnet": "15"}[arch]
    res = snn_train("--dataset", "digits", "--model", arch, "--timesteps", "8", "--encoder", "direct",
                    "--surrogate", "atan:alpha=2", "--epochs", epochs, "--seed", "0", "--out", str(tmp_path),
                    "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert out["test_accuracy"] == metrics["test_accuracy"] >= target
    assert metrics["train_time_s"] > 0 and len(metrics["history"]) == int(epochs)
    assert (tmp_path / "model.pt").is_file()

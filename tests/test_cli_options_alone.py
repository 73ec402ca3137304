"""Every documented option works alone: given with defaults, an option runs, or the command refuses in one line
(exit code 2) naming the option it needs; ``--sparsity 0.9 --prune hydra|harp|magnitude`` trains with a default
score-training budget and gives >= 90 % zero weights in ``model.pt`` and in the exported NIR graph."""
from __future__ import annotations

import numpy as np
import nir
import pytest
import torch

import snnkit
from snnkit.cli import attack as attack_cli
from snnkit.cli import deploy as deploy_cli
from snnkit.cli import export as export_cli
from snnkit.cli import report as report_cli
from snnkit.cli import train as train_cli
from snnkit.deploy.base import accepted_options, make_target, target_class
from snnkit.models import build, save
from snnkit.train import sparsity as sp

TRAIN = ["--dataset", "digits", "--hidden", "32", "--epochs", "1", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small untrained digits MLP (the refusals below happen before any real work)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save(build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16], "timesteps": 4}), path,
         meta={"dataset": "digits"})
    return path


@pytest.fixture(scope="module")
def encoded_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "x.npy"
    np.save(path, np.random.default_rng(0).random((2, 4, 1, 8, 8)).astype(np.float32))
    return path


def _refused(capsys, main, argv) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and out == "", err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("argv, needs", [
    (["--channels", "8"], "--channels needs --model convnet"),
    (["--fc", "16"], "--fc needs --model convnet or vgg"),
    (["--vgg-depth", "2"], "--vgg-depth needs --model vgg"),
    (["--vgg-width", "8"], "--vgg-width needs --model vgg"),
    (["--model", "convnet", "--hidden", "8"], "--hidden needs --model mlp"),
    (["--pool", "max"], "--pool needs --model vgg, vgg11 or vgg16"),
    (["--sew", "iand"], "--sew needs --model sew-resnet18 or sew-resnet34"),
    (["--width", "0.5"], "--width needs --model vgg11, vgg16, resnet19, sew-resnet18, sew-resnet34 or wrn16-4"),
    (["--prune", "hydra"], "--prune needs --sparsity"),
    (["--prune-epochs", "1"], "--prune-epochs needs --sparsity"),
    (["--prune-lr", "0.05"], "--prune-lr needs --sparsity"),
    (["--ann-epochs", "1"], "--ann-epochs needs --pipeline convert"),
    (["--ann-method", "standard"], "--ann-method needs --pipeline convert"),
    (["--ann-lr", "0.01"], "--ann-lr needs --pipeline convert"),
    (["--ann-finetune-epochs", "1"], "--ann-finetune-epochs needs --pipeline convert"),
    (["--percentile", "99"], "--percentile needs --pipeline convert"),
    (["--threshold-scale", "0.5"], "--threshold-scale needs --pipeline convert"),
    (["--data-dir", "/tmp"], "--data-dir needs --dataset mnist, fashion-mnist, cifar10, cifar100, tiny-imagenet, "
                             "nmnist, dvs-gesture or cifar10-dvs"),
])
def test_train_option_that_needs_another_is_refused_before_any_work(tmp_path, capsys, argv, needs):
    err = _refused(capsys, train_cli.main, [*TRAIN, "--out", str(tmp_path), *argv])
    assert needs in err
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("main, argv", [
    (train_cli.main, [*TRAIN, "--out", "{tmp}"]),
    (report_cli.main, ["{model}", "--dataset", "digits", "--limit", "4", "--targets", "torch", "-o", "{tmp}"]),
])
def test_unavailable_device_is_one_line(tmp_path, model_file, capsys, main, argv):
    argv = [a.format(tmp=tmp_path, model=model_file) for a in argv]
    assert "CUDA is not available" in _refused(capsys, main, [*argv, "--device", "cuda"])


@pytest.mark.parametrize("argv, needs", [
    (["--target", "torch", "--input", "{x}", "--data-dir", "/tmp"], "--data-dir needs --dataset"),
    (["--target", "torch", "--dataset", "digits", "--data-dir", "/tmp"], "--data-dir needs --dataset mnist"),
    (["--target", "norse", "--dataset", "digits", "--device", "cuda"], "--device needs --target torch or loihi-emu"),
    (["--target", "lava", "--dataset", "digits", "--batch-size", "8"],
     "--batch-size needs --target torch, norse, snntorch or loihi-emu"),
])
def test_deploy_option_the_target_would_ignore_is_refused(model_file, encoded_input, capsys, argv, needs):
    argv = [a.format(x=encoded_input) for a in argv]
    assert needs in _refused(capsys, deploy_cli.main, [str(model_file), *argv])


def test_deploy_options_reach_the_loihi_targets_through_their_quantisation_options():
    """``--dt`` (a quantisation option of loihi-emu and lava, taken through ``**kwargs``) is no longer dropped."""
    assert {"dt", "device", "batch_size"} <= accepted_options(target_class("loihi-emu"))
    assert "dt" in accepted_options(target_class("lava")) and "batch_size" not in accepted_options(target_class("lava"))
    target = make_target("loihi-emu", dt=2e-3, device="cpu", batch_size=7)
    assert target.quant_options == {"dt": 2e-3} and target.batch_size == 7


@pytest.mark.parametrize("argv, needs", [
    (["--attack", "fgsm", "--steps", "3"], "--steps needs --attack pgd"),
    (["--attack", "fgsm,noise", "--queries", "50"], "--queries needs --attack square or standard"),
    (["--attack", "square", "--eot", "2"], "--eot needs --attack fgsm, pgd"),
    (["--attack", "fgsm", "--surrogate", "triangle:gamma=1"], "--surrogate needs --attack ensemble or standard"),
    (["--attack", "fgsm", "--data-dir", "/tmp"], "--data-dir needs --dataset mnist"),
])
def test_attack_setting_no_chosen_attack_reads_is_refused(model_file, capsys, argv, needs):
    err = _refused(capsys, attack_cli.main, [str(model_file), "--eps", "0.1", "--limit", "4", "--quiet", *argv])
    assert needs in err


def test_export_and_report_refuse_a_data_dir_they_would_ignore(model_file, encoded_input, tmp_path, capsys):
    err = _refused(capsys, export_cli.main, [str(model_file), "--target", "nir", "-o", str(tmp_path / "e"),
                                             "--data-dir", "/tmp"])
    assert "--data-dir needs a model trained on mnist" in err and "digits ships with snnkit" in err
    err = _refused(capsys, report_cli.main, [str(model_file), "--input", str(encoded_input), "--data-dir", "/tmp",
                                             "--targets", "torch", "-o", str(tmp_path / "r")])
    assert "--data-dir needs --dataset" in err


@pytest.mark.parametrize("argv, epochs", [
    (["--sparsity", "0.9", "--prune", "hydra"], 8),  # round(30 / 4)
    (["--sparsity", "0.9", "--prune", "harp", "--epochs", "100"], 25),
    (["--sparsity", "0.9", "--prune", "hydra", "--epochs", "1"], 1),  # at least one
    (["--sparsity", "0.9", "--prune", "hydra", "--prune-epochs", "3"], 3),
    (["--sparsity", "0.9"], 0),  # magnitude: prune the initial weights
    (["--sparsity", "0.9", "--pipeline", "convert"], 10),
])
def test_default_score_training_epochs(argv, epochs):
    args = train_cli.parser().parse_args([*argv, "--out", "unused"])
    assert train_cli.prune_epochs(args) == epochs


def test_help_states_the_score_training_default():
    assert "round(EPOCHS / 4)" in " ".join(train_cli.parser().format_help().split())


def _zero_fraction(weights) -> float:
    weights = [np.asarray(w) for w in weights]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)


@pytest.mark.parametrize("prune", ["hydra", "harp", "magnitude"])
def test_sparsity_with_prune_alone_trains_and_exports_90_percent_zeros(tmp_path, capsys, prune):
    rc = train_cli.main([*TRAIN, "--sparsity", "0.9", "--prune", prune, "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    model = snnkit.load(tmp_path / "model.pt")
    layers = sp.prunable(model)
    assert _zero_fraction(m.weight.detach() for m in layers.values()) >= 0.9
    state = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    assert _zero_fraction(state[f"{name}.weight"] for name in layers) >= 0.9
    assert export_cli.main([str(tmp_path / "model.pt"), "--target", "nir", "-o", str(tmp_path / "e"),
                            "--probe", "8"]) == 0
    graph = nir.read(tmp_path / "e" / "model.nir")
    weights = [graph.nodes[name.split(".")[-1]].weight for name in layers]
    assert len(weights) == len(layers) and _zero_fraction(weights) >= 0.9

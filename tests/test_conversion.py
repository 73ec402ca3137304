"""Robust ANN -> SNN conversion: the ANN twin, the percentile threshold rule, weight transfer with masks, and
the one-command pipeline."""
import json

import numpy as np
import pytest
import torch
from torch import nn

import snnkit
from snnkit.models import build
from snnkit.train import sparsity as sp
from snnkit.train.conversion import ANNTwin, ConversionConfig, RateTwin, calibrate_thresholds, transfer
from conftest import run_cli

SNN_CFG = {"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [40, 20], "neuron": "if",
           "reset": "subtract", "surrogate": "triangle:gamma=1"}


def _twin(cfg=SNN_CFG):
    torch.manual_seed(0)
    snn = build(cfg)
    return snn, ANNTwin(snn)


def test_ann_twin_mirrors_the_snn():
    snn, ann = _twin()
    kinds = [type(m) for m in ann.layers]
    assert kinds == [type(snn.layers[0]), nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear, nn.Identity]
    assert set(ann.state_dict()) == {k for k in snn.state_dict() if k.split(".")[-1] in ("weight", "bias")}
    x = torch.rand(5, 1, 8, 8)
    w1, b1 = snn.layers[1].weight, snn.layers[1].bias
    h = torch.relu(x.flatten(1) @ w1.T + b1)
    h = torch.relu(h @ snn.layers[3].weight.T + snn.layers[3].bias)
    assert torch.allclose(ann(x), h @ snn.layers[5].weight.T + snn.layers[5].bias, atol=1e-5)
    conv_snn, conv_ann = _twin({"arch": "convnet", "input_shape": [1, 8, 8], "num_classes": 10, "channels": [4],
                                "fc": [8]})
    assert conv_ann(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_thresholds_follow_the_percentile_rule():
    _, ann = _twin()
    x = torch.rand(50, 1, 8, 8)
    th = calibrate_thresholds(ann, x, percentile=97.0, scale=0.3, batch_size=20)
    # direct computation: pre-activations of each spiking position, per batch of 20, max over batches
    expected = {"2_if": [], "4_if": [], "6_if": []}
    with torch.no_grad():
        for s in range(0, 50, 20):
            z1 = x[s:s + 20].flatten(1) @ ann.layers[1].weight.T + ann.layers[1].bias
            z2 = torch.relu(z1) @ ann.layers[3].weight.T + ann.layers[3].bias
            z3 = torch.relu(z2) @ ann.layers[5].weight.T + ann.layers[5].bias
            for name, z in zip(expected, (z1, z2, z3)):
                expected[name].append(np.percentile(z.numpy(), 97.0))
    assert set(th) == set(expected)
    for name, values in expected.items():
        assert th[name] == pytest.approx(0.3 * max(values), rel=1e-5)
    # defaults 0.3 and 99.7, over at most two batches
    th2 = calibrate_thresholds(ann, x, batch_size=20, max_batches=2)
    z1 = [np.percentile((x[s:s + 20].flatten(1) @ ann.layers[1].weight.T + ann.layers[1].bias).detach().numpy(), 99.7)
          for s in (0, 20)]
    assert th2["2_if"] == pytest.approx(0.3 * max(z1), rel=1e-5)


def test_transfer_scales_weights_by_the_previous_threshold_and_moves_masks():
    snn, ann = _twin()
    sp.set_masks(ann, sp.magnitude_masks(ann, 0.5))
    th = {"2_if": 0.5, "4_if": 2.0, "6_if": 4.0}
    transfer(ann, snn, th)
    assert snn.config["masks"] is True
    for name, prev in (("1_fc", 1.0), ("3_fc", 0.5), ("5_fc", 2.0)):
        a, s = getattr(ann.layers, name), getattr(snn.layers, name)
        assert torch.allclose(s.weight, a.weight * prev) and torch.equal(s.bias, a.bias)
        assert torch.equal(s.weight_mask, a.weight_mask) and bool((s.weight[s.weight_mask == 0] == 0).all())
    assert [float(m.threshold) for m in snn.spiking_layers().values()] == [0.5, 2.0, 4.0]
    # the first layer's IF neurons (reset by subtraction) fire floor(T z / theta) times for a constant drive
    # 0 <= z < theta: its rate is the ANN pre-activation over the threshold
    x = torch.rand(6, 1, 8, 8)
    snn.encoder.timesteps = 64
    with torch.no_grad():
        z = x.flatten(1) @ ann.layers[1].weight.T + ann.layers[1].bias
        run = snn.run(x)
    counts = run.spikes["2_if"].sum(1)
    ok = (z > 0) & (z < 0.5)
    assert torch.all((counts[ok] - torch.floor(64 * z[ok] / 0.5)).abs() <= 1)


def test_rate_twin_is_the_clamped_rate_model_of_the_snn():
    snn, _ = _twin()
    for m, theta in zip(snn.spiking_layers().values(), (0.5, 2.0, 4.0)):
        m.threshold.fill_(theta)
    twin = RateTwin(snn)
    x = torch.rand(7, 1, 8, 8, requires_grad=True)
    r1 = torch.clamp((x.flatten(1) @ snn.layers[1].weight.T + snn.layers[1].bias) / 0.5, 0, 1)
    r2 = torch.clamp((r1 @ snn.layers[3].weight.T + snn.layers[3].bias) / 2.0, 0, 1)
    out = (r2 @ snn.layers[5].weight.T + snn.layers[5].bias) / 4.0 * snn.logit_scale
    assert torch.allclose(twin(x), out, atol=1e-5)
    twin(x).sum().backward()
    assert x.grad.abs().sum() > 0 and twin.snn is snn  # shares the SNN's weights, differentiable


def test_pipeline_end_to_end_and_cli(tmp_path):
    res = run_cli("snn-train", "--pipeline", "convert", "--hidden", "32", "--neuron", "if",
                          "--reset", "subtract", "--surrogate", "triangle:gamma=1", "--sparsity", "0.9",
                          "--prune", "hydra", "--ann-epochs", "2", "--ann-method", "trades:steps=1",
                          "--prune-epochs", "1", "--ann-finetune-epochs", "1", "--epochs", "1",
                          "--method", "fgsm-at:eps=0.03", "--batch-size", "128", "--out", str(tmp_path), "--json",
                          "--no-progress")
    assert res.returncode == 0, res.stderr
    record = json.loads((tmp_path / "conversion.json").read_text())
    assert set(record) >= {"ann_train", "ann_prune", "ann_finetune", "thresholds", "converted_test_accuracy"}
    assert record["conversion_config"]["percentile"] == 99.7 and record["conversion_config"]["threshold_scale"] == 0.3
    converted = snnkit.load(tmp_path / "converted.pt")
    final = snnkit.load(tmp_path / "model.pt")
    assert [float(m.threshold) for m in converted.spiking_layers().values()] == pytest.approx(
        list(record["thresholds"].values()))
    masks = {n: m.weight_mask for n, m in sp.prunable(converted).items()}
    for name, m in sp.prunable(final).items():  # masks frozen through SNN fine-tuning
        assert torch.equal(m.weight_mask, masks[name])
        assert torch.equal(m.weight == 0, masks[name] == 0)
    assert sp.weight_sparsity(final)["total"] == pytest.approx(0.9, abs=1e-3)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_config"]["init"].endswith("converted.pt") and "gradient_sparsity" in metrics
    assert json.loads(res.stdout)["conversion"]["thresholds"] == record["thresholds"]


def test_conversion_config_checks():
    for bad in (dict(percentile=0), dict(threshold_scale=0), dict(prune="random"), dict(sparsity=1.0)):
        with pytest.raises(ValueError):
            ConversionConfig(**bad)


def test_phase_functions_train_prune_and_keep_masks_frozen():
    """The pipeline's ANN phases as public functions: robust training lowers the loss, pruning installs frozen
    masks at the asked sparsity, and training afterwards keeps the pruned weights exactly zero."""
    from snnkit import data
    from snnkit.train.conversion import prune_ann, train_ann

    x, y = data.load("digits", "train")
    x, y = x[:256], y[:256]
    torch.manual_seed(0)
    ann = ANNTwin(build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [32],
                         "neuron": "if", "reset": "subtract"}))
    gen = torch.Generator().manual_seed(0)
    method = "trades:eps=0.05,steps=1"
    history = train_ann(ann, method, x, y, epochs=3, lr=5e-3, batch_size=64, generator=gen)
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    pruned = prune_ann(ann, method, "hydra", 0.8, x, y, epochs=1, lr=0.01, batch_size=64, generator=gen)
    assert len(pruned) == 1 and sp.has_masks(ann)
    assert sp.weight_sparsity(ann)["total"] == pytest.approx(0.8, abs=1e-2)
    zero = {n: m.weight == 0 for n, m in sp.prunable(ann).items()}
    train_ann(ann, method, x, y, epochs=1, lr=5e-3, batch_size=64, generator=gen)
    for name, m in sp.prunable(ann).items():
        assert torch.equal(m.weight[zero[name]], torch.zeros_like(m.weight[zero[name]]))

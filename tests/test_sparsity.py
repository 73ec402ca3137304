"""Masks: requested sparsity through pruning, training, save/load, resume and NIR export (exact zeros);
HYDRA's straight-through scores and HARP's learned, non-uniform keep rates."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import snnkit
from snnkit.models import build
from snnkit.train import TrainConfig, train
from snnkit.train import sparsity as sp
from conftest import run_cli


def _mlp(**kw):
    torch.manual_seed(0)
    return build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [48, 24], **kw})


def test_topk_and_magnitude_masks_keep_the_requested_fraction():
    scores = torch.tensor([[0.1, -3.0, 2.0], [0.5, 0.0, -1.0]])
    assert torch.equal(sp.topk_mask(scores.abs(), 0.5), torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))
    assert sp.topk_mask(scores, 0.01).sum() == 1  # at least one weight survives
    model = _mlp()
    masks = sp.magnitude_masks(model, 0.9)
    for name, m in sp.prunable(model).items():
        assert int(masks[name].sum()) == round(0.1 * m.weight.numel())
        kept = m.weight.detach().abs()[masks[name].bool()]
        assert kept.min() >= m.weight.detach().abs()[~masks[name].bool()].max()
    with pytest.raises(ValueError, match="sparsity must be in"):
        sp.magnitude_masks(model, 1.0)


def test_masks_survive_save_and_load_as_buffers_and_exact_zeros(tmp_path):
    model = _mlp()
    sp.set_masks(model, sp.magnitude_masks(model, 0.75))
    assert model.config["masks"] is True
    assert all(k.endswith("weight_mask") for k in model.state_dict() if "mask" in k)
    snnkit.models.save(model, tmp_path / "m.pt")
    loaded = snnkit.load(tmp_path / "m.pt")
    for (name, a), b in zip(sp.prunable(model).items(), sp.prunable(loaded).values()):
        assert torch.equal(a.weight_mask, b.weight_mask) and torch.equal(a.weight, b.weight)
        assert torch.equal(b.weight == 0, b.weight_mask == 0)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))


def test_straight_through_topk_gradients():
    scores = torch.tensor([0.3, -2.0, 1.0, 0.1], requires_grad=True)
    keep = torch.tensor(0.5, requires_grad=True)
    mask = sp._TopK.apply(scores.abs(), keep)
    assert torch.equal(mask, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    g = torch.tensor([1.0, 2.0, -3.0, 4.0])
    (mask * g).sum().backward()
    assert torch.equal(scores.grad, g * torch.sign(scores.detach()))  # straight through |s|
    assert keep.grad.item() == pytest.approx(4.0)  # HARP: the sum of the mask's gradient


def test_hydra_score_initialisation():
    lin = nn.Linear(20, 5)
    pm = sp.ScoreMask(lin.weight, keep=0.2, learn_rate=False, k_min=0.02)
    w = lin.weight.detach()
    assert torch.allclose(pm.scores, math.sqrt(6 / 20) * w / w.abs().max())
    assert float(pm.keep()) == pytest.approx(0.2)
    rate = sp.ScoreMask(lin.weight, keep=0.2, learn_rate=True, k_min=0.02)
    assert rate.keep().item() == pytest.approx(0.2, rel=1e-5)  # HARP starts at the target keep rate


def test_harp_rescaling_hits_the_global_target_and_keeps_proportions():
    sizes = {"a": 1000, "b": 100, "c": 10}
    rates = sp._rescaled_rates({"a": 0.05, "b": 0.3, "c": 0.9}, sizes, 0.1)
    kept = sum(sizes[n] * r for n, r in rates.items()) / sum(sizes.values())
    assert kept == pytest.approx(0.1, rel=1e-6)
    assert rates["c"] == 1.0  # capped
    assert rates["b"] / rates["a"] == pytest.approx(6.0, rel=1e-6)


def _check_masks_frozen(model, masks):
    for name, m in sp.prunable(model).items():
        assert torch.equal(m.weight_mask, masks[name])
        assert bool((m.weight[masks[name] == 0] == 0).all())


@pytest.mark.parametrize("prune", ["magnitude", "hydra", "harp"])
def test_training_keeps_sparsity_through_fine_tuning_and_export(tmp_path, prune):
    cfg = TrainConfig(model={"arch": "mlp", "hidden": [48, 24]}, epochs=2, batch_size=128, seed=3,
                      sparsity=0.9, prune=prune, prune_epochs=1)
    metrics = train(cfg, tmp_path, progress=False)
    model = snnkit.load(tmp_path / "model.pt")
    assert model.config["masks"] is True
    layers = sp.prunable(model)
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    assert zeros / total == pytest.approx(0.9, abs=len(layers) / total)  # per-layer rounding only
    assert metrics["weight_sparsity"]["total"] == pytest.approx(zeros / total)
    for m in layers.values():
        assert torch.equal(m.weight == 0, m.weight_mask == 0)  # every pruned weight is an exact zero
    if prune != "harp":  # uniform: every layer at the target
        for m in layers.values():
            assert int((m.weight != 0).sum()) == sp.keep_count(m.weight.numel(), 0.1)
    assert len(metrics["prune_history"]) == 1

    from snnkit.export.exporter import to_nir

    graph = to_nir(model)
    for name, m in layers.items():
        w = np.asarray(graph.nodes[name.split(".")[-1]].weight)
        assert np.array_equal(w == 0, m.weight_mask.numpy() == 0)


def test_harp_learns_non_uniform_layer_sparsity(tmp_path):
    cfg = TrainConfig(model={"arch": "mlp", "hidden": [128, 16]}, epochs=1, batch_size=128, seed=0,
                      sparsity=0.9, prune="harp", prune_epochs=3, prune_lr=0.05)
    metrics = train(cfg, tmp_path, progress=False)
    per_layer = list(metrics["weight_sparsity"]["layers"].values())
    assert max(per_layer) - min(per_layer) > 0.02
    assert metrics["weight_sparsity"]["total"] == pytest.approx(0.9, abs=3e-3)


def test_masks_stay_frozen_and_resume_is_exact(tmp_path):
    cfg = TrainConfig(model={"arch": "mlp", "hidden": [32]}, epochs=3, batch_size=128, seed=1, sparsity=0.8,
                      prune="hydra", prune_epochs=1)
    train(cfg, tmp_path / "full", progress=False)
    train(cfg, tmp_path / "part", progress=False, stop_after=1)
    train(cfg, tmp_path / "part", progress=False, resume=True)
    a = snnkit.load(tmp_path / "full" / "model.pt").state_dict()
    b = snnkit.load(tmp_path / "part" / "model.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    masks = {n: m.weight_mask.clone() for n, m in sp.prunable(snnkit.load(tmp_path / "full" / "model.pt")).items()}
    # fine-tuning an already pruned model (init) keeps its masks
    cont = TrainConfig(model={}, epochs=1, batch_size=128, seed=2, init=str(tmp_path / "full" / "model.pt"))
    train(cont, tmp_path / "cont", progress=False)
    _check_masks_frozen(snnkit.load(tmp_path / "cont" / "model.pt"), masks)
    with pytest.raises(ValueError, match="already pruned"):
        train(TrainConfig(**{**cont.__dict__, "sparsity": 0.5}), tmp_path / "again", progress=False)


def test_snn_train_sparsity_flags(tmp_path):
    res = run_cli("snn-train", "--hidden", "32", "--epochs", "1", "--batch-size", "256", "--sparsity", "0.95",
                  "--prune", "hydra", "--prune-epochs", "1", "--out", str(tmp_path), "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["weight_sparsity"]["total"] == pytest.approx(0.95, abs=1e-3)
    bad = run_cli("snn-train", "--epochs", "1", "--sparsity", "0.9", "--prune", "hydra", "--prune-epochs", "0",
                  "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "score-training epoch" in bad.stderr

"""Adversarial training methods (PGD-AT, FGSM-AT, TRADES, SNN-RAT retraction), gradient sparsity in
metrics.json, and snn-train with --method/--reg."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnkit.attack import PGD
from snnkit.models import build
from snnkit.train import TrainConfig, train
from snnkit.train.adversarial import FGSMAT, PGDAT, TRADES, kl_clean_adv, linf_ascent, parseval_retraction
from snnkit.train.objectives import build_method
from conftest import run_cli


def _snn(**kw):
    torch.manual_seed(0)
    return build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [32], **kw})


def test_linf_ascent_stays_in_the_threat_set_and_raises_the_loss():
    model = _snn()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    x_adv = linf_ascent(model, x, lambda logits: F.cross_entropy(logits, y), eps=0.1, alpha=0.03, steps=5)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_methods_parse_and_restore_train_mode():
    pgd = build_method("pgd-at:eps=0.1,steps=4")
    assert isinstance(pgd, PGDAT) and pgd.steps == 4 and pgd.alpha == pytest.approx(2.5 * 0.1 / 4)
    fgsm = build_method("fgsm-at:eps=0.1")
    assert isinstance(fgsm, FGSMAT) and fgsm.steps == 1 and fgsm.alpha == pytest.approx(0.125)
    trades = build_method("trades:beta=3")
    assert isinstance(trades, TRADES) and trades.beta == 3 and trades.eps == pytest.approx(0.031)
    paper = build_method("pgd-at:eps=8/255,steps=7")  # eps written as the papers write it
    assert paper.eps == pytest.approx(8 / 255) and paper.steps == 7
    for bad in ("pgd-at:eps=2", "pgd-at:steps=0", "trades:beta=-1", "pgd-at:retraction=-1", "pgd-at:eps=abc",
                "pgd-at:eps=1/0", "pgd-at:epsilon=0.1"):
        with pytest.raises(ValueError):  # one line for the CLI (exit 2), never a TypeError traceback
            build_method(bad)
    model = _snn(batchnorm=True).train()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    for method in (pgd, fgsm, trades):
        loss, logits = method(model, x, y)
        assert loss.requires_grad and logits.shape == (8, 10)
        assert all(m.training for m in model.modules())


def test_pgd_at_loss_is_cross_entropy_on_its_adversarial_examples():
    model = _snn()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    method = PGDAT(eps=0.1, steps=3)
    torch.manual_seed(5)
    loss, _ = method(model, x, y)
    torch.manual_seed(5)
    x_adv = method.adversarial(model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert loss.item() == pytest.approx(F.cross_entropy(model(x_adv), y).item(), rel=1e-6)


def test_trades_is_clean_cross_entropy_plus_beta_kl():
    model = _snn()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    torch.manual_seed(2)
    loss0, logits = TRADES(beta=0.0, eps=0.1, steps=2, alpha=0.05)(model, x, y)
    assert loss0.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)
    method = TRADES(beta=4.0, eps=0.1, steps=2, alpha=0.05)
    torch.manual_seed(2)
    loss, _ = method(model, x, y)
    torch.manual_seed(2)
    x_adv = method.adversarial(model, x)
    p = F.softmax(model(x), 1)
    kl = (p * (p.log() - F.log_softmax(model(x_adv), 1))).sum(1).mean()
    assert kl.item() >= 0
    assert loss.item() == pytest.approx(F.cross_entropy(model(x), y).item() + 4.0 * kl.item(), rel=1e-5)
    assert kl_clean_adv(model(x), p).item() == pytest.approx(0.0, abs=1e-6)


def test_parseval_retraction_fixes_tight_frames_and_pulls_others_towards_them():
    lin = nn.Linear(4, 6)
    q, _ = torch.linalg.qr(torch.randn(6, 4))
    with torch.no_grad():
        lin.weight.copy_(q)  # orthonormal columns: W^T W = I, a Parseval frame
    before = lin.weight.clone()
    parseval_retraction(lin, 0.1)
    assert torch.allclose(lin.weight, before, atol=1e-6)
    conv = nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight.mul_(4.0)
    w = conv.weight.view(3, -1)
    dist = lambda: float((w @ w.T - torch.eye(3)).norm().detach())  # noqa: E731
    d0 = dist()
    for _ in range(5):
        parseval_retraction(conv, 0.01)
    assert dist() < d0


def test_retraction_runs_after_every_step_in_training(tmp_path):
    cfg = TrainConfig(model={"arch": "mlp", "hidden": [32]}, epochs=1, batch_size=256, seed=1,
                      method="fgsm-at:eps=0.05,retraction=0.001")
    calls = []
    method_cls = FGSMAT
    original = method_cls.after_step

    def counting(self, model):
        calls.append(1)
        original(self, model)

    method_cls.after_step = counting
    try:
        train(cfg, tmp_path, progress=False)
    finally:
        method_cls.after_step = original
    assert len(calls) == 6  # ceil(1437 / 256) optimiser steps


def _pgd_accuracy(model, x, y, eps):
    x_adv = PGD(model, eps=eps, steps=10)(x, y)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def test_pgd_at_beats_standard_training_under_pgd(tmp_path):
    from snnkit import data, load

    base = dict(model={"arch": "mlp", "hidden": [64]}, epochs=6, batch_size=64, seed=0, lr=5e-3)
    train(TrainConfig(**base), tmp_path / "std", progress=False)
    train(TrainConfig(**base, method="pgd-at:eps=0.1,steps=2"), tmp_path / "at", progress=False)
    x, y = data.load("digits", "test", limit=200)
    std, at = load(tmp_path / "std" / "model.pt"), load(tmp_path / "at" / "model.pt")
    assert _pgd_accuracy(at, x, y, 0.1) > _pgd_accuracy(std, x, y, 0.1) + 0.1


def test_metrics_report_input_gradient_sparsity_and_latency_code_is_sparser(tmp_path):
    base = dict(model={"arch": "mlp", "hidden": [32], "timesteps": 8}, epochs=2, batch_size=128, seed=0)
    direct = train(TrainConfig(**base), tmp_path / "d", progress=False)
    latency = train(TrainConfig(**{**base, "model": {**base["model"], "encoder": {"name": "latency"}}}),
                    tmp_path / "l", progress=False)
    for m in (direct, latency):
        assert 0.0 <= m["gradient_sparsity"] <= 1.0
        assert json.loads((tmp_path / "d" / "metrics.json").read_text())["gradient_sparsity"] == direct["gradient_sparsity"]
    # seed 000: a temporal code has sparser input gradients than the direct (analog) code, whose gradient
    # reaches every pixel
    assert direct["gradient_sparsity"] < 0.01
    assert latency["gradient_sparsity"] > direct["gradient_sparsity"] + 0.1


def test_snn_train_method_and_reg_flags(tmp_path):
    res = run_cli("snn-train", "--hidden", "32", "--epochs", "1", "--batch-size", "256",
                  "--method", "pgd-at:eps=0.05,steps=1", "--reg", "mpd-sgr:eta=0.2", "--reg",
                  "tmi:lambda=0.05", "--out", str(tmp_path), "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["history"][0]["loss_parts"]) == {"task", "mpd-sgr", "tmi"}
    assert metrics["train_config"]["method"] == "pgd-at:eps=0.05,steps=1"
    assert "gradient_sparsity" in json.loads(res.stdout)
    bad = run_cli("snn-train", "--epochs", "1", "--reg", "mpd-sgr:eta=-1", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "eta must be >= 0" in bad.stderr and "Traceback" not in bad.stderr

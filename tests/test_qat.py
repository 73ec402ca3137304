"""Quantisation-aware fine-tuning for Loihi 2 (snnkit.train.qat, ``snn-train --init M --qat loihi``)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import snnkit
from conftest import lava_available
from snnkit import data
from snnkit.cli import train as train_cli
from snnkit.deploy.base import make_target
from snnkit.deploy.inputs import encode
from snnkit.export import to_nir
from snnkit.train import TrainConfig, train
from snnkit.train.qat import LoihiQAT, ModelPath, QATError, check

def _config(**kw) -> TrainConfig:
    base = dict(dataset="digits", model={"arch": "mlp", "hidden": [24]}, batch_size=128, seed=3, limit=120)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    """A small trained MLP (24 hidden LIF neurons) and a 50 % magnitude-pruned copy of it, fine-tuned."""
    root = tmp_path_factory.mktemp("qat")
    train(_config(epochs=12), root / "float", progress=False)
    train(_config(epochs=2, init=str(root / "float" / "model.pt"), sparsity=0.5), root / "sparse", progress=False)
    return root


def _counts(logits: torch.Tensor, model) -> np.ndarray:
    """Output spike counts from the logits of ``model`` or its QAT view (``T x mean x scale``)."""
    return np.rint(logits.detach().double().numpy() * model.timesteps / model.logit_scale).astype(np.int64)


def test_float_path_stands_for_the_integers_it_replaces(start):
    """The straight-through path's real values are the integers' values up to their rounding: messages and biases
    in the emulator's units (a wrong scale would still train, badly)."""
    model = snnkit.load(start / "float" / "model.pt")
    x, _ = data.load("digits", "test", limit=32)
    qat = LoihiQAT(model, x)
    lg, path = qat.lg, qat.emulator.float_path
    assert isinstance(path, ModelPath)
    xi = qat.emulator.encode(model.encoder(x))[:, 0]  # one step of the graded input
    src = {lg.input.name: xi}
    for i, p in enumerate(lg.projections):
        exact = qat.emulator._message(i, p, src[p.src].reshape(-1, *lg.source_shape(p.src)))
        real = path.message(p, src[p.src].reshape(-1, *lg.source_shape(p.src))).double()
        err = (real - exact).abs().max() / exact.abs().max()
        assert 0 < err < 0.05, p.name
        src[p.dst] = (exact > 0).double()  # some spikes for the next stage
    for layer in lg.layers:
        exact = torch.as_tensor(layer.bias_int().reshape(-1), dtype=torch.float64)
        real = path.bias(layer).double()
        assert (real - exact).abs().max() <= 0.5 * 2.0 ** layer.bias_exp.max() + 1e-6 * exact.abs().max()


def test_qat_improves_the_deployed_model_and_exports_what_it_trained(start, tmp_path):
    init = start / "float" / "model.pt"
    metrics = train(_config(epochs=3, lr=5e-4, init=str(init), qat="loihi"), tmp_path, progress=False)
    q = metrics["qat"]
    assert q["target"] == "loihi" and q["test_samples"] == 120
    assert q["loihi_accuracy_after"] >= q["loihi_accuracy_before"]
    # the deployed network's own training loss went down (what QAT optimises, seen through the emulator)
    xp, yp = data.load("digits", "train", limit=256)
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(LoihiQAT(snnkit.load(f), xp).eval()(xp), yp)
                  for f in (init, tmp_path / "model.pt")]
    assert losses[1] < losses[0]
    assert all("loihi_test_accuracy" in h for h in metrics["history"])
    assert q["loihi_accuracy_after"] == metrics["history"][-1]["loihi_test_accuracy"]  # QAT forward = deployment

    # model.pt is a normal snnkit model; its export runs on loihi-emu exactly as QAT's forward computes it
    model = snnkit.load(tmp_path / "model.pt")
    x, y = data.load("digits", "test", limit=120)
    trained = LoihiQAT(model, x).eval()
    with torch.no_grad():
        counts = _counts(trained(x), model)
    graph = to_nir(model)
    xe = encode(x.numpy(), graph.metadata)
    emu = make_target("loihi-emu").run(graph, xe)
    assert np.array_equal(counts, emu.aligned_outputs(model.timesteps).sum(axis=1).astype(np.int64))
    assert q["loihi_accuracy_after"] == pytest.approx(float(np.mean(emu.predictions(model.timesteps) == y.numpy())))
    if lava_available():  # Lava fixed_pt runs the same integers (bit-exact with loihi-emu)
        lava = make_target("lava").run(graph, xe[:6])
        assert np.array_equal(lava.outputs, emu.outputs[:6])


def test_gradients_reach_the_float_parameters_through_the_quantised_forward(start):
    model = snnkit.load(start / "float" / "model.pt")
    x, y = data.load("digits", "train", limit=64)
    qat = LoihiQAT(model, x).train()
    assert not model.training  # BatchNorm, were there any, as exported
    loss = torch.nn.functional.cross_entropy(qat(x), y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_masks_stay_frozen_and_methods_compose(start, tmp_path):
    init = start / "sparse" / "model.pt"
    before = snnkit.load(init)
    zero = {n: (m.weight_mask == 0) for n, m in before.named_modules() if hasattr(m, "weight_mask")}
    metrics = train(_config(epochs=1, lr=5e-4, init=str(init), qat="loihi", method="pgd-at:eps=0.1,steps=1"),
                    tmp_path, progress=False)
    assert metrics["train_config"]["method"].startswith("pgd-at") and "qat" in metrics
    after = snnkit.load(tmp_path / "model.pt")
    for n, m in after.named_modules():
        if n in zero:
            assert torch.equal(m.weight_mask == 0, zero[n]) and torch.all(m.weight[zero[n]] == 0)
            assert not torch.equal(m.weight, dict(before.named_modules())[n].weight)  # it did train
    assert metrics["weight_sparsity"]["total"] == pytest.approx(0.5, abs=0.01)


def test_qat_config_errors():
    with pytest.raises(QATError, match="--init"):
        check(_config(qat="loihi"))
    with pytest.raises(QATError, match="--reg"):
        check(_config(qat="loihi", init="m.pt", regs=["mpd-sgr"]))
    with pytest.raises(QATError, match="unknown target"):
        check(_config(qat="truenorth", init="m.pt"))


def test_snn_train_qat_flags(start, tmp_path, capsys):
    out = ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        train_cli.main(["--help"])
    assert "--qat {loihi}" in capsys.readouterr().out
    for args, why in ((["--qat", "loihi"], "--qat fine-tunes a trained model: give it with --init MODEL.pt"),
                      (["--qat", "loihi", "--pipeline", "convert"], "not --pipeline convert"),
                      (["--qat", "loihi", "--init", str(start / "float" / "model.pt"), "--reg", "mpd-sgr"],
                       "--reg does not compose with --qat")):
        assert train_cli.main([*args, *out]) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and why in err, err
    rc = train_cli.main(["--init", str(start / "float" / "model.pt"), "--qat", "loihi", "--epochs", "1",
                         "--batch-size", "256", "--limit", "40", "--no-progress", "--json", *out])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["qat"]) >= {"loihi_accuracy_before", "loihi_accuracy_after", "float_accuracy_before",
                                   "float_accuracy_after"}
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["qat"] == summary["qat"]

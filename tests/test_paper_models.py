"""The seed papers' networks (snnkit.models.paper): sizes at full width, one training step each, NIR export of
the residual ones, and the refusals of what NIR cannot express.

Expected parameter counts are computed here from the layer lists as the papers give them (module docstring of
snnkit.models.paper), with the formulas conv k x k: ``c_in c_out k^2`` (no bias: BatchNorm follows), BatchNorm:
``2 c``, Linear: ``n_in n_out + n_out``; and cross-checked against counts published for the same layouts.
"""
from __future__ import annotations

import json

from collections import OrderedDict

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import run_cli
from snnkit.export import ExportReport, from_nir, read_nir, to_nir, write_nir
from snnkit.models import ARCHS, SpikingModel, build, save
from snnkit.models.paper import ARCHS as PAPER_ARCHS
from snnkit.models.spiking import Rate
from snnkit.nn import LIF, Conv2d, DirectEncoder, Flatten, MaxPool2d
from snnkit.train.conversion import ANNTwin
from snnkit.train.conversion import RateTwin as ConversionRateTwin
from snnkit.train.objectives import build_regularizer
from snnkit.train.qat import LoihiQAT, QATError
from snnkit.train.regularizers import MPDSGR

CIFAR = [3, 32, 32]


def conv(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * c_out * k * k


def bn(c: int) -> int:
    return 2 * c


def fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def vgg_params(features: list, spatial: int, classes: int) -> int:
    n, c, s = 0, 3, 32
    for f in features:
        if f == "P":
            s //= 2
            continue
        n += conv(c, f) + bn(f)
        c = f
    assert s == spatial
    return n + fc(c * s * s, 4096) + fc(4096, 4096) + fc(4096, classes)


def resnet_params(stem: int, stages: list, head: list, classes: int, spiking_downsample: bool = False) -> int:
    """Basic blocks (two 3x3 conv + BN), a 1x1 conv + BN projection where the shape changes."""
    n, c = conv(3, stem) + bn(stem), stem
    for width, blocks, stride in stages:
        for i in range(blocks):
            n += conv(c, width) + bn(width) + conv(width, width) + bn(width)
            if (i == 0 and stride != 1) or c != width:
                n += conv(c, width, 1) + bn(width)
            c = width
    for h in head:
        n, c = n + fc(c, h), h
    return n + fc(c, classes)


# SNN-RAT's VGG-11 (8 convolutions, 3 pools: a 4 x 4 map) and the standard VGG-16 (5 pools: 1 x 1)
VGG11 = [64, "P", 128, 256, "P", 512, 512, 512, "P", 512, 512]
VGG16 = [64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"]
EXPECTED = {
    "vgg11": vgg_params(VGG11, 4, 10),
    "vgg16": vgg_params(VGG16, 1, 10),
    # tdBN's ResNet-19: conv 128; 3 x 128, 3 x 256, 2 x 512 blocks; FC 256; FC classes
    "resnet19": resnet_params(128, [(128, 3, 1), (256, 3, 2), (512, 2, 2)], [256], 10),
    "sew-resnet18": resnet_params(64, [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)], [], 10),
    "sew-resnet34": resnet_params(64, [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], [], 10),
    "wrn16-4": resnet_params(16, [(64, 2, 1), (128, 2, 2), (256, 2, 2)], [], 10),
}
PUBLISHED = {
    # the CIFAR ResNet-18/34 (3x3 stem, BN, FC 10) of github.com/kuangliu/pytorch-cifar, the layout SEW's blocks
    # sit in here: 11,173,962 and 21,282,122 parameters (SEW adds no parameters: its neurons have none)
    "sew-resnet18": 11_173_962,
    "sew-resnet34": 21_282_122,
}


def test_the_formulas_agree_with_published_figures():
    for arch, count in PUBLISHED.items():
        assert EXPECTED[arch] == count
    # WRN-16-4: 2.7M in Zagoruyko & Komodakis (2016), Table 1
    assert round(EXPECTED["wrn16-4"] / 1e6, 1) == 2.7
    # VGG-16's 13 convolutions: 14,714,688 parameters with biases in torchvision's vgg16 features (4,224 biases)
    assert sum(conv(a, b) for a, b in zip([3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512],
                                          [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512])) \
        == 14_714_688 - 4_224
    # ResNet-19 at ~12.7M (no count is printed in the tdBN paper; its layer table gives this)
    assert 12.6e6 < EXPECTED["resnet19"] < 12.8e6


@pytest.mark.parametrize("arch", PAPER_ARCHS)
def test_full_size_parameter_count_and_output_shape(arch):
    assert arch in ARCHS
    torch.manual_seed(0)
    model = build({"arch": arch, "input_shape": CIFAR, "num_classes": 10, "timesteps": 1}).eval()
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[arch]
    with torch.no_grad():
        logits = model(torch.rand(1, *CIFAR))
    assert logits.shape == (1, 10)
    with torch.device("meta"):  # CIFAR-100 head, shape only
        wide = build({"arch": arch, "input_shape": CIFAR, "num_classes": 100})
    head = [m for m in wide.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert head.out_features == 100
    assert sum(p.numel() for p in wide.parameters()) == EXPECTED[arch] + 90 * (head.in_features + 1)


VARIANTS = [(a, {}) for a in PAPER_ARCHS] + [("vgg11", {"pool": "max"}), ("sew-resnet18", {"sew": "iand"})]


def _small(arch: str, shape=(3, 32, 32), timesteps: int = 2, **extra) -> torch.nn.Module:
    return build({"arch": arch, "input_shape": list(shape), "num_classes": 10, "timesteps": timesteps,
                  "width": 1 / 16, **extra})


@pytest.mark.parametrize("arch,extra", VARIANTS, ids=[f"{a}-{'-'.join(e.values()) or 'default'}" for a, e in VARIANTS])
def test_one_training_step_on_a_cifar_batch(arch, extra):
    torch.manual_seed(0)
    model = _small(arch, **extra).train()
    x, y = torch.rand(4, *CIFAR), torch.randint(0, 10, (4,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    first = next(model.parameters())  # the stem convolution: gradients cross every block to reach it
    assert first.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before["layers.0_conv.weight"], model.layers[0].weight)


def test_blocks_are_seen_by_recordings_twin_and_bptr():
    torch.manual_seed(0)
    model = _small("resnet19", shape=(3, 8, 8), timesteps=4, threshold=0.3).eval()
    x = torch.rand(3, 3, 8, 8)
    names = list(model.spiking_layers())
    assert "3_block.lif1" in names and "3_block.lif2" in names and len(names) == 1 + 2 * 8 + 2
    res = model.run(x)
    assert set(res.spikes) == set(names)
    assert "3_block.lif2" in MPDSGR().overlaps(model, res)  # regularisers reach the neurons inside blocks
    for spec in ("mpd-sgr", "tmi"):
        assert torch.isfinite(build_regularizer(spec)(model, res, x, None))
    with torch.no_grad():
        assert torch.equal(model.bptr()(x), model(x))  # BPTR's forward is the model's
        twin = model.twin()(x)
    assert twin.shape == (3, 10) and torch.isfinite(twin).all()
    # every spiking layer, inside blocks included, is a rate function in the twin
    assert sum(isinstance(m, Rate) for m in model.twin().layers.modules()) == len(names)


def _trained_bn(model, shape):
    """Running BatchNorm statistics away from (0, 1), so that folding them matters."""
    model.train()
    with torch.no_grad():
        model(torch.rand(16, *shape) * 1.5 + 0.2)
    return model.eval()


EXPORTED = [("resnet19", {}), ("sew-resnet18", {}), ("wrn16-4", {}), ("vgg11", {}), ("vgg11", {"pool": "max"})]


@pytest.mark.parametrize("arch,extra", EXPORTED, ids=[f"{a}-{'-'.join(e.values()) or 'default'}" for a, e in EXPORTED])
def test_export_runs_through_from_nir_like_the_model(arch, extra, tmp_path):
    torch.manual_seed(1)
    shape = (3, 8, 8)
    model = _trained_bn(_small(arch, shape=shape, timesteps=4, threshold=0.2, width=1 / 8, **extra), shape)
    report = ExportReport()
    graph = to_nir(model, report=report)
    assert not report.warnings
    path = write_nir(graph, tmp_path / "model.nir")
    net = from_nir(read_nir(path))
    if arch != "vgg11":  # residual: some node takes two inputs (a shortcut)
        merges = {d for _, d in graph.edges if sum(1 for _, d2 in graph.edges if d2 == d) > 1}
        assert merges
    if extra.get("pool") == "max":  # each max pool: a window sum and its OR gate
        assert isinstance(graph.nodes["3_pool"], nir.SumPool2d) and isinstance(graph.nodes["3_pool_or"], nir.IF)
        assert any("3_pool: MaxPool2d over spikes written as SumPool2d" in n for n in report.notes)
    x = torch.rand(8, *shape)
    h = model.encoder(x)
    with torch.no_grad():
        ref = model.run(x)
        out = net.run(h)
    compared = 0
    for name, spikes in ref.spikes.items():  # every spiking layer, inside blocks too, has its NIR node
        s = out[name]
        assert s.shape == spikes.shape
        assert (s != spikes).float().mean() <= 1e-3, name
        compared += int(spikes.sum())
    assert compared > 100  # the layers do spike
    assert ref.outputs.sum() > 0
    assert (out["output"] != ref.outputs).float().mean() <= 1e-3


@pytest.mark.parametrize("target", ["norse", "snntorch"])
def test_residual_graphs_run_on_the_framework_targets_as_on_the_reference(target):
    """IF neurons: the same float operations in every framework, so spikes are equal (test_targets_equivalence).
    Norse's importer needed its execution order fixed for the projection shortcuts (snnkit.deploy.norse_target)."""
    pytest.importorskip(target, reason=f"the {target} target needs {target}")
    pytest.importorskip("nirtorch", reason=f"{target}'s NIR importer needs nirtorch")
    from snnkit.deploy.base import get_target
    from snnkit.deploy.inputs import encode
    from snnkit.graph import graph_metadata

    torch.manual_seed(0)
    shape = (3, 8, 8)
    for arch in ("resnet19", "sew-resnet18"):
        model = _trained_bn(_small(arch, shape=shape, timesteps=4, threshold=0.3, width=1 / 8, neuron="if"), shape)
        graph = to_nir(model)
        x = encode(np.random.default_rng(0).random((4, *shape)).astype(np.float32), graph_metadata(graph))
        ref = get_target("torch", device="cpu").run(graph, x, record=True)
        got = get_target(target).run(graph, x, record=True)
        spiking = [n for n, node in graph.nodes.items() if isinstance(node, nir.IF)]
        assert sum(int(ref.records[n].sum()) for n in spiking) > 100
        for n in spiking:
            assert np.array_equal(got.records[n][:, got.delay:got.delay + 4], ref.records[n]), (arch, n)
        assert np.array_equal(got.aligned_outputs(4), ref.outputs)


@pytest.mark.nonnumeric
def test_iand_and_a_max_pool_of_currents_are_refused_in_one_line():
    iand = _small("sew-resnet18", shape=(3, 8, 8), sew="iand")
    layers = nn.Sequential(OrderedDict([("conv", Conv2d(3, 4, 3, padding=1)), ("pool", MaxPool2d(2)),
                                        ("lif", LIF()), ("flat", Flatten()), ("fc", nn.Linear(64, 10)),
                                        ("out", LIF())]))
    currents = SpikingModel(DirectEncoder(2), layers, {"input_shape": [3, 8, 8], "num_classes": 10})
    for model, layer, what in [(iand, "'3_block.iand'", "SEW IAND"), (currents, "'pool'", "MaxPool2d")]:
        report = ExportReport()
        with pytest.raises(ValueError) as exc:
            to_nir(model, report=report)
        line = str(exc.value)
        assert "\n" not in line and f"layer {layer}: {what}" in line and "no exact NIR form" in line
        assert report.warnings == [f"export refused: {line}"]


@pytest.mark.nonnumeric
def test_conversion_and_qat_refuse_what_they_cannot_handle_in_one_line():
    resnet = _small("resnet19", shape=(1, 8, 8))
    for make in (ANNTwin, ConversionRateTwin):
        with pytest.raises(ValueError, match="handles layer chains .*; layer '3_block' is a residual block"):
            make(resnet)
    with pytest.raises(QATError, match="layer '3_block' is a residual block"):
        LoihiQAT(resnet, torch.rand(2, 1, 8, 8))
    with pytest.raises(QATError, match="layer '3_pool' is a max pool"):
        LoihiQAT(_small("vgg11", shape=(1, 8, 8), pool="max"), torch.rand(2, 1, 8, 8))


def test_snn_train_and_export_a_paper_model_on_digits(tmp_path):
    out = tmp_path / "vgg"
    res = run_cli("snn-train", "--model", "vgg11", "--pool", "max", "--width", "0.0625", "--dataset", "digits",
                  "--timesteps", "2", "--epochs", "1", "--limit", "64", "--batch-size", "128", "--no-progress",
                  "--json", "--out", str(out))
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["model"] == "vgg11" and 0.0 <= summary["test_accuracy"] <= 1.0
    model = torch.load(out / "model.pt", weights_only=True)
    assert model["config"]["pool"] == "max" and model["config"]["width"] == 0.0625
    exp = run_cli("snn-export", str(out / "model.pt"), "--target", "nir", "--probe", "16", "--json",
                  "--out", str(tmp_path / "exp"))
    assert exp.returncode == 0, exp.stderr
    report = json.loads((tmp_path / "exp" / "export_report.json").read_text())
    assert report["checks"]["round_trip"]["identical"]
    assert any("MaxPool2d over spikes" in n for n in report["notes"])
    # an IAND model: nothing to export, one line, and the report says why
    save(_small("sew-resnet18", shape=(1, 8, 8), sew="iand"), tmp_path / "iand.pt", meta={"dataset": "digits"})
    exp = run_cli("snn-export", str(tmp_path / "iand.pt"), "--target", "nir", "--out", str(tmp_path / "iand"))
    assert exp.returncode == 2
    line = exp.stderr.strip()
    assert "\n" not in line and "'3_block.iand': SEW IAND" in line
    report = json.loads((tmp_path / "iand" / "export_report.json").read_text())
    (warning,) = report["warnings"]
    assert warning.startswith("export refused: layer '3_block.iand'") and line.endswith(warning[16:])


@pytest.mark.slow  # the full-size VGG-11 (61M parameters, a 0.7 GB checkpoint): once per CI run is enough
def test_snn_train_vgg11_on_cifar10_files(tmp_path):
    """Issue 15's acceptance command, as written, on CIFAR-10 python batches in their released format: the
    full-size VGG-11 (no --width) trains one epoch and evaluates on the test batch."""
    from test_data import _cifar_dir

    (tmp_path / "data").mkdir()
    arrays = _cifar_dir(tmp_path / "data", nested=True)
    out = tmp_path / "run"
    res = run_cli("snn-train", "--model", "vgg11", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
                  "--epochs", "1", "--limit", "256", "--no-progress", "--json", "--out", str(out))
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["arch"] == "vgg11" and metrics["model"]["input_shape"] == list(CIFAR)
    assert metrics["n_train"] == len(arrays["train"][1]) and metrics["n_test"] == len(arrays["test"][1])
    assert metrics["augmentation"] == {"padding": 4, "flip": True}
    from snnkit.models import load

    assert sum(p.numel() for p in load(out / "model.pt").parameters()) == EXPECTED["vgg11"]

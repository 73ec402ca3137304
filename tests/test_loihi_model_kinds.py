"""Every kind of model snnkit trains maps exactly to Loihi 2: no lossy entry, and lava == loihi-emu bit for bit.

One small model per kind, trained briefly on digits the way ``snn-train`` does: each neuron model and reset, each
encoder, MLP / ConvNet / VGG, the robust ANN-to-SNN conversion (IF, reset by subtraction, calibrated
thresholds, a HYDRA mask) and every mask. Each is exported to NIR, quantised once, checked for lossy mappings and
emulated; all of them then run in one Lava worker, every layer's raster compared with the emulator's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import snnkit
from snnkit.deploy.inputs import dataset_input
from snnkit.deploy.loihi.emulator import LoihiEmulatorTarget
from snnkit.deploy.loihi.prepare import prepare_graph
from snnkit.export import to_nir
from snnkit.models import vgg_config
from conftest import NO_LAVA_REASON, lava_available

MLP = {"arch": "mlp", "hidden": [32], "timesteps": 6}
KINDS = {
    "mlp-lif": (MLP, {}),
    "mlp-lif-subtract": ({**MLP, "reset": "subtract"}, {}),
    "mlp-if": ({**MLP, "neuron": "if"}, {}),
    "mlp-if-subtract": ({**MLP, "neuron": "if", "reset": "subtract"}, {}),
    "mlp-learned-beta-threshold": ({**MLP, "learn_beta": True, "learn_threshold": True}, {}),
    "mlp-poisson": ({**MLP, "encoder": {"name": "poisson", "seed": 3}}, {}),
    "mlp-latency": ({**MLP, "encoder": {"name": "latency"}}, {}),
    "mlp-magnitude-90": (MLP, {"sparsity": 0.9, "prune": "magnitude"}),
    "mlp-hydra-90": (MLP, {"sparsity": 0.9, "prune": "hydra", "prune_epochs": 1}),
    "mlp-harp-90": (MLP, {"sparsity": 0.9, "prune": "harp", "prune_epochs": 1}),
    "convnet": ({"arch": "convnet", "channels": [4, 8], "fc": [16], "timesteps": 4}, {}),
    "vgg": ({"arch": "vgg", "vgg": vgg_config(3, 4), "fc": [16], "timesteps": 4}, {}),
    "converted-hydra-90": None,  # the conversion pipeline, below
}
SAMPLES = 6


def _train(name: str, out) -> "snnkit.models.SpikingModel":
    from snnkit.train import TrainConfig, train

    if KINDS[name] is None:
        from snnkit.train.conversion import ConversionConfig, convert_pipeline

        cfg = TrainConfig(dataset="digits", model={**MLP, "neuron": "if", "reset": "subtract",
                                                   "surrogate": "triangle:gamma=1"}, epochs=1, batch_size=128,
                          seed=0, limit=SAMPLES)
        conv = ConversionConfig(ann_epochs=1, ann_method="standard", prune="hydra", sparsity=0.9, prune_epochs=1,
                                ann_finetune_epochs=1, calibration_batches=2)
        convert_pipeline(cfg, conv, out, progress=False)
    else:
        model, extra = KINDS[name]
        train(TrainConfig(dataset="digits", model=model, epochs=1, batch_size=128, seed=0, limit=SAMPLES, **extra),
              out, progress=False)
    return snnkit.load(out / "model.pt")


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """name -> (graph, encoded test digits, quantised graph, emulator result with every layer recorded)."""
    torch.manual_seed(0)
    out = {}
    for name in KINDS:
        model = _train(name, tmp_path_factory.mktemp(name))
        graph = to_nir(model)
        data = dataset_input("digits", graph.metadata, tuple(model.config["input_shape"]), limit=SAMPLES)
        lg = prepare_graph(graph, data.x, source=name)
        emu = LoihiEmulatorTarget().run_quantised(lg, graph, data.x, record=True)
        out[name] = (graph, data, lg, emu)
    return out


@pytest.mark.parametrize("name", list(KINDS))
def test_every_trainable_kind_maps_without_loss(kinds, name):
    graph, data, lg, emu = kinds[name]
    assert lg.report["lossy"] == [], lg.report["lossy"]
    assert emu.info["warnings"] == []
    assert emu.total_spikes > 0, f"{name}: the emulated network is silent"
    if "subtract" in name or name.startswith("converted"):
        assert all(layer.reset == "subtract" for layer in lg.layers)
    if "90" in name:
        zero = sum(int((p.weight == 0).sum()) for p in lg.projections)
        assert zero / sum(p.weight.size for p in lg.projections) >= 0.9  # the mask survives quantisation


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
def test_every_trainable_kind_is_bit_identical_on_lava_and_the_emulator(kinds):
    from snnkit.deploy.lava.target import run_lava

    names = list(KINDS)
    results = run_lava([(kinds[n][2], kinds[n][2].input.encode(kinds[n][1].x)[0]) for n in names])
    for name, (rasters, _) in zip(names, results):
        _, _, lg, emu = kinds[name]
        for layer in lg.layers:
            r = rasters[layer.name].reshape(emu.records[layer.name].shape)
            np.testing.assert_array_equal(r, emu.records[layer.name], err_msg=f"{name}/{layer.name}")

"""Model builders: MLP, a small ConvNet, a VGG-style net and the seed papers' networks, from one plain-dict config.

The config is what ``model.pt`` stores beside the state dict, so a model is rebuilt from it exactly:

```
{"arch": "mlp" | "convnet" | "vgg" | "vgg11" | "vgg16" | "resnet19" | "sew-resnet18" | "sew-resnet34" | "wrn16-4",
 "input_shape": [1, 8, 8], "num_classes": 10, "timesteps": 8,
 "encoder": {"name": "direct"}, "neuron": "lif" | "if", "beta": 0.9, "threshold": 1.0, "reset": "zero",
 "surrogate": "atan:alpha=2", "learn_beta": false, "learn_threshold": false, "batchnorm": false, "dt": 1e-3,
 "logit_scale": 10.0, "masks": false,   # masks: true for pruned models (weight_mask buffers)
 "hidden": [512],                      # mlp
 "channels": [32, 64], "fc": [256],    # convnet: conv3x3 -> neuron -> avgpool2 per entry, then fc layers
 "vgg": [64, 64, "P", 128, "P"],       # vgg: conv3x3 widths, "P" = 2x2 pool, then a linear classifier
 "pool": "avg" | "max",                # vgg, vgg11, vgg16: the 2x2 pooling (default avg)
 "width": 1.0,                         # paper models: multiplier of every channel and hidden width
 "sew": "add" | "iand"}                # sew-resnet18/34: the connect function (default add)
```
``logit_scale`` is a fixed softmax temperature: logits = logit_scale x mean output spike rate, so their argmax
is the spike-count argmax. ``batchnorm`` defaults to true for every architecture but mlp.
Every hidden and the output layer are spiking; the output layer's spikes are the network's output.
The paper models (VGG-11/16, ResNet-19, SEW-ResNet-18/34, WRN-16-4) and the layout choices behind them are
described in :mod:`snnkit.models.paper`; the residual ones hold :class:`snnkit.nn.residual.Block` layers.
"""
from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from snnkit.models import paper
from snnkit.models.parts import Chain
from snnkit.models.spiking import SpikingModel
from snnkit.nn.encoders import build_encoder
from snnkit.nn.layers import Flatten

DEFAULTS = {
    "timesteps": 8,
    "encoder": {"name": "direct"},
    "neuron": "lif",
    "beta": 0.9,
    "threshold": 1.0,
    "reset": "zero",
    "surrogate": "atan:alpha=2",
    "learn_beta": False,
    "learn_threshold": False,
    "batchnorm": False,
    "dt": 1e-3,
    "logit_scale": 10.0,
}
ARCH_DEFAULTS = {
    "mlp": {"hidden": [512]},
    "convnet": {"channels": [32, 64], "fc": [256], "batchnorm": True},
    "vgg": {"batchnorm": True, "pool": "avg"},
    **paper.ARCH_DEFAULTS,
}
ARCHS = ("mlp", "convnet", "vgg", *paper.ARCHS)


def vgg_config(depth: int = 5, width: int = 32) -> list:
    """A VGG-style feature list: ``depth`` conv layers in stages of doubling width, a pool after each stage."""
    cfg: list = []
    stage_width, remaining = width, depth
    while remaining > 0:
        n = min(2, remaining)
        cfg += [stage_width] * n + ["P"]
        remaining -= n
        stage_width *= 2
    return cfg


def image_shape(arch: str, in_shape: tuple) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, H, W)``; ValueError for other ranks."""
    if len(in_shape) != 3:
        raise ValueError(f"{arch} needs image input [C, H, W], got input_shape {list(in_shape)}")
    return tuple(int(s) for s in in_shape)


def build(config: dict) -> SpikingModel:
    """Build a model from a config (missing keys take ``DEFAULTS`` and the architecture's defaults)."""
    arch = config.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; available: {', '.join(ARCHS)}")
    cfg = {**DEFAULTS, **ARCH_DEFAULTS[arch], **config}
    in_shape = tuple(cfg["input_shape"])
    n_cls = int(cfg["num_classes"])
    chain = Chain()
    if arch == "mlp":
        chain.add("flatten", Flatten())
        chain.dense(math.prod(in_shape), list(cfg["hidden"]), n_cls, cfg, cfg["batchnorm"])
    elif arch in paper.BUILDERS:
        paper.BUILDERS[arch](chain, cfg, image_shape(arch, in_shape), n_cls)
    else:
        features = ([*sum(([ch, "P"] for ch in cfg["channels"]), [])] if arch == "convnet"
                    else list(cfg.get("vgg") or vgg_config()))
        c, h, w = chain.conv_features(features, image_shape(arch, in_shape), cfg)
        chain.add("flatten", Flatten())
        chain.dense(c * h * w, list(cfg.get("fc", [])), n_cls, cfg, cfg["batchnorm"])

    encoder = build_encoder(cfg["encoder"], int(cfg["timesteps"]))
    model = SpikingModel(encoder, nn.Sequential(OrderedDict(chain.layers)), cfg)
    if cfg.get("masks"):  # pruned model (snnkit.train.sparsity): a 0/1 mask buffer per Linear/Conv2d weight
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.register_buffer("weight_mask", m.weight.detach().new_ones(m.weight.shape))
    return model

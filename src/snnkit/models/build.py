"""Model builders: MLP, a small ConvNet and a VGG-style net, all from one plain-dict config.

The config is what ``model.pt`` stores beside the state dict, so a model is rebuilt from it exactly:

```
{"arch": "mlp" | "convnet" | "vgg", "input_shape": [1, 8, 8], "num_classes": 10, "timesteps": 8,
 "encoder": {"name": "direct"}, "neuron": "lif" | "if", "beta": 0.9, "threshold": 1.0, "reset": "zero",
 "surrogate": "atan:alpha=2", "learn_beta": false, "learn_threshold": false, "batchnorm": false, "dt": 1e-3,
 "logit_scale": 10.0, "masks": false,   # masks: true for pruned models (weight_mask buffers)
 "hidden": [512],                      # mlp
 "channels": [32, 64], "fc": [256],    # convnet: conv3x3 -> neuron -> avgpool2 per entry, then fc layers
 "vgg": [64, 64, "P", 128, "P"]}       # vgg: conv3x3 widths, "P" = avgpool 2, then a linear classifier
```
``logit_scale`` is a fixed softmax temperature: logits = logit_scale x mean output spike rate, so their argmax
is the spike-count argmax. ``batchnorm`` defaults to true for convnet and vgg, false for mlp.
Every hidden and the output layer are spiking; the output layer's spikes are the network's output.
"""
from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from snnkit.models.spiking import SpikingModel
from snnkit.nn.encoders import build_encoder
from snnkit.nn.layers import AvgPool2d, BatchNormTT, Conv2d, Flatten
from snnkit.nn.neurons import IF, LIF

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
    "vgg": {"batchnorm": True},
}
ARCHS = ("mlp", "convnet", "vgg")


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


def _neuron(cfg: dict) -> nn.Module:
    common = dict(threshold=cfg["threshold"], reset=cfg["reset"], surrogate=cfg["surrogate"],
                  learn_threshold=cfg["learn_threshold"])
    if cfg["neuron"] == "lif":
        return LIF(beta=cfg["beta"], learn_beta=cfg["learn_beta"], **common)
    if cfg["neuron"] == "if":
        return IF(**common)
    raise ValueError(f"unknown neuron {cfg['neuron']!r} (lif, if)")


def build(config: dict) -> SpikingModel:
    """Build a model from a config (missing keys take ``DEFAULTS``)."""
    arch = config.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; available: {', '.join(ARCHS)}")
    cfg = {**DEFAULTS, **ARCH_DEFAULTS[arch], **config}
    in_shape = tuple(cfg["input_shape"])
    n_cls = int(cfg["num_classes"])
    layers: list[tuple[str, nn.Module]] = []

    def add(name: str, module: nn.Module) -> None:
        layers.append((f"{len(layers)}_{name}", module))

    def dense_stack(n_in: int, widths: list[int]) -> None:
        for w in widths:
            add("fc", nn.Linear(n_in, w))
            if cfg["batchnorm"]:
                add("bn", BatchNormTT(w))
            add(cfg["neuron"], _neuron(cfg))
            n_in = w
        add("fc", nn.Linear(n_in, n_cls))
        add(cfg["neuron"], _neuron(cfg))

    if arch == "mlp":
        add("flatten", Flatten())
        dense_stack(math.prod(in_shape), list(cfg["hidden"]))
    else:
        if len(in_shape) != 3:
            raise ValueError(f"{arch} needs image input [C, H, W], got input_shape {list(in_shape)}")
        c, h, w = in_shape
        features = ([*sum(([ch, "P"] for ch in cfg["channels"]), [])] if arch == "convnet"
                    else list(cfg.get("vgg") or vgg_config()))
        for item in features:
            if item == "P":
                if h < 2 or w < 2:
                    continue  # input too small for another pooling stage
                add("pool", AvgPool2d(2))
                h, w = h // 2, w // 2
                continue
            add("conv", Conv2d(c, int(item), 3, padding=1, bias=not cfg["batchnorm"]))
            if cfg["batchnorm"]:
                add("bn", BatchNormTT(int(item)))
            add(cfg["neuron"], _neuron(cfg))
            c = int(item)
        add("flatten", Flatten())
        dense_stack(c * h * w, list(cfg.get("fc", [])))

    encoder = build_encoder(cfg["encoder"], int(cfg["timesteps"]))
    model = SpikingModel(encoder, nn.Sequential(OrderedDict(layers)), cfg)
    if cfg.get("masks"):  # pruned model (snnkit.train.sparsity): a 0/1 mask buffer per Linear/Conv2d weight
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.register_buffer("weight_mask", m.weight.detach().new_ones(m.weight.shape))
    return model

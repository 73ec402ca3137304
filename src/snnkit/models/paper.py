"""The seed papers' networks: VGG-11/16, ResNet-19, SEW-ResNet-18/34 and WRN-16-4, CIFAR variants.

All take 32 x 32 images in the papers (3 x 3 stem, no stem pooling) and work on any ``[C, H, W]`` input here:
a pooling stage or stride-2 block whose map is already below 2 x 2 keeps the size (so the 8 x 8 ``digits``
set runs them). Config keys beyond ``snnkit.models.build``'s: ``width`` (multiplier of every channel and hidden
width, default 1 = the paper's), ``pool`` (``"avg"`` | ``"max"``, VGG only, default avg) and ``sew``
(``"add"`` | ``"iand"``, SEW-ResNet only, default add). ``batchnorm`` (default true) is tdBN-style BatchNorm
over batch and time (``BatchNormTT``) after every convolution, which then has no bias; without it the
convolutions get biases.

Choices where the papers leave room, and their sources:

- **VGG-11** is the network of SNN-RAT (Ding et al., NeurIPS 2022; github.com/putshua/SNN-RAT, models/VGG.py),
  whose code the robust-SNN seeds (MPD-SGR, TMI) compare against on CIFAR: conv widths
  64, P, 128, 256, P, 512, 512, 512, P, 512, 512 (8 convolutions, 3 pools, so a 4 x 4 map for 32 x 32 input),
  then Linear(512*4*4, 4096) -> Linear(4096, 4096) -> Linear(4096, classes). (The torchvision/ImageNet VGG-11
  layout 64, P, 128, P, 256, 256, P, 512, 512, P, 512, 512, P differs; this one is what the seeds ran.)
- **VGG-16**: the standard 13 convolutions in 5 stages (64x2, 128x2, 256x3, 512x3, 512x3, a pool after each),
  then the same 4096-4096 classifier on the 1 x 1 x 512 map (SNN-RAT's vgg16).
- **ResNet-19** (tdBN, Zheng et al., AAAI 2021, Table of architectures): conv3x3 128; 3 blocks of 128, 3 of 256
  (first stride 2), 2 of 512 (first stride 2); global average pool; FC 256; FC classes (12,697,994 parameters
  here for CIFAR-10; the paper prints no count). Blocks
  conv-BN-neuron-conv-BN, the shortcut added to the second BN's output *before* the block's last neuron;
  a 1x1 conv + BN projection where the shape changes.
- **SEW-ResNet-18/34** (Fang et al., NeurIPS 2021; github.com/fangwei123456/Spike-Element-Wise-ResNet): the
  ResNet-18/34 stage plan ([2, 2, 2, 2] / [3, 4, 6, 3] blocks of 64, 128, 256, 512) with the CIFAR stem
  (conv3x3 64 -> BN -> neuron, no max pool, as in the CIFAR ResNets of the robust-SNN literature); blocks
  conv-BN-neuron-conv-BN-neuron whose output spikes ``A`` meet the shortcut's spikes ``S`` in the connect
  function, ADD ``A + S`` or IAND ``(1 - A) S``; the downsampling shortcut is 1x1 conv -> BN -> neuron
  (SEW's spiking downsample); global average pool; FC classes.
- **WRN-16-4** (Zagoruyko & Komodakis 2016: depth 16, widen factor 4, ~2.7M parameters): conv3x3 16, then
  2 blocks each of 64, 128 (first stride 2), 256 (first stride 2), global average pool, FC classes. SNN-RAT's
  WRN is pre-activation (BN -> neuron -> conv); here the blocks are the tdBN form above (BN directly after
  each conv, shortcut into the last neuron), so every BN folds into its conv and the network exports to NIR
  exactly. The convolutions are the same; the BatchNorms sit after the convolutions instead of before them (so
  their sizes differ slightly: 2,749,786 parameters here for CIFAR-10).

Every network ends in a spiking output layer (snnkit's convention: logits are the scaled output spike rate);
in the papers the last FC is read out without a neuron. Neuron parameters (``neuron``, ``beta``,
``threshold``...) come from the config as for every snnkit model, not per paper.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from snnkit.models.parts import Chain, neuron
from snnkit.nn.layers import AvgPool2d, BatchNormTT, Conv2d, Flatten
from snnkit.nn.residual import BLOCK_INPUT, Block, IAnd

VGG = {
    "vgg11": [64, "P", 128, 256, "P", 512, 512, 512, "P", 512, 512],
    "vgg16": [64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"],
}
VGG_FC = [4096, 4096]
"""Conv widths (``"P"``: 2 x 2 pool) and hidden classifier widths of the VGGs (module docstring)."""

RESNETS = {
    # arch: (stem width, [(width, blocks, first stride)], hidden FC widths, block form)
    "resnet19": (128, [(128, 3, 1), (256, 3, 2), (512, 2, 2)], [256], "tdbn"),
    "sew-resnet18": (64, [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)], [], "sew"),
    "sew-resnet34": (64, [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], [], "sew"),
    "wrn16-4": (16, [(64, 2, 1), (128, 2, 2), (256, 2, 2)], [], "tdbn"),
}
"""The residual networks' plans (module docstring)."""

CONNECTS = ("add", "iand")
ARCHS = (*VGG, *RESNETS)
ARCH_DEFAULTS = {
    **{a: {"batchnorm": True, "width": 1.0, "pool": "avg"} for a in VGG},
    **{a: {"batchnorm": True, "width": 1.0} for a in RESNETS},
    **{a: {"batchnorm": True, "width": 1.0, "sew": "add"} for a, plan in RESNETS.items() if plan[3] == "sew"},
}


def scaled(width: int, cfg: dict) -> int:
    """A paper width times ``cfg["width"]``, at least 1."""
    factor = float(cfg.get("width", 1.0))
    if not factor > 0:
        raise ValueError(f"width must be positive, not {factor}")
    return max(1, round(width * factor))


def _vgg(arch: str) -> Callable:
    def build(chain: Chain, cfg: dict, shape: tuple[int, int, int], n_cls: int) -> None:
        features = [f if f == "P" else scaled(f, cfg) for f in VGG[arch]]
        c, h, w = chain.conv_features(features, shape, cfg)
        chain.add("flatten", Flatten())
        chain.dense(c * h * w, [scaled(f, cfg) for f in VGG_FC], n_cls, cfg, batchnorm=False)
    return build


def _conv_bn(name: str, c_in: int, c_out: int, k: int, stride: int, cfg: dict, source: str) -> list:
    """``(name, module, sources)`` of a k x k conv and, with ``batchnorm``, its BatchNormTT (named ``bn...``)."""
    bn = cfg["batchnorm"]
    layers = [(f"conv{name}", Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=not bn), [source])]
    if bn:
        layers.append((f"bn{name}", BatchNormTT(c_out), [f"conv{name}"]))
    return layers


def residual_block(c_in: int, c_out: int, stride: int, cfg: dict, form: str) -> Block:
    """One basic block (two 3x3 convs) of the ``"tdbn"`` or ``"sew"`` form (module docstring)."""
    kind = cfg["neuron"]
    layers = _conv_bn("1", c_in, c_out, 3, stride, cfg, BLOCK_INPUT)
    layers.append((f"{kind}1", neuron(cfg), [layers[-1][0]]))
    layers += _conv_bn("2", c_out, c_out, 3, 1, cfg, f"{kind}1")
    branch = layers[-1][0]
    shortcut = BLOCK_INPUT
    if stride != 1 or c_in != c_out:
        layers += _conv_bn("_down", c_in, c_out, 1, stride, cfg, BLOCK_INPUT)
        shortcut = layers[-1][0]
        if form == "sew":
            layers.append((f"{kind}_down", neuron(cfg), [shortcut]))
            shortcut = f"{kind}_down"
    if form == "tdbn":
        layers.append((f"{kind}2", neuron(cfg), [branch, shortcut]))
        return Block(layers, [f"{kind}2"])
    layers.append((f"{kind}2", neuron(cfg), [branch]))
    connect = cfg.get("sew", "add")
    if connect == "add":
        return Block(layers, [f"{kind}2", shortcut])
    if connect == "iand":
        layers.append(("iand", IAnd(), [f"{kind}2", shortcut]))
        return Block(layers, ["iand"])
    raise ValueError(f"unknown SEW connect function {connect!r} ({', '.join(CONNECTS)})")


def _resnet(arch: str) -> Callable:
    stem, stages, fc, form = RESNETS[arch]

    def build(chain: Chain, cfg: dict, shape: tuple[int, int, int], n_cls: int) -> None:
        c, h, w = shape
        width = scaled(stem, cfg)
        chain.add("conv", Conv2d(c, width, 3, padding=1, bias=not cfg["batchnorm"]))
        if cfg["batchnorm"]:
            chain.add("bn", BatchNormTT(width))
        chain.add(cfg["neuron"], neuron(cfg))
        c = width
        for stage_width, blocks, first_stride in stages:
            for i in range(blocks):
                stride = first_stride if i == 0 and h >= 2 and w >= 2 else 1
                width = scaled(stage_width, cfg)
                chain.add("block", residual_block(c, width, stride, cfg, form))
                c, h, w = width, -(-h // stride), -(-w // stride)
        if h * w > 1:
            chain.add("pool", AvgPool2d((h, w)))  # global average pool
        chain.add("flatten", Flatten())
        chain.dense(c, [scaled(f, cfg) for f in fc], n_cls, cfg, batchnorm=False)
    return build


BUILDERS: dict[str, Callable[[Chain, dict, tuple[int, int, int], int], None]] = {
    **{a: _vgg(a) for a in VGG}, **{a: _resnet(a) for a in RESNETS}}
"""arch -> ``build(chain, cfg, (C, H, W), classes)``, adding the network's layers to ``chain``."""

"""Layer helpers the model builders share: the neuron a config names, and conv / dense stacks in the naming
every builder uses (``"<index>_<kind>"``, the names ``model.pt`` state dicts and NIR nodes carry)."""
from __future__ import annotations

from torch import nn

from snnkit.nn.layers import AvgPool2d, BatchNormTT, Conv2d, MaxPool2d
from snnkit.nn.neurons import IF, LIF

POOLS = {"avg": AvgPool2d, "max": MaxPool2d}
"""``config["pool"]`` -> the 2 x 2 pooling layer of the VGG feature stacks."""


def neuron(cfg: dict) -> nn.Module:
    """The spiking layer of ``cfg`` (``neuron``: lif | if, with its threshold, reset, surrogate...)."""
    common = dict(threshold=cfg["threshold"], reset=cfg["reset"], surrogate=cfg["surrogate"],
                  learn_threshold=cfg["learn_threshold"])
    if cfg["neuron"] == "lif":
        return LIF(beta=cfg["beta"], learn_beta=cfg["learn_beta"], **common)
    if cfg["neuron"] == "if":
        return IF(**common)
    raise ValueError(f"unknown neuron {cfg['neuron']!r} (lif, if)")


def pool_layer(cfg: dict) -> type:
    """The pooling class of ``cfg["pool"]`` (default avg)."""
    kind = cfg.get("pool", "avg")
    if kind not in POOLS:
        raise ValueError(f"unknown pool {kind!r} ({', '.join(POOLS)})")
    return POOLS[kind]


class Chain:
    """Named layers in order: ``add(kind, module)`` names the layer ``"<index>_<kind>"``."""

    def __init__(self) -> None:
        self.layers: list[tuple[str, nn.Module]] = []

    def add(self, kind: str, module: nn.Module) -> None:
        self.layers.append((f"{len(self.layers)}_{kind}", module))

    def conv_features(self, features: list, shape: tuple[int, int, int], cfg: dict) -> tuple[int, int, int]:
        """conv3x3 (-> BatchNormTT) -> neuron per width in ``features``, a 2 x 2 pool per ``"P"`` (skipped once
        the map is below 2 x 2). Returns the output shape ``(C, H, W)``."""
        c, h, w = shape
        pool = pool_layer(cfg)
        for item in features:
            if item == "P":
                if h < 2 or w < 2:
                    continue  # input too small for another pooling stage
                self.add("pool", pool(2))
                h, w = h // 2, w // 2
                continue
            self.add("conv", Conv2d(c, int(item), 3, padding=1, bias=not cfg["batchnorm"]))
            if cfg["batchnorm"]:
                self.add("bn", BatchNormTT(int(item)))
            self.add(cfg["neuron"], neuron(cfg))
            c = int(item)
        return c, h, w

    def dense(self, n_in: int, widths: list[int], n_out: int, cfg: dict, batchnorm: bool) -> None:
        """Linear (-> BatchNormTT) -> neuron per hidden width, then Linear -> neuron to ``n_out`` spiking outputs."""
        for w in widths:
            self.add("fc", nn.Linear(n_in, w))
            if batchnorm:
                self.add("bn", BatchNormTT(w))
            self.add(cfg["neuron"], neuron(cfg))
            n_in = w
        self.add("fc", nn.Linear(n_in, n_out))
        self.add(cfg["neuron"], neuron(cfg))

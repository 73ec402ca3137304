"""Robust ANN -> sparse SNN conversion (seed 001): one pipeline, ``snn-train --pipeline convert``.

1. **Robust ANN**: the SNN's non-spiking twin (:class:`ANNTwin`: the same Linear/Conv/BatchNorm/pool modules,
   every hidden spiking layer replaced by a ReLU and the output spiking layer by the identity) is trained with
   a robust method (``ann_method``, TRADES by default).
2. **Robust pruning** (when ``sparsity > 0``): HYDRA / HARP scores (or magnitude) on the ANN with the same
   robust loss, then the sparse ANN is fine-tuned with its masks frozen (``snnkit.train.sparsity``).
3. **Weight transfer and thresholds**: for every spiking layer ``l`` the threshold is
   ``theta_l = threshold_scale x (the percentile-th percentile of the ANN's pre-activations of layer l)``,
   the pre-activation being the input of the ReLU (or of the output identity); the percentile is taken per
   calibration batch and the largest over the batches is kept (defaults 0.3 and 99.7). A spike (value 1)
   of layer ``l-1`` stands for an activation ``theta_{l-1}``, so the weights of the connection layers between
   spiking layers ``l-1`` and ``l`` are multiplied by ``theta_{l-1}`` (``theta_0 = 1`` for the input) and the
   biases are kept: the rate of layer ``l`` then approximates ``clip(a_l / theta_l, 0, 1)`` for the ANN's
   activation ``a_l`` (data-based normalisation; Diehl et al. 2015, Rueckauer et al. 2017). Masks move with
   the weights; pruned weights stay exact zeros.
4. **SNN adversarial fine-tuning**: the converted SNN (``converted.pt``) is trained by the ordinary trainer
   (BPTT through the surrogate, the run's ``--method``/``--reg``) with the masks frozen; this writes
   ``model.pt`` and ``metrics.json``. ``conversion.json`` records every phase.

The SNN's neuron settings come from the model config; rate conversion wants non-leaky neurons with reset by
subtraction and the seed uses a triangle surrogate: ``--neuron if --reset subtract --surrogate
triangle:gamma=1``.
"""
from __future__ import annotations

import copy
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snnkit import data as datasets
from snnkit.models import SpikingModel, build, save
from snnkit.models.spiking import check_chain
from snnkit.atomic import atomic_write
from snnkit.nn.neurons import SpikingLayer
from snnkit.outdir import writing
from snnkit.train import sparsity as sp
from snnkit.train.objectives import build_method
from snnkit.train.trainer import TrainConfig, evaluate, train


CONVERSION_NEURONS = {"neuron": "if", "reset": "subtract", "surrogate": "triangle:gamma=1"}
"""The SNN's neuron settings seed 001 converts into (model-config keys): non-leaky IF neurons with reset by
subtraction (the rate code conversion assumes) and the triangle surrogate of its BPTT fine-tuning."""


@dataclass
class ConversionConfig:
    """The ANN and conversion phases (the SNN fine-tuning phase is the run's :class:`TrainConfig`)."""

    ann_epochs: int = 30
    ann_method: str = "trades"
    ann_lr: float = 1e-3
    prune: str = "hydra"
    sparsity: float = 0.9
    prune_epochs: int = 10
    prune_lr: float = 0.01
    ann_finetune_epochs: int = 10
    percentile: float = 99.7
    threshold_scale: float = 0.3
    calibration_batches: int | None = None  # None: the whole training set

    def __post_init__(self):
        if not 0 < self.percentile <= 100:
            raise ValueError(f"conversion: percentile must be in (0, 100], not {self.percentile}")
        if not self.threshold_scale > 0:
            raise ValueError(f"conversion: threshold_scale must be > 0, not {self.threshold_scale}")
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"conversion: sparsity must be in [0, 1), not {self.sparsity}")
        if self.prune not in sp.PRUNERS:
            raise ValueError(f"conversion: unknown pruning method {self.prune!r}; available: {', '.join(sp.PRUNERS)}")


class ANNTwin(nn.Module):
    """The non-spiking twin of a :class:`SpikingModel`: its connection modules (deep copies, same names, so the
    state-dict keys of weights match) with ReLU for every hidden spiking layer and the identity for the output
    layer. ``forward(x [B, ...]) -> [B, C]`` logits (the layers run on a single time step)."""

    def __init__(self, snn: SpikingModel):
        super().__init__()
        spiking = list(snn.spiking_layers())
        if not spiking:
            raise ValueError("ANNTwin: the model has no spiking layer")
        check_chain(snn, "conversion")
        modules = []
        for name, m in snn.layers.named_children():
            if isinstance(m, SpikingLayer):
                modules.append((name, nn.Identity() if name == spiking[-1] else nn.ReLU()))
            else:
                modules.append((name, copy.deepcopy(m)))
        self.layers = nn.Sequential(OrderedDict(modules))
        self.activation_names = spiking

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.unsqueeze(1)).squeeze(1)


class RateTwin(nn.Module):
    """The conversion read backwards: a differentiable rate model of a :class:`SpikingModel`, for transfer
    attacks (the honest protocol's "ANN twin").

    It shares the SNN's modules (not copies) and runs them on one step, replacing each hidden spiking layer by
    its rate ``clamp(I / theta, 0, 1)`` (exact in the limit of many steps for IF neurons with reset by
    subtraction and a constant input current ``I``; a rough stand-in for leaky or reset-to-zero neurons) and the
    output layer by ``I / theta`` (unclamped, so its gradient never saturates). ``forward(x) -> [B, C]``
    logits, ``logit_scale`` times that output rate, like the SNN's own.
    """

    def __init__(self, snn: SpikingModel):
        super().__init__()
        check_chain(snn, "the conversion's rate twin")
        self.snn = snn
        self.output_name = list(snn.spiking_layers())[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1)
        for name, m in self.snn.layers.named_children():
            if isinstance(m, SpikingLayer):
                h = h / m.threshold
                if name != self.output_name:
                    h = h.clamp(0.0, 1.0)
            else:
                h = m(h)
        return h.squeeze(1) * self.snn.logit_scale


@torch.no_grad()
def calibrate_thresholds(ann: ANNTwin, x: torch.Tensor, *, percentile: float = 99.7, scale: float = 0.3,
                         batch_size: int = 64, max_batches: int | None = None) -> dict[str, float]:
    """``{spiking layer name: scale x max over batches of the percentile of its pre-activations}``.

    x: calibration inputs ``[N, ...]`` in [0, 1], taken in order in batches of ``batch_size`` (at most
    ``max_batches``). The percentile uses linear interpolation (``numpy.percentile``) over every pre-activation
    value of the batch (all samples, neurons and positions).
    """
    device = next(ann.parameters()).device
    acts = {n: getattr(ann.layers, n) for n in ann.activation_names}
    best: dict[str, float] = {}
    current: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: current.__setitem__(n, inp[0]))
             for n, m in acts.items()]
    was_training = ann.training
    ann.eval()
    try:
        for i, start in enumerate(range(0, len(x), batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            ann(x[start:start + batch_size].to(device))
            for n, z in current.items():
                value = float(np.percentile(z.detach().cpu().double().numpy(), percentile))
                best[n] = max(best.get(n, -np.inf), value)
    finally:
        for h in hooks:
            h.remove()
        ann.train(was_training)
    bad = [n for n, v in best.items() if not v > 0]
    if bad:
        raise ValueError(f"conversion: the {percentile}th percentile of the pre-activations of {', '.join(bad)} "
                         "is not positive (dead layer); no threshold can be set")
    return {n: scale * v for n, v in best.items()}


@torch.no_grad()
def transfer(ann: ANNTwin, snn: SpikingModel, thresholds: dict[str, float]) -> SpikingModel:
    """Copy the ANN's weights into ``snn`` (in place) with thresholds ``thresholds`` (see module doc, step 3).

    Masks, when the ANN has them, are installed on the SNN (``"masks": true`` in its config).
    """
    ann_layers = dict(ann.layers.named_children())
    if sp.has_masks(ann):
        sp.attach_masks(snn)
    prev_theta = 1.0
    for name, m in snn.layers.named_children():
        if isinstance(m, SpikingLayer):
            theta = thresholds[name]
            m.threshold.fill_(theta)
            prev_theta = theta
            continue
        source = ann_layers[name]
        state = {k: v.clone() for k, v in source.state_dict().items()}
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            state["weight"] = state["weight"] * prev_theta
        m.load_state_dict(state)
    sp.apply_masks(snn)
    return snn


def _robust_loss(ann: ANNTwin, method_spec: str):
    """``(loss_fn(xb, yb, epoch), after_step())`` of the robust method ``method_spec`` on ``ann``: its loss, and
    after every optimiser step its own hook (e.g. the SNN-RAT retraction) then the frozen masks."""
    method = build_method(method_spec)

    def loss_fn(xb, yb, _epoch=0):
        return method(ann, xb, yb)[0]

    def after_step():
        hook = getattr(method, "after_step", None)
        if hook is not None:
            hook(ann)
        sp.apply_masks(ann)

    return loss_fn, after_step


def train_ann(ann: ANNTwin, method: str, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
              batch_size: int, generator: torch.Generator) -> list[dict]:
    """Phase 1 (and the fine-tuning of phase 2): ``epochs`` of Adam at ``lr`` on the robust ``method`` (a
    ``--method`` spec such as ``"trades:beta=6,eps=0.1"``) over ``x [N, ...]``, ``y [N]`` in shuffled batches
    drawn from ``generator``; masks the ANN has stay frozen. Returns one record per epoch (loss, seconds)."""
    loss_fn, after_step = _robust_loss(ann, method)
    return sp.run_epochs(ann, list(ann.parameters()), loss_fn, x, y, epochs=epochs, lr=lr, after_step=after_step,
                         batch_size=batch_size, generator=generator)


def prune_ann(ann: ANNTwin, method: str, prune: str, sparsity: float, x: torch.Tensor, y: torch.Tensor, *,
              epochs: int, lr: float, batch_size: int, generator: torch.Generator) -> list[dict]:
    """Phase 2: choose masks at ``sparsity`` with ``prune`` (``hydra``, ``harp``, ``magnitude``;
    :func:`snnkit.train.sparsity.learn_masks`) on the robust ``method``'s loss and install them, frozen.
    Returns the score training's per-epoch records."""
    loss_fn, _ = _robust_loss(ann, method)
    return sp.learn_masks(ann, prune, sparsity, loss_fn, x, y, epochs=epochs, lr=lr, batch_size=batch_size,
                          generator=generator)[1]


def convert_pipeline(cfg: TrainConfig, conv: ConversionConfig, out_dir: "str | Path", *,
                     progress: bool = True) -> dict:
    """Run the four phases (module doc) and write ``converted.pt``, ``conversion.json``, then ``model.pt`` and
    ``metrics.json`` of the fine-tuned SNN into ``out_dir``. ``cfg`` is the SNN fine-tuning run (its model
    config, method, regularisers, epochs, seed); ``cfg.init`` and ``cfg.sparsity`` must be unset (the pipeline
    sets them). Returns the fine-tuned SNN's metrics with the conversion record under ``"conversion"``."""
    if cfg.init or cfg.sparsity:
        raise ValueError("convert pipeline: give the sparsity in the conversion config, not init/sparsity in the "
                         "training config")
    with writing(out_dir) as out:
        return _convert(cfg, conv, out, progress)


def _convert(cfg: TrainConfig, conv: ConversionConfig, out: Path, progress: bool) -> dict:
    info = datasets.info(cfg.dataset)
    x_train, y_train = datasets.load(cfg.dataset, "train", data_dir=cfg.data_dir)
    x_test, y_test = datasets.load(cfg.dataset, "test", limit=cfg.limit, data_dir=cfg.data_dir)
    torch.manual_seed(cfg.seed)
    snn = build({"input_shape": list(info.input_shape), "num_classes": info.num_classes, **cfg.model})
    ann = ANNTwin(snn).to(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    record: dict = {"conversion_config": asdict(conv)}

    def phase(name, fn):
        t0 = time.perf_counter()
        history = fn()
        record[name] = {"test_accuracy": evaluate(ann, x_test, y_test), "time_s": time.perf_counter() - t0,
                        "history": history}
        if progress:
            print(f"convert: {name}: ANN test accuracy {record[name]['test_accuracy']:.4f} "
                  f"({record[name]['time_s']:.1f} s)", flush=True)

    common = dict(batch_size=cfg.batch_size, generator=gen)
    phase("ann_train", lambda: train_ann(ann, conv.ann_method, x_train, y_train, epochs=conv.ann_epochs,
                                         lr=conv.ann_lr, **common))
    if conv.sparsity > 0:
        phase("ann_prune", lambda: prune_ann(ann, conv.ann_method, conv.prune, conv.sparsity, x_train, y_train,
                                             epochs=conv.prune_epochs, lr=conv.prune_lr, **common))
        if conv.ann_finetune_epochs > 0:
            phase("ann_finetune", lambda: train_ann(ann, conv.ann_method, x_train, y_train,
                                                    epochs=conv.ann_finetune_epochs, lr=conv.ann_lr, **common))

    thresholds = calibrate_thresholds(ann, x_train, percentile=conv.percentile, scale=conv.threshold_scale,
                                      batch_size=cfg.batch_size, max_batches=conv.calibration_batches)
    snn = transfer(ann.cpu(), snn, thresholds)
    record["thresholds"] = thresholds
    record["converted_test_accuracy"] = evaluate(snn, x_test, y_test)
    record["weight_sparsity"] = sp.weight_sparsity(snn)
    save(snn, out / "converted.pt", meta={"dataset": cfg.dataset, "converted_from": "ann",
                                          "test_accuracy": record["converted_test_accuracy"]})
    if progress:
        print(f"convert: converted SNN test accuracy {record['converted_test_accuracy']:.4f}", flush=True)
    atomic_write(out / "conversion.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
    metrics = train(replace(cfg, init=str(out / "converted.pt")), out, progress=progress)
    return {**metrics, "conversion": record}

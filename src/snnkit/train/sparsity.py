"""Sparse connectivity: weight masks that are learned once, then frozen (``snn-train --sparsity S --prune P``).

A mask is a buffer ``weight_mask`` (same shape as ``weight``, 1 = kept, 0 = pruned) on every ``nn.Linear`` and
``nn.Conv2d`` of a model. ``weight`` itself is kept exactly zero where the mask is zero (re-applied after every
optimiser step by :func:`apply_masks`), so the state dict, ``model.pt`` and every exporter see exact zeros.
The model config records ``"masks": true``, so ``snnkit.models.build`` recreates the buffers and a saved model
loads back with its masks. ``sparsity`` is the fraction of weights set to zero (0.9 keeps 10 %); biases are
never pruned.

Ways to choose the mask (``prune``):

- ``magnitude``: per layer, keep the largest ``|w|`` (uniform sparsity across layers).
- ``hydra`` (Sehwag et al. 2020): per-layer importance scores ``s`` (initialised to
  ``sqrt(6 / fan_in) * w / max|w|``) are trained with the weights frozen; the forward uses
  ``w * topk(|s|)`` with the top-k fraction ``1 - S`` of each layer, and the backward passes the gradient of
  the mask straight through to the scores. Uniform per-layer sparsity.
- ``harp`` (Zhao et al. 2023): HYDRA's scores plus a learned keep rate per layer,
  ``k_l = sigmoid(r_l) (1 - k_min) + k_min`` with ``k_min = 0.1 (1 - S)``, trained by the straight-through
  gradient (the sum of the mask's gradient over the layer) and the penalty
  ``gamma (epoch + 1) max(sum_l n_l k_l / (K sum_l n_l) - 1, 0)`` with ``K = 1 - S``; the layers end with
  different sparsities. At the end the rates are rescaled by one common factor (capped at 1) so that the
  global keep fraction is exactly ``K``, keeping their learned proportions.

During score training the loss is the run's own objective (method + regularisers), so a robust loss (PGD-AT,
TRADES) gives robustness-aware masks.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

MASK = "weight_mask"
PRUNERS = ("magnitude", "hydra", "harp")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def prunable(model: nn.Module) -> dict[str, nn.Module]:
    """``{qualified name: module}`` for every Linear and Conv2d (the layers that get a mask)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def has_masks(model: nn.Module) -> bool:
    return any(hasattr(m, MASK) for m in prunable(model).values())


def attach_masks(model: nn.Module) -> None:
    """Give every prunable layer a ``weight_mask`` buffer of ones (if it has none) and record ``"masks": true``
    in ``model.config`` (when the model has one)."""
    for m in prunable(model).values():
        if not hasattr(m, MASK):
            m.register_buffer(MASK, torch.ones_like(m.weight, requires_grad=False))
    if isinstance(getattr(model, "config", None), dict):
        model.config["masks"] = True


def apply_masks(model: nn.Module) -> None:
    """``weight *= weight_mask`` in place for every masked layer (after each optimiser step, after a load)."""
    with torch.no_grad():
        for m in prunable(model).values():
            mask = getattr(m, MASK, None)
            if mask is not None:
                m.weight.mul_(mask)


def set_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Install ``masks`` (name -> 0/1 tensor shaped like the weight) and zero the pruned weights."""
    attach_masks(model)
    layers = prunable(model)
    for name, mask in masks.items():
        if name not in layers:
            raise ValueError(f"set_masks: model has no prunable layer {name!r}")
        getattr(layers[name], MASK).copy_(mask.to(layers[name].weight.dtype))
    apply_masks(model)


def weight_sparsity(model: nn.Module) -> dict:
    """Fraction of exactly-zero weights: ``{"total": s, "layers": {name: s}}`` over every Linear/Conv2d."""
    layers, zeros, total = {}, 0, 0
    for name, m in prunable(model).items():
        z, n = int((m.weight == 0).sum()), m.weight.numel()
        layers[name] = z / n
        zeros, total = zeros + z, total + n
    return {"total": zeros / max(total, 1), "layers": layers}


def keep_count(numel: int, keep: float) -> int:
    """Number of weights kept for a keep fraction: at most ``keep * numel``, so a layer is at least as sparse as
    asked (``1 - 0.9`` is a hair under 0.1, hence the relative slack), and at least one per layer."""
    return min(numel, max(1, math.floor(keep * numel * (1 + 1e-9))))


def topk_mask(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """0/1 mask (float, shaped like ``scores``) with ones at the ``keep`` fraction of largest entries."""
    k = keep_count(scores.numel(), keep)
    flat = torch.zeros(scores.numel(), dtype=scores.dtype, device=scores.device)
    flat[scores.flatten().topk(k).indices] = 1.0
    return flat.view_as(scores)


def _check_sparsity(sparsity: float) -> float:
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1) (fraction of weights pruned), not {sparsity}")
    return float(sparsity)


def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Per layer, keep the ``1 - sparsity`` fraction of largest ``|w|``."""
    keep = 1 - _check_sparsity(sparsity)
    return {name: topk_mask(m.weight.detach().abs(), keep) for name, m in prunable(model).items()}


class _TopK(torch.autograd.Function):
    """Forward: top-``k`` mask of ``scores`` (``k`` a 0-d tensor, fraction kept). Backward: straight through to
    the scores; the gradient of ``k`` is the sum of the mask's gradient (HARP)."""

    @staticmethod
    def forward(ctx, scores, keep):
        return topk_mask(scores, float(keep))

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.sum().reshape(())


class ScoreMask(nn.Module):
    """Parametrisation ``weight -> weight * topk(|scores|, keep)``; ``keep`` fixed (HYDRA) or learned (HARP)."""

    def __init__(self, weight: torch.Tensor, keep: float, learn_rate: bool, k_min: float):
        super().__init__()
        fan_in = weight[0].numel()
        w = weight.detach()
        self.scores = nn.Parameter(math.sqrt(6.0 / fan_in) * w / w.abs().max().clamp_min(1e-12))
        self.k_min = float(k_min)
        self.learn_rate = learn_rate
        self.fixed_keep = float(keep)
        start = (keep - k_min) / (1 - k_min)  # sigmoid(r) giving k = keep at the start
        start = min(max(start, 1e-4), 1 - 1e-4)
        self.rate_logit = nn.Parameter(torch.tensor(math.log(start / (1 - start))), requires_grad=learn_rate)

    def keep(self) -> torch.Tensor:
        if not self.learn_rate:
            return torch.tensor(self.fixed_keep)
        return torch.sigmoid(self.rate_logit) * (1 - self.k_min) + self.k_min

    def mask(self) -> torch.Tensor:
        return _TopK.apply(self.scores.abs(), self.keep())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask()


def _harp_penalty(masks: dict[str, ScoreMask], target_keep: float, sizes: dict[str, int]) -> torch.Tensor:
    total = sum(sizes.values())
    rate = sum(sizes[n] * pm.keep() for n, pm in masks.items()) / total
    return torch.clamp(rate / target_keep - 1.0, min=0.0)


def _rescaled_rates(rates: dict[str, float], sizes: dict[str, int], target_keep: float) -> dict[str, float]:
    """Common factor ``c`` (bisection) with ``sum_l n_l min(1, c k_l) = K sum_l n_l``; returns ``min(1, c k_l)``."""
    total = sum(sizes.values())

    def kept(c: float) -> float:
        return sum(sizes[n] * min(1.0, c * r) for n, r in rates.items()) / total

    lo, hi = 0.0, 1.0 / max(min(rates.values()), 1e-12)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) < target_keep else (lo, mid)
    return {n: min(1.0, hi * r) for n, r in rates.items()}


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterable[torch.Tensor]:
    """Shuffled index batches over ``n`` samples."""
    perm = torch.randperm(n, generator=generator)
    for i in range(0, n, batch_size):
        yield perm[i:i + batch_size]


def run_epochs(model: nn.Module, params: list[nn.Parameter],
               loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch_size: int,
               generator: torch.Generator, optimizer: str = "adam",
               after_step: Callable[[], None] | None = None) -> list[dict]:
    """A plain training loop: ``epochs`` passes over ``(x, y)`` in shuffled batches minimising
    ``loss_fn(xb, yb, epoch)`` over ``params`` (Adam, or SGD with momentum 0.9; cosine schedule).

    ``after_step()`` runs after every optimiser step. Returns one record per epoch (mean loss, seconds).
    """
    if not params:
        raise ValueError("run_epochs: nothing to train")
    device = params[0].device
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=0.9))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    history = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for idx in batches(len(x), batch_size, generator):
            loss = loss_fn(x[idx].to(device), y[idx].to(device), epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        history.append({"epoch": epoch + 1, "loss": total / len(x), "time_s": time.perf_counter() - t0})
    return history


def learn_masks(model: nn.Module, method: str, sparsity: float, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                *, epochs: int, batch_size: int, generator: torch.Generator, lr: float = 0.01,
                gamma: float = 1.0) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Choose masks for ``model`` at ``sparsity`` with ``method`` (``PRUNERS``) and install them.

    loss_fn(xb, yb) -> scalar: the loss the scores are trained on (weights and biases frozen);
    epochs: score-training epochs (for ``magnitude``: dense training epochs before pruning, 0 = prune the
    current weights); lr: Adam learning rate of the scores and rates (of the weights for ``magnitude``);
    gamma: HARP's rate-penalty weight. Returns ``(masks, per-epoch history)``; afterwards the model has
    frozen masks and exactly-zero pruned weights.
    """
    if method not in PRUNERS:
        raise ValueError(f"unknown pruning method {method!r}; available: {', '.join(PRUNERS)}")
    keep = 1 - _check_sparsity(sparsity)
    if method == "magnitude":
        history = []
        if epochs > 0:  # dense training first, then prune the trained weights
            params = [p for p in model.parameters() if p.requires_grad]
            history = run_epochs(model, params, lambda xb, yb, _: loss_fn(xb, yb), x, y, epochs=epochs, lr=lr,
                                 batch_size=batch_size, generator=generator)
        masks = magnitude_masks(model, sparsity)
        set_masks(model, masks)
        return masks, history
    if epochs <= 0:
        raise ValueError(f"{method} pruning needs at least one score-training epoch (prune_epochs >= 1)")
    layers = prunable(model)
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    learn_rate = method == "harp"
    pms: dict[str, ScoreMask] = {}
    orders = [list(m._parameters) for m in layers.values()]
    try:
        for name, m in layers.items():
            pm = ScoreMask(m.weight, keep, learn_rate, 0.1 * keep).to(m.weight.device)
            parametrize.register_parametrization(m, "weight", pm, unsafe=True)
            pms[name] = pm
        params = [pm.scores for pm in pms.values()] + ([pm.rate_logit for pm in pms.values()] if learn_rate else [])

        def objective(xb, yb, epoch):
            loss = loss_fn(xb, yb)
            if learn_rate:
                loss = loss + gamma * (epoch + 1) * _harp_penalty(pms, keep, sizes)
            return loss

        history = run_epochs(model, params, objective, x, y, epochs=epochs, lr=lr, batch_size=batch_size,
                             generator=generator)
        with torch.no_grad():
            if learn_rate:
                rates = _rescaled_rates({n: float(pm.keep()) for n, pm in pms.items()}, sizes, keep)
            else:
                rates = dict.fromkeys(pms, keep)
            masks = {n: topk_mask(pm.scores.abs(), rates[n]) for n, pm in pms.items()}
    finally:
        for m, order in zip(layers.values(), orders):
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            for key in order:  # re-register in the original order (optimiser state and state dicts are ordered)
                m._parameters[key] = m._parameters.pop(key)
        for p, flag in frozen:
            p.requires_grad_(flag)
    set_masks(model, masks)
    return masks, history


def after_step(model: nn.Module, objective) -> None:
    """The trainer's hook after every optimiser step: the method's own ``after_step`` (e.g. the SNN-RAT
    retraction), then the frozen masks."""
    hook = getattr(objective.method, "after_step", None)
    if hook is not None:
        hook(model)
    apply_masks(model)


def prepare(model: nn.Module, cfg, objective, x: torch.Tensor, y: torch.Tensor, *, learn: bool) -> list[dict]:
    """Set up the masks a training run asks for (``cfg.sparsity``, ``cfg.prune``, ``cfg.prune_epochs``).

    With ``cfg.sparsity > 0`` the model gets mask buffers; when ``learn`` (a fresh run, not a resume) they are
    chosen by :func:`learn_masks` on the run's objective, with a generator seeded from ``cfg.seed``. A model
    that already carries masks (``cfg.init`` from a pruned model) keeps them frozen. Returns the prune phase's
    per-epoch history.
    """
    if cfg.sparsity == 0:
        return []
    if has_masks(model) and cfg.init:
        raise ValueError(f"{cfg.init}: the model is already pruned (it has masks); train it with sparsity 0")
    attach_masks(model)
    if not learn:
        return []

    def loss_fn(xb, yb):
        return objective(model, xb, yb)[0]

    _, history = learn_masks(model, cfg.prune, cfg.sparsity, loss_fn, x, y, epochs=cfg.prune_epochs,
                             batch_size=cfg.batch_size, generator=torch.Generator().manual_seed(cfg.seed + 1),
                             lr=cfg.prune_lr)
    return history

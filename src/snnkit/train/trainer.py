"""The training loop: seeds, Adam/SGD, cosine schedule, a checkpoint every epoch, resume, progress, metrics.

Determinism: the same config and seed give the same weights and metrics on the same machine. All randomness
(initialisation, shuffling, augmentation, attack random starts, Poisson draws) comes from generators seeded from
``seed``, and the checkpoint stores their states, so an interrupted run resumed with ``resume=True`` ends with
the same final weights as an uninterrupted one.

Outputs in ``out_dir``: ``model.pt`` (see ``snnkit.models.io``), ``metrics.json`` (with ``amp`` and
``world_size``, the number of processes), ``checkpoint.pt``.

On several processes (``snn-train --distributed`` under torchrun, :mod:`snnkit.distributed`) the run is the
single-process run's up to rounding (see :func:`train`). ``amp="bf16"`` runs the objective under bfloat16
autocast (the LIF recurrences stay float32, ``snnkit.nn.functional.lif_scan``).

With ``qat="loihi"`` (and ``init``) the objective sees the model as it runs on Loihi 2
(:class:`snnkit.train.qat.LoihiQAT`, re-quantised after every optimiser step); ``model.pt`` is still the float
model, and ``metrics.json`` adds the accuracies of the starting and the final model on ``loihi-emu``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from snnkit import data as datasets
from snnkit import distributed
from snnkit.data.augment import Augmentation
from snnkit.attack.gradients import input_gradient_sparsity
from snnkit.models import build, load, save
from snnkit.atomic import atomic_write, save_torch
from snnkit.graph.errors import first_line
from snnkit.train import qat
from snnkit.train import sparsity as masks
from snnkit.train.objectives import accuracy, build_objective


@dataclass
class TrainConfig:
    """Everything a training run depends on (written into metrics.json)."""

    dataset: str = "digits"
    model: dict = field(default_factory=lambda: {"arch": "mlp"})
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    method: str = "standard"
    regs: list[str] = field(default_factory=list)
    data_dir: str | None = None
    limit: int | None = None
    device: str = "cpu"
    init: str | None = None  # start from this model.pt (its config replaces ``model``)
    sparsity: float = 0.0  # fraction of Linear/Conv weights pruned before training (masks then frozen)
    prune: str = "magnitude"  # magnitude | hydra | harp (snnkit.train.sparsity)
    prune_epochs: int = 0  # score-training epochs (hydra/harp) or dense epochs before magnitude pruning
    prune_lr: float = 0.01
    qat: str | None = None  # "loihi": quantisation-aware fine-tuning of ``init`` (snnkit.train.qat)
    augment: bool | None = None  # crop + flip of training batches (snnkit.data.augment); None: the set's default
    amp: str | None = None  # "bf16": the objective runs under bfloat16 autocast (weights and steps in float32)


def _optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (adam, sgd)")


def _schedule(cfg: TrainConfig, opt):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    if cfg.schedule == "none":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r} (cosine, none)")


def autocast(cfg: TrainConfig):
    """The autocast context of ``cfg.amp`` (``bf16``: bfloat16 on cfg.device's type; None: off)."""
    if cfg.amp not in (None, "bf16"):
        raise ValueError(f"unknown amp {cfg.amp!r} (bf16)")
    return torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Clean accuracy of ``model`` on ``(x, y)`` in eval mode; on several processes each batch of ``batch_size``
    is sharded over the ranks (:mod:`snnkit.distributed`) and the counts summed (every rank gets the total)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros(1, dtype=torch.float64)
    for i in range(0, len(x), batch_size):
        total = min(batch_size, len(x) - i)
        lo, hi = distributed.shard(total)
        with distributed.batch_slice(total, lo, hi):
            pred = model(x[i + lo : i + hi].to(device)).argmax(1).cpu()
        correct += int((pred == y[i + lo : i + hi]).sum())
    model.train(was_training)
    return int(distributed.all_sum(correct.to(device)).item()) / max(len(x), 1)


def _check_same_config(path: Path, stored, current: dict) -> None:
    """Refuse to resume from a checkpoint written by another training config, naming the fields that differ.
    Fields the stored config lacks were added to :class:`TrainConfig` after it was written: they take the current
    run's values."""
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: not an snnkit checkpoint (no training config)")
    stored = {**{k: v for k, v in current.items() if k not in stored}, **stored}
    differ = sorted(k for k in stored.keys() | current.keys() if stored.get(k) != current.get(k))
    if differ:
        raise ValueError(f"{path}: checkpoint was written by a different training config ({', '.join(differ)} "
                         "differ)")


def train(cfg: TrainConfig, out_dir: "str | Path", *, resume: bool = False, progress: bool = True,
          stop_after: int | None = None, callbacks: list | None = None) -> dict:
    """Train a model as ``cfg`` says; write model.pt, metrics.json and checkpoint.pt into ``out_dir``.

    resume: continue from ``out_dir/checkpoint.pt`` (an error if it is missing or from another config).
    stop_after: stop once this many epochs are done in total (simulates an interruption; no model.pt then).
    callbacks: functions ``f(epoch, model, record)`` called after every epoch (may add keys to ``record``).
    Returns the metrics dict written to metrics.json. ``out_dir`` is held for writing meanwhile
    (:func:`snnkit.outdir.writing`: a second run on it refuses).

    On several processes (a :func:`snnkit.distributed.session`): every rank runs this with the same config;
    ``cfg.batch_size`` is the global batch, each rank takes its :func:`~snnkit.distributed.shard` of every
    global batch of the same permutation, its loss is weighted by its share so that the averaged gradients are
    those of the global batch's mean, BatchNorm uses the global batch's statistics and random draws are those
    of the whole batch (:func:`~snnkit.distributed.draw`); rank 0 writes the files.
    """
    with distributed.main_writes(out_dir) as out:
        return _train(cfg, out, resume=resume, progress=progress, stop_after=stop_after, callbacks=callbacks)


def _train(cfg: TrainConfig, out: Path, *, resume: bool, progress: bool, stop_after: int | None,
           callbacks: list | None) -> dict:
    info = datasets.info(cfg.dataset)
    steps = datasets.input_steps(cfg.dataset, cfg.model)  # event sets are binned into the model's steps
    x_train, y_train = datasets.load(cfg.dataset, "train", data_dir=cfg.data_dir, timesteps=steps)
    x_test, y_test = datasets.load(cfg.dataset, "test", limit=cfg.limit, data_dir=cfg.data_dir, timesteps=steps)

    torch.manual_seed(cfg.seed)
    model_cfg = {"input_shape": list(info.input_shape), "num_classes": info.num_classes, **cfg.model}
    model = (load(cfg.init) if cfg.init else build(model_cfg)).to(cfg.device)
    model_cfg = model.config
    objective = build_objective(cfg.method, cfg.regs)
    prune_history = masks.prepare(model, cfg, objective, x_train, y_train, learn=not resume)
    opt = _optimizer(cfg, model.parameters())
    sched = _schedule(cfg, opt)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    augment = Augmentation.for_training(cfg.dataset, cfg.augment, cfg.seed)
    history: list[dict] = []
    start_epoch = 0
    ckpt_path = out / "checkpoint.pt"
    config_dict = asdict(cfg)

    if resume:
        if not ckpt_path.is_file():
            raise ValueError(f"{ckpt_path}: no checkpoint to resume from")
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for truncated or foreign files
            raise ValueError(f"{ckpt_path}: not a readable checkpoint ({first_line(exc)[:200]})") from None
        if not isinstance(ckpt, dict):
            raise ValueError(f"{ckpt_path}: not an snnkit checkpoint (a {type(ckpt).__name__})")
        _check_same_config(ckpt_path, ckpt.get("train_config"), json.loads(json.dumps(config_dict)))
        try:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            shuffle.set_state(ckpt["shuffle_rng"])
            if "augment_rng" in ckpt:  # absent from checkpoints written before augmentation existed
                augment.set_state(ckpt["augment_rng"])
            torch.set_rng_state(ckpt["torch_rng"])
            history = list(ckpt["history"])
            start_epoch = int(ckpt["epoch"])
        except KeyError as exc:
            raise ValueError(f"{ckpt_path}: checkpoint has no {exc} entry") from None
        except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{ckpt_path}: checkpoint does not fit the model "
                             f"({first_line(exc)[:200]})") from None

    net = qat.wrap(model, cfg, x_train) if cfg.qat else model  # what the objective trains
    net = _parallel(model) if distributed.active() else net
    train_time = sum(h["time_s"] for h in history)
    n = len(x_train)
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train {model_cfg['arch']} on {cfg.dataset}",
               disable=not (progress and distributed.is_main()), initial=start_epoch, total=cfg.epochs, unit="epoch")
    for epoch in bar:
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(n, generator=shuffle)
        loss_sum, correct, parts_sum = 0.0, 0.0, {}
        for i in range(0, n, cfg.batch_size):
            batch = perm[i : i + cfg.batch_size]
            lo, hi = distributed.shard(len(batch))  # this rank's share of the global batch
            idx = batch[lo:hi]
            xb, yb = x_train[idx].to(cfg.device), y_train[idx].to(cfg.device)
            with distributed.batch_slice(len(batch), lo, hi):
                xb = augment(xb)  # a sample's crop and flip do not depend on the sharding
                with autocast(cfg):
                    loss, logits, parts = objective(net, xb, yb)
            opt.zero_grad(set_to_none=True)
            _weighted(loss, len(idx), len(batch)).backward()
            opt.step()
            masks.after_step(model, objective)
            if cfg.qat:
                net.requantise()
            if len(idx):  # a rank's share of a last, small batch can be empty
                loss_sum += float(loss.detach()) * len(idx)
                correct += accuracy(logits.detach().float(), yb) * len(idx)
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + (v * len(idx) if len(idx) else 0.0)
        sched.step()
        loss_sum, correct, parts_sum = _summed(loss_sum, correct, parts_sum)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        record = {
            "epoch": epoch + 1,
            "loss": loss_sum / n,
            "train_accuracy": correct / n,
            "test_accuracy": evaluate(model, x_test, y_test),
            **({"loihi_test_accuracy": evaluate(net, x_test, y_test)} if cfg.qat else {}),
            "lr": opt.param_groups[0]["lr"],
            "time_s": epoch_time,
            **({"loss_parts": {k: v / n for k, v in parts_sum.items()}} if len(parts_sum) > 1 else {}),
        }
        for cb in callbacks or []:
            cb(epoch, model, record)
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", test_acc=f"{record['test_accuracy']:.3f}")
        ckpt = {
            "train_config": json.loads(json.dumps(config_dict)),
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "shuffle_rng": shuffle.get_state(),
            "augment_rng": augment.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
        }
        if distributed.is_main():
            save_torch(ckpt_path, ckpt)
        distributed.barrier()
        if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < cfg.epochs:
            return {"stopped_after_epoch": epoch + 1, "history": history}

    final = history[-1] if history else {"test_accuracy": evaluate(model, x_test, y_test), "train_accuracy": None}
    metrics = {
        "dataset": cfg.dataset,
        "model": model.config,
        "train_config": config_dict,
        "test_accuracy": final["test_accuracy"],
        "train_accuracy": final["train_accuracy"],
        "train_time_s": train_time,
        "n_train": n,
        "n_test": len(x_test),
        "gradient_sparsity": input_gradient_sparsity(model, x_test[:1024].to(cfg.device), y_test[:1024]),
        "weight_sparsity": masks.weight_sparsity(model),
        "augmentation": asdict(augment.recipe) if augment.enabled else None,  # what ran (cfg.augment None: the default)
        **({"prune_history": prune_history} if prune_history else {}),
        **({"qat": qat.record(cfg, model, x_test, y_test)} if cfg.qat else {}),
        "amp": cfg.amp,
        "world_size": distributed.world(),
        "history": history,
    }
    if distributed.is_main():
        save(model.cpu(), out / "model.pt", meta={"dataset": cfg.dataset, "test_accuracy": final["test_accuracy"]})
        atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2)))
    return metrics


def _parallel(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` replicated over the ranks (:func:`snnkit.distributed.replicate`), its BatchNorm on the global
    batch's statistics."""
    from snnkit.nn.layers import sync_batchnorm

    return distributed.replicate(sync_batchnorm(model))


def _weighted(loss: torch.Tensor, local: int, total: int) -> torch.Tensor:
    """A rank's mean loss over its ``local`` samples of a global batch of ``total``, weighted by
    ``local * world / total``: DDP averages the gradients over the ranks, and the average of the weighted local
    means is the global batch's mean even when the shares differ in size (unchanged for one process)."""
    world = distributed.world()
    if world == 1:
        return loss
    return loss * (local * world / total)


def _summed(loss_sum: float, correct: float, parts_sum: dict) -> tuple[float, float, dict]:
    """The epoch's sums over all ranks (unchanged for one process)."""
    if not distributed.active():
        return loss_sum, correct, parts_sum
    keys = sorted(parts_sum)
    total = distributed.all_sum(torch.tensor([loss_sum, correct, *(parts_sum[k] for k in keys)], dtype=torch.float64))
    return float(total[0]), float(total[1]), {k: float(v) for k, v in zip(keys, total[2:])}

"""Training objectives: a method (how a batch becomes a loss) plus any number of regularisers.

A *method* is called as ``method(model, x, y) -> (loss, logits)`` (``logits`` of the clean input, for the
train accuracy). A *regulariser* is called as ``reg(model, run, x, y) -> scalar`` with ``run`` the
:class:`~snnkit.models.RunResult` of the clean batch (spikes and membrane potentials with their autograd
graph). Both are registered by name, with parameters from a spec string ``"name:key=value,key=value"``, so
``snn-train --method NAME --reg SPEC`` reaches them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

METHODS: dict[str, Callable[..., "Method"]] = {}
REGULARIZERS: dict[str, Callable[..., "Regularizer"]] = {}


def register_method(name: str):
    def deco(cls):
        METHODS[name] = cls
        return cls

    return deco


def register_regularizer(name: str):
    def deco(cls):
        REGULARIZERS[name] = cls
        return cls

    return deco


def parse_spec(spec: str) -> tuple[str, dict[str, float | str]]:
    """``"mpd-sgr:eta=0.1,gamma=1"`` -> ``("mpd-sgr", {"eta": 0.1, "gamma": 1.0})`` (non-numbers stay strings)."""
    name, _, args = spec.strip().partition(":")
    params: dict[str, float | str] = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{spec!r}: parameter {item!r} is not key=value")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            params[key.strip()] = value.strip()
    return name.strip(), params


class Regularizer:
    """Base class; subclasses implement ``__call__(model, run, x, y) -> scalar tensor``."""

    needs_run = True


class Method:
    """Base class; subclasses implement ``__call__(model, x, y) -> (loss, logits)``."""


@register_method("standard")
@dataclass
class Standard(Method):
    """Cross-entropy on the clean batch."""

    def __call__(self, model, x, y):
        logits = model(x)
        return F.cross_entropy(logits, y), logits


def build_method(spec: str) -> Method:
    _ensure_registered()
    name, params = parse_spec(spec)
    if name not in METHODS:
        raise ValueError(f"unknown training method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name](**params)


def build_regularizer(spec: str) -> Regularizer:
    _ensure_registered()
    name, params = parse_spec(spec)
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regulariser {name!r}; available: {', '.join(sorted(REGULARIZERS)) or 'none'}")
    return REGULARIZERS[name](**params)


def _ensure_registered() -> None:
    """Import the modules that register the robust-training methods and regularisers (if present)."""
    import importlib

    for module in ("snnkit.train.adversarial", "snnkit.train.regularizers"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


@dataclass
class Objective:
    """A method plus regularisers: ``objective(model, x, y) -> (loss, logits, parts)``."""

    method: Method
    regularizers: list[tuple[str, Regularizer]] = field(default_factory=list)

    def __call__(self, model, x, y):
        run = model.run(x) if self.regularizers else None
        if run is not None and isinstance(self.method, Standard):
            logits = run.logits  # one forward serves both the task loss and the regularisers
            loss = F.cross_entropy(logits, y)
        else:
            loss, logits = self.method(model, x, y)
        parts = {"task": float(loss.detach())}
        if run is not None:
            for name, reg in self.regularizers:
                term = reg(model, run, x, y)
                parts[name] = float(term.detach())
                loss = loss + term
        return loss, logits, parts


def build_objective(method: str = "standard", regs: list[str] | None = None) -> Objective:
    return Objective(build_method(method), [(parse_spec(r)[0], build_regularizer(r)) for r in regs or []])


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())

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


def _number(value: str) -> "float | str":
    """``"0.1"`` -> 0.1, a fraction ``"8/255"`` -> 8 / 255 (the papers' way of writing eps); else the string."""
    num, slash, den = value.partition("/")
    try:
        return float(num) / float(den) if slash else float(value)
    except (ValueError, ZeroDivisionError):
        return value.strip()


def parse_spec(spec: str) -> tuple[str, dict[str, float | str]]:
    """``"pgd-at:eps=8/255,steps=7"`` -> ``("pgd-at", {"eps": 0.0314, "steps": 7.0})`` (numbers and fractions
    become floats; anything else stays a string)."""
    name, _, args = spec.strip().partition(":")
    params: dict[str, float | str] = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{spec!r}: parameter {item!r} is not key=value")
        params[key.strip()] = _number(value)
    return name.strip(), params


def _construct(kind: str, spec: str, cls, params: dict):
    """``cls(**params)``, with a parameter it does not take or a value of the wrong type said in one line."""
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"{kind} {spec!r}: {exc}") from None


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
    return _construct("training method", spec, METHODS[name], params)


def build_regularizer(spec: str) -> Regularizer:
    _ensure_registered()
    name, params = parse_spec(spec)
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regulariser {name!r}; available: {', '.join(sorted(REGULARIZERS)) or 'none'}")
    return _construct("regulariser", spec, REGULARIZERS[name], params)


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

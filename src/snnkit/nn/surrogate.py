"""Surrogate gradients for the spike function, as a registry of parameterised functions.

The forward pass of a spike is always the Heaviside step ``s = 1 if u > 0 else 0`` with ``u = h - v_threshold``
(membrane potential relative to threshold). A surrogate only replaces its derivative in the backward pass.
Formulas (U = u), as in docs/reference/robustness.md:

| name | parameters (default) | d s / d U |
|---|---|---|
| ``triangle`` | ``gamma`` (1.0) | ``max(0, gamma - |U|) / gamma^2`` |
| ``rectangular`` | ``width`` (1.0) | ``1[|U| < width/2] / width`` |
| ``sigmoid`` | ``k`` (4.0) | ``k e^{-kU} / (1 + e^{-kU})^2`` |
| ``fast_sigmoid`` (SuperSpike) | ``k`` (25.0) | ``1 / (k|U| + 1)^2`` |
| ``atan`` | ``alpha`` (2.0) | ``(alpha/2) / (1 + (pi/2 alpha U)^2)`` |
| ``escape`` (spike-rate escape) | ``k`` (2.5), ``b`` (5.0) | ``k exp(-b |U|)`` |
| ``straight_through`` | none | ``1`` |

A spec string names a surrogate and its parameters: ``"atan:alpha=2"``, ``"triangle:gamma=0.5"``,
``"escape:k=1,b=2"``. ``support`` is the half-width of the region where the derivative is at least a tenth of
its peak (exact for the compact ones); MPD-SGR uses it as its default ``gamma``.

The compiled LIF kernels (``src/snnkit/nn/native/lif_scan_real.h``) evaluate the same derivatives in C: each
class names its case there (``kernel_code``) and the two numbers that case takes (``kernel_params``, inverted
by ``from_kernel_params``); :func:`kernel_form` and :func:`from_kernel_form` are what the scan passes around.
"""
from __future__ import annotations

import abc
import contextlib
import math
from dataclasses import dataclass, fields
from typing import Iterator

import torch


@dataclass(frozen=True)
class Surrogate(abc.ABC):
    """Base class: a Heaviside forward with the derivative of a smooth stand-in backward."""

    name = "base"
    kernel_code = -1
    """This derivative's case in the compiled kernels' ``deriv_row`` (-1: they do not compute it)."""

    def kernel_params(self) -> tuple[float, float]:
        """``(p1, p2)``, the parameters of case ``kernel_code`` of the kernels."""
        return 0.0, 0.0

    @classmethod
    def from_kernel_params(cls, p1: float, p2: float) -> "Surrogate":
        """The surrogate whose :meth:`kernel_params` are ``(p1, p2)``."""
        return cls()

    @abc.abstractmethod
    def derivative(self, u: torch.Tensor) -> torch.Tensor:
        """d spike / d u at ``u = h - v_threshold`` (same shape as ``u``)."""

    def spike(self, u: torch.Tensor) -> torch.Tensor:
        """Heaviside of ``u`` (``u > 0``) whose backward is ``derivative(u)``."""
        return _SpikeFn.apply(u, self)

    @property
    def peak(self) -> float:
        return float(self.derivative(torch.zeros(1, dtype=torch.float64)))

    @property
    def support(self) -> float:
        """Half-width where the derivative is >= peak / 10 (``inf`` for straight-through)."""
        lo, hi = 0.0, 1.0
        while float(self.derivative(torch.tensor([hi], dtype=torch.float64))) >= self.peak / 10:
            hi *= 2
            if hi > 1e6:
                return math.inf
        for _ in range(60):
            mid = (lo + hi) / 2
            if float(self.derivative(torch.tensor([mid], dtype=torch.float64))) >= self.peak / 10:
                lo = mid
            else:
                hi = mid
        return lo

    @property
    def spec(self) -> str:
        params = ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))
        return f"{self.name}:{params}" if params else self.name


@dataclass(frozen=True)
class Triangle(Surrogate):
    gamma: float = 1.0
    name = "triangle"
    kernel_code = 2

    def kernel_params(self):
        return self.gamma, self.gamma**2

    @classmethod
    def from_kernel_params(cls, p1, p2):
        return cls(gamma=p1)

    def derivative(self, u):
        return (self.gamma - u.abs()).clamp(min=0) / self.gamma**2

    @property
    def support(self) -> float:
        return self.gamma


@dataclass(frozen=True)
class Rectangular(Surrogate):
    width: float = 1.0
    name = "rectangular"
    kernel_code = 3

    def kernel_params(self):
        return self.width / 2, self.width

    @classmethod
    def from_kernel_params(cls, p1, p2):
        return cls(width=p2)

    def derivative(self, u):
        return (u.abs() < self.width / 2).to(u.dtype) / self.width

    @property
    def support(self) -> float:
        return self.width / 2


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    k: float = 4.0
    name = "sigmoid"
    kernel_code = 4

    def kernel_params(self):
        return self.k, 0.0

    @classmethod
    def from_kernel_params(cls, p1, p2):
        return cls(k=p1)

    def derivative(self, u):
        sig = torch.sigmoid(self.k * u)
        return self.k * sig * (1 - sig)


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    k: float = 25.0
    name = "fast_sigmoid"
    kernel_code = 1

    def kernel_params(self):
        return self.k, 0.0

    @classmethod
    def from_kernel_params(cls, p1, p2):
        return cls(k=p1)

    def derivative(self, u):
        return 1.0 / (self.k * u.abs() + 1.0) ** 2


@dataclass(frozen=True)
class ATan(Surrogate):
    alpha: float = 2.0
    name = "atan"
    kernel_code = 0

    def kernel_params(self):
        return math.pi / 2 * self.alpha, self.alpha / 2

    @classmethod
    def from_kernel_params(cls, p1, p2):
        return cls(alpha=2 * p2)

    def derivative(self, u):
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * u) ** 2)


@dataclass(frozen=True)
class Escape(Surrogate):
    k: float = 2.5
    b: float = 5.0
    name = "escape"
    kernel_code = 5

    def kernel_params(self):
        return self.k, self.b

    @classmethod
    def from_kernel_params(cls, p1, p2):
        return cls(k=p1, b=p2)

    def derivative(self, u):
        return self.k * torch.exp(-self.b * u.abs())


@dataclass(frozen=True)
class StraightThrough(Surrogate):
    name = "straight_through"
    kernel_code = 6

    def derivative(self, u):
        return torch.ones_like(u)

    @property
    def support(self) -> float:
        return math.inf


SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (Triangle, Rectangular, Sigmoid, FastSigmoid, ATan, Escape, StraightThrough)
}
_BY_KERNEL_CODE: dict[int, type[Surrogate]] = {
    cls.kernel_code: cls for cls in SURROGATES.values() if cls.kernel_code >= 0
}
_ALIASES = {"superspike": "fast_sigmoid", "arctan": "atan", "ste": "straight_through", "rect": "rectangular",
            "spike_rate_escape": "escape", "triangular": "triangle"}


def parse(spec: "str | Surrogate") -> Surrogate:
    """Build a surrogate from a spec string such as ``"atan:alpha=2"`` (or return a Surrogate unchanged)."""
    if isinstance(spec, Surrogate):
        return spec
    name, _, args = spec.strip().partition(":")
    name = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; available: {', '.join(SURROGATES)}")
    cls = SURROGATES[name]
    allowed = {f.name for f in fields(cls)}
    kwargs = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in allowed:
            raise ValueError(f"surrogate {name!r}: bad parameter {item!r} (parameters: {sorted(allowed) or 'none'})")
        kwargs[key.strip()] = float(value)
    return cls(**kwargs)


def kernel_form(surrogate) -> tuple[int, float, float]:
    """``(code, p1, p2)``: how the compiled kernels evaluate ``surrogate``'s derivative; code -1 when they do not.

    Only the exact built-in classes have a code (a subclass may redefine ``derivative``).
    """
    cls = type(surrogate)
    if _BY_KERNEL_CODE.get(getattr(cls, "kernel_code", -1)) is not cls:
        return -1, 0.0, 0.0
    return (cls.kernel_code, *surrogate.kernel_params())


def from_kernel_form(code: int, p1: float, p2: float) -> Surrogate:
    """The built-in surrogate that :func:`kernel_form` maps to ``(code, p1, p2)`` (its inverse)."""
    if code not in _BY_KERNEL_CODE:
        raise ValueError(f"no built-in surrogate has kernel code {code}")
    return _BY_KERNEL_CODE[code].from_kernel_params(p1, p2)


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, surrogate):
        ctx.save_for_backward(u)
        ctx.surrogate = surrogate
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(u), None


@contextlib.contextmanager
def use_surrogate(model: torch.nn.Module, spec: "str | Surrogate") -> Iterator[torch.nn.Module]:
    """Temporarily give every spiking layer of ``model`` the surrogate ``spec`` (restored on exit)."""
    surrogate = parse(spec)
    saved = [(m, m.surrogate) for m in model.modules() if hasattr(m, "surrogate") and isinstance(m.surrogate, Surrogate)]
    try:
        for m, _ in saved:
            m.surrogate = surrogate
        yield model
    finally:
        for m, old in saved:
            m.surrogate = old

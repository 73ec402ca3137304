"""Input encoders: ``[B, ...]`` values in [0, 1] -> ``[B, T, ...]`` network input.

- ``direct``: the analog value is the input current at every step (the first layer sees real values).
- ``poisson``: rate code, a spike with probability ``x`` at each step, drawn from a seeded generator; the
  backward is straight-through (``d s / d x = 1``), so attacks on it need EOT.
- ``latency``: time-to-first-spike code, one spike at step ``round((1 - x) (T - 1))`` for ``x > x_min``, none
  otherwise. Its gradient is a rectangular surrogate of the bin edges, ``grad_width`` of a bin wide, so it is
  non-zero only for inputs near an edge: temporal coding has sparse input gradients (seed 000).
- ``frames``: the input already has its time axis, ``[B, T, ...]`` (event-camera frames, ``snnkit.data``'s
  event sets); it is passed on as it is, after checking that ``T`` is the model's.

Encoders live inside the model (attacks see the raw input) and are written to the NIR metadata
(``{"name": ..., **params}``) so that ``snn-deploy`` encodes a data set the same way for every target.
"""
from __future__ import annotations

import torch
from torch import nn

from snnkit.distributed import draw
from snnkit.nn.surrogate import Rectangular


class Encoder(nn.Module):
    name = "base"

    def __init__(self, timesteps: int):
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, not {timesteps}")
        self.timesteps = int(timesteps)

    def spec(self) -> dict:
        return {"name": self.name}


class DirectEncoder(Encoder):
    name = "direct"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1).expand(x.shape[0], self.timesteps, *x.shape[1:])


class _BernoulliST(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, u):
        return (u < p).to(p.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class PoissonEncoder(Encoder):
    """Bernoulli spikes per step with probability ``x``; ``seed`` fixes the sequence of draws."""

    name = "poisson"

    def __init__(self, timesteps: int, seed: int = 0):
        super().__init__(timesteps)
        self.seed = int(seed)
        self._generator: torch.Generator | None = None

    def reseed(self, seed: int | None = None) -> None:
        self.seed = self.seed if seed is None else int(seed)
        self._generator = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        shape = (x.shape[0], self.timesteps, *x.shape[1:])
        u = draw(torch.rand, shape, generator=self._generator, device=x.device, dtype=x.dtype)
        p = x.clamp(0, 1).unsqueeze(1).expand(shape)
        return _BernoulliST.apply(p, u)

    def spec(self) -> dict:
        return {"name": self.name, "seed": self.seed}


class LatencyEncoder(Encoder):
    """One spike per input at step ``round((1 - x)(T - 1))``; no spike where ``x <= x_min``.

    grad_width: width of the rectangular surrogate around each bin edge, as a fraction of a bin (0.5: about
    half of all inputs get a non-zero gradient).
    """

    name = "latency"

    def __init__(self, timesteps: int, x_min: float = 0.0, grad_width: float = 0.5):
        super().__init__(timesteps)
        self.x_min = float(x_min)
        self.grad_width = float(grad_width)
        # Step t fires for x in (edge[t+1], edge[t]]: the rounding boundaries of (1 - x)(T - 1).
        T = self.timesteps
        edges = [float("inf")] + [1 - (t + 0.5) / max(T - 1, 1) for t in range(T - 1)] + [self.x_min]
        self.register_buffer("edges", torch.tensor(edges))
        self._step = Rectangular(width=self.grad_width / max(T - 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 1)
        upper = self.edges[:-1].view(shape).to(x.dtype)
        lower = self.edges[1:].view(shape).to(x.dtype)
        xx = x.unsqueeze(1)
        # s_t = H(x - lower_t) - H(x - upper_t): exactly one spike in the bin holding x (none below x_min).
        above_lower = self._step.spike(xx - lower)
        above_upper = torch.where(torch.isinf(upper), torch.zeros_like(xx - upper), self._step.spike(xx - upper))
        return above_lower - above_upper

    def spec(self) -> dict:
        return {"name": self.name, "x_min": self.x_min, "grad_width": self.grad_width}


class FramesEncoder(Encoder):
    """Identity on inputs that are already ``[B, T, ...]`` frames (event data); ``T`` must be ``timesteps``."""

    name = "frames"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.timesteps:
            raise ValueError(f"the frames encoder takes inputs [B, T, ...] with T = {self.timesteps} time steps; got "
                             f"shape {list(x.shape)}")
        return x


ENCODERS = {cls.name: cls for cls in (DirectEncoder, PoissonEncoder, LatencyEncoder, FramesEncoder)}


def build_encoder(spec: "str | dict", timesteps: int) -> Encoder:
    """An encoder from a name (``"poisson"``), a spec string (``"poisson:seed=3"``) or a metadata dict."""
    if isinstance(spec, str):
        name, _, args = spec.partition(":")
        spec = {"name": name}
        for item in filter(None, (a.strip() for a in args.split(","))):
            k, eq, v = item.partition("=")
            if not eq:
                raise ValueError(f"encoder parameter {item!r} is not key=value")
            spec[k.strip()] = float(v)
    spec = dict(spec)
    name = spec.pop("name")
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; available: {', '.join(ENCODERS)}")
    if "seed" in spec:
        spec["seed"] = int(spec["seed"])
    return ENCODERS[name](timesteps, **spec)

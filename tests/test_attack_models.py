"""Small models the attack tests run against, and checks that they are what the tests assume.

Data: 5 classes of noisy 1x8x8 "images" in [0, 1] around random prototypes. Models (each trained once per
process, a fraction of a second):

- ``mlp()`` / ``cnn()``: smooth ReLU networks;
- ``snn()``: a two-layer LIF network (T = 6, subtract reset) whose spike is a Heaviside step with a
  selectable surrogate derivative (``model.surrogate``; ``swap(model, spec)`` changes it temporarily);
- ``masked()``: the MLP behind an input quantiser with zero gradient (a deliberately masked model);
- ``stochastic()``: the MLP fed Bernoulli spike rates (straight-through gradient), random at every call.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch
from torch import nn
import torch.nn.functional as F

N_CLASSES = 5
SHAPE = (1, 8, 8)


@functools.lru_cache(maxsize=None)
def dataset() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train [1000, 1, 8, 8], y_train, x_test [200, 1, 8, 8], y_test)``, inputs in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    protos = 0.3 + 0.4 * torch.rand(N_CLASSES, *SHAPE, generator=g)
    y = torch.randint(0, N_CLASSES, (1200,), generator=g)
    x = (protos[y] + 0.3 * torch.randn(1200, *SHAPE, generator=g)).clamp(0, 1)
    return x[:1000], y[:1000], x[1000:], y[1000:]


def train(model: nn.Module, steps: int = 300, seed: int = 0) -> nn.Module:
    xtr, ytr, _, _ = dataset()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, xtr.shape[0], (128,), generator=g)
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((torch.as_tensor(model(x)).argmax(1) == y).float().mean())


@functools.lru_cache(maxsize=None)
def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return train(nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, N_CLASSES)), seed=seed)


@functools.lru_cache(maxsize=None)
def cnn() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 16, N_CLASSES))
    return train(net, seed=1)


# ---------------------------------------------------------------- a small spiking network


class SpikeFn(torch.autograd.Function):
    """Heaviside ``u > 0`` forward; the surrogate ``(name, width)`` derivative backward."""

    @staticmethod
    def forward(ctx, u, name, width):
        ctx.save_for_backward(u)
        ctx.name, ctx.width = name, width
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        w = ctx.width
        if ctx.name == "triangle":
            d = (w - u.abs()).clamp(min=0) / w**2
        elif ctx.name == "rectangular":
            d = (u.abs() < w / 2).to(u.dtype) / w
        elif ctx.name == "atan":
            d = (w / 2) / (1 + (math.pi / 2 * w * u) ** 2)
        elif ctx.name == "straight_through":
            d = torch.ones_like(u)
        elif ctx.name == "zero":
            d = torch.zeros_like(u)
        else:
            raise ValueError(f"unknown surrogate {ctx.name}")
        return grad * d, None, None


def parse_spec(spec: str) -> tuple[str, float]:
    """``"triangle:gamma=0.5"`` -> ``("triangle", 0.5)``; a missing parameter means width 1."""
    name, _, arg = spec.partition(":")
    return name, float(arg.partition("=")[2]) if arg else 1.0


@contextlib.contextmanager
def swap(model: "TinySNN", spec: str):
    old = model.surrogate
    model.surrogate = parse_spec(spec)
    try:
        yield model
    finally:
        model.surrogate = old


class TinySNN(nn.Module):
    """Direct-encoded LIF network: ``fc1 -> LIF (beta 0.8, threshold 1, subtract reset) -> fc2``, logits =
    readout averaged over ``T`` steps."""

    def __init__(self, timesteps: int = 6, hidden: int = 64, beta: float = 0.8):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, N_CLASSES)
        self.timesteps, self.beta = timesteps, beta
        self.surrogate = ("triangle", 1.0)

    def spikes(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, hidden]`` hidden-layer spikes."""
        cur = self.fc1(x.flatten(1))
        v = torch.zeros_like(cur)
        out = []
        for _ in range(self.timesteps):
            v = self.beta * v + cur
            s = SpikeFn.apply(v - 1.0, *self.surrogate)
            v = v - s
            out.append(s)
        return torch.stack(out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.spikes(x)).mean(1)


class RateTwin(nn.Module):
    """The SNN's non-spiking twin: the same weights with a clipped-ReLU rate ``clamp(fc1 x, 0, 1)``."""

    def __init__(self, snn: TinySNN):
        super().__init__()
        self.snn = snn

    def forward(self, x):
        return self.snn.fc2(self.snn.fc1(x.flatten(1)).clamp(0, 1))


@functools.lru_cache(maxsize=None)
def snn() -> TinySNN:
    torch.manual_seed(2)
    return train(TinySNN(), seed=2)


# ---------------------------------------------------------------- masked and stochastic models


class RoundST(nn.Module):
    """Input quantised to ``levels`` steps; its gradient is exactly zero (a hard step)."""

    def __init__(self, net: nn.Module, levels: int = 8):
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x):
        return self.net(torch.round(x * self.levels) / self.levels)


class BernoulliST(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, u):
        return (u < p).to(p.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Stochastic(nn.Module):
    """``net`` applied to the mean of ``draws`` Bernoulli(x) spike frames, fresh randomness every call."""

    def __init__(self, net: nn.Module, draws: int = 4):
        super().__init__()
        self.net, self.draws = net, draws

    def forward(self, x):
        p = x.unsqueeze(1).expand(x.shape[0], self.draws, *x.shape[1:])
        return self.net(BernoulliST.apply(p, torch.rand_like(p)).mean(1))


def masked() -> nn.Module:
    return RoundST(mlp())


def stochastic() -> nn.Module:
    return Stochastic(mlp())


# ---------------------------------------------------------------- checks of the assumptions above


def test_models_learn_the_task():
    _, _, x, y = dataset()
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    for name, model in [("mlp", mlp()), ("cnn", cnn()), ("snn", snn()), ("masked", masked())]:
        assert accuracy(model, x, y) > 0.8, name


def test_snn_spikes_and_differentiates_through_its_surrogate():
    model = snn()
    _, _, x, y = dataset()
    with torch.no_grad():
        s = model.spikes(x[:50])
    assert set(torch.unique(s).tolist()) == {0.0, 1.0}
    assert 0.02 < float(s.mean()) < 0.9
    xr = x[:50].clone().requires_grad_(True)
    F.cross_entropy(model(xr), y[:50]).backward()
    assert float(xr.grad.abs().sum()) > 0
    with swap(model, "zero"):
        xz = x[:50].clone().requires_grad_(True)
        F.cross_entropy(model(xz), y[:50]).backward()
        assert float(xz.grad.abs().sum()) == 0
    assert model.surrogate == ("triangle", 1.0)


def test_masked_model_has_zero_input_gradient_and_stochastic_model_is_random():
    _, _, x, y = dataset()
    xr = x[:20].clone().requires_grad_(True)
    F.cross_entropy(masked()(xr), y[:20]).backward()
    assert float(xr.grad.abs().sum()) == 0
    model = stochastic()
    with torch.no_grad():
        assert not torch.equal(model(x[:20]), model(x[:20]))

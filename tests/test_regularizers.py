"""MPD-SGR and TMI against direct computations on small tensors, their specs and their gradients."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from snnkit.models import build
from snnkit.nn.surrogate import parse
from snnkit.train.objectives import build_objective, build_regularizer
from snnkit.train.regularizers import MPDSGR, TMI, mpd_overlap, rate_sequence, temporal_mutual_information


def _omega_reference(u: np.ndarray, gamma: float) -> np.ndarray:
    """Normal-CDF overlap per (t, c): statistics over the batch and every axis after the channel."""
    u = np.moveaxis(u, 2, 0).reshape(u.shape[2], u.shape[0], u.shape[1], -1)  # [C, B, T, rest]
    out = np.zeros((u.shape[2], u.shape[0]))
    for c in range(u.shape[0]):
        for t in range(u.shape[2]):
            v = u[c, :, t].ravel()
            mu, sd = v.mean(), v.std()
            out[t, c] = norm.cdf((gamma - mu) / sd) - norm.cdf((-gamma - mu) / sd)
    return out


@pytest.mark.parametrize("shape", [(16, 3, 5), (6, 2, 3, 4, 4)])
def test_mpd_overlap_matches_normal_cdf(shape):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(shape, generator=g, dtype=torch.float64) * 0.7 + torch.linspace(-1, 1, shape[2],
                                                                                      dtype=torch.float64).view(
        1, 1, -1, *([1] * (len(shape) - 3)))
    got = mpd_overlap(u, 0.8, eps=0.0).numpy()
    np.testing.assert_allclose(got, _omega_reference(u.numpy(), 0.8), rtol=1e-9, atol=1e-12)
    # the symmetric form of the reference page: Phi((mu + g)/s) - Phi((mu - g)/s)
    v = u[:, 1, 2].flatten()
    mu, sd = float(v.mean()), float(v.std(unbiased=False))
    assert got[1, 2] == pytest.approx(norm.cdf((mu + 0.8) / sd) - norm.cdf((mu - 0.8) / sd), rel=1e-9)


def _mlp(surrogate="triangle:gamma=0.7", hidden=(12, 9)):
    torch.manual_seed(3)
    return build({"arch": "mlp", "input_shape": [6], "num_classes": 4, "hidden": list(hidden), "timesteps": 5,
                  "surrogate": surrogate, "threshold": 0.6})


def test_mpd_sgr_value_is_eta_times_layer_mean_of_overlaps():
    model = _mlp()
    x = torch.rand(32, 6)
    run = model.run(x)
    reg = build_regularizer("mpd-sgr:eta=0.3")
    value = reg(model, run, x, None).item()
    names = list(model.spiking_layers())
    assert len(names) == 3
    per_layer = [_omega_reference((run.membranes[n] - 0.6).detach().double().numpy(), 0.7).mean()
                 for n in names[:-1]]  # the output layer is excluded; gamma = the triangle's support
    assert value == pytest.approx(0.3 * np.mean(per_layer), rel=1e-4)
    explicit = build_regularizer("mpd-sgr:eta=0.3,gamma=0.2")(model, run, x, None).item()
    per_layer = [_omega_reference((run.membranes[n] - 0.6).detach().double().numpy(), 0.2).mean() for n in names[:-1]]
    assert explicit == pytest.approx(0.3 * np.mean(per_layer), rel=1e-4)


def test_mpd_sgr_default_gamma_is_surrogate_support():
    model = _mlp("atan:alpha=2")
    x = torch.rand(16, 6)
    run = model.run(x)
    support = parse("atan:alpha=2").support
    assert support == pytest.approx(3 / math.pi, rel=1e-6)  # 1 / (1 + (pi U)^2) = 1/10
    reg = MPDSGR(eta=1.0)
    assert reg(model, run, x, None).item() == pytest.approx(MPDSGR(1.0, support)(model, run, x, None).item())
    with pytest.raises(ValueError, match="unbounded support"):
        MPDSGR()(_mlp("straight_through"), _mlp("straight_through").run(x), x, None)
    with pytest.raises(ValueError, match="no spiking layer before its output"):
        single = build({"arch": "mlp", "input_shape": [6], "num_classes": 4, "hidden": []})
        MPDSGR()(single, single.run(x), x, None)


def test_mpd_sgr_gradient_reduces_the_overlap():
    model = _mlp()
    x = torch.rand(64, 6)
    reg = MPDSGR(eta=1.0)
    before = reg(model, model.run(x), x, None).item()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        reg(model, model.run(x), x, None).backward()
        opt.step()
    assert reg(model, model.run(x), x, None).item() < before - 0.05


def _tmi_reference(xs: np.ndarray, zs: np.ndarray, width: float, bins: int = 256) -> np.ndarray:
    """Per-sample KDE mutual information in bits, written out with loops."""
    grid = np.linspace(0, 255, bins)
    out = []
    for x, z in zip(xs, zs):
        kx = np.array([[math.exp(-0.5 * ((xt - b) / width) ** 2) for b in grid] for xt in x])
        kz = np.array([[math.exp(-0.5 * ((zt - b) / width) ** 2) for b in grid] for zt in z])
        px, pz = kx.mean(0), kz.mean(0)
        px, pz = px / (px.sum() + 1e-10), pz / (pz.sum() + 1e-10)
        joint = kx.T @ kz
        joint = joint / (joint.sum() + 1e-10)
        h = lambda p: -(p * np.log2(p + 1e-10)).sum()  # noqa: E731
        out.append(h(px) + h(pz) - h(joint))
    return np.array(out)


@pytest.mark.parametrize("width", [0.32, 3.0])
def test_tmi_matches_direct_kde_computation(width):
    g = torch.Generator().manual_seed(1)
    xs = torch.rand(3, 6, generator=g, dtype=torch.float64) * 60 + 10
    zs = torch.rand(3, 6, generator=g, dtype=torch.float64) * 200
    zs[0, 1] = zs[0, 0] + 0.2  # two nearly equal rates: overlapping kernels
    got = temporal_mutual_information(xs, zs, width).numpy()
    np.testing.assert_allclose(got, _tmi_reference(xs.numpy(), zs.numpy(), width), rtol=1e-9, atol=1e-9)


def test_tmi_known_values():
    t = torch.tensor([[10.0, 40.0, 90.0, 200.0]], dtype=torch.float64)
    # a copy of itself with well-separated values: I = log2(T)
    assert float(temporal_mutual_information(t, t)) == pytest.approx(2.0, abs=1e-6)
    # a sequence constant in time carries no information
    assert float(temporal_mutual_information(t, torch.full_like(t, 50.0))) == pytest.approx(0.0, abs=1e-7)


def test_tmi_regulariser_uses_first_and_last_spiking_layers():
    model = _mlp()
    x = torch.rand(8, 6)
    run = model.run(x)
    names = list(model.spiking_layers())
    reg = build_regularizer("tmi:lambda=0.2,width=2")
    assert isinstance(reg, TMI) and reg.lam == 0.2 and reg.layers(model) == (names[0], names[-1])
    expected = 0.2 * _tmi_reference(rate_sequence(run.spikes[names[0]]).detach().double().numpy(),
                                    rate_sequence(run.spikes[names[-1]]).detach().double().numpy(), 2.0).mean()
    assert reg(model, run, x, None).item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert build_regularizer("tmi:last=-2").layers(model) == (names[0], names[1])
    assert rate_sequence(run.spikes[names[0]]).shape == (8, 5)
    with pytest.raises(ValueError, match="unknown parameter"):
        build_regularizer("tmi:sigma=1")
    with pytest.raises(ValueError, match="same spiking layer"):
        build_regularizer("tmi:first=1,last=-2")(model, run, x, None)


def test_regularisers_compose_in_an_objective_and_backpropagate():
    model = _mlp()
    x, y = torch.rand(16, 6), torch.randint(0, 4, (16,))
    objective = build_objective("standard", ["mpd-sgr:eta=0.5", "tmi:lambda=0.05,width=4"])
    loss, logits, parts = objective(model, x, y)
    assert set(parts) == {"task", "mpd-sgr", "tmi"}
    assert loss.item() == pytest.approx(parts["task"] + parts["mpd-sgr"] + parts["tmi"], rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())

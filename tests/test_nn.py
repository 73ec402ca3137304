"""Spiking layers, surrogates and encoders against their written-down definitions (docs/semantics.md)."""
import math

import numpy as np
import pytest
import torch

from snnkit.nn import IF, LIF, CubaLIF, build_encoder, parse_surrogate, use_surrogate
from snnkit.nn.surrogate import SURROGATES

# Each surrogate's derivative written out independently of the package, as in the reference formulas.
FORMULAS = {
    "triangle:gamma=0.7": lambda u: np.maximum(0, 0.7 - abs(u)) / 0.7**2,
    "rectangular:width=0.6": lambda u: (abs(u) < 0.3) / 0.6,
    "sigmoid:k=3": lambda u: 3 * np.exp(-3 * u) / (1 + np.exp(-3 * u)) ** 2,
    "fast_sigmoid:k=25": lambda u: 1 / (25 * abs(u) + 1) ** 2,
    "atan:alpha=2": lambda u: (2 / 2) / (1 + (math.pi / 2 * 2 * u) ** 2),
    "escape:k=1.5,b=4": lambda u: 1.5 * np.exp(-4 * abs(u)),
    "straight_through": lambda u: np.ones_like(u),
}


def test_every_registered_surrogate_is_covered():
    assert {parse_surrogate(s).name for s in FORMULAS} == set(SURROGATES)


@pytest.mark.parametrize("spec", sorted(FORMULAS))
def test_surrogate_backward_matches_formula(spec):
    sg = parse_surrogate(spec)
    u = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64, requires_grad=True)
    s = sg.spike(u)
    assert torch.equal(s.detach(), (u > 0).double())
    (grad,) = torch.autograd.grad(s.sum(), u)
    np.testing.assert_allclose(grad.numpy(), FORMULAS[spec](u.detach().numpy()), rtol=1e-12, atol=1e-12)


def test_surrogate_specs_and_support():
    assert parse_surrogate("triangle:gamma=0.5").support == 0.5
    assert parse_surrogate("rectangular:width=2").support == 1.0
    assert parse_surrogate("superspike").name == "fast_sigmoid"
    # atan: derivative falls to a tenth of its peak where (pi/2 alpha u)^2 = 9
    assert parse_surrogate("atan:alpha=2").support == pytest.approx(3 / math.pi, rel=1e-9)
    assert math.isinf(parse_surrogate("straight_through").support)
    with pytest.raises(ValueError, match="unknown surrogate"):
        parse_surrogate("gaussian")
    with pytest.raises(ValueError, match="bad parameter"):
        parse_surrogate("atan:beta=3")


def lif_reference(x, beta, threshold, reset, v_leak=0.0, g=1.0, v_reset=0.0):
    """docs/semantics.md's LIF, written in numpy, for x [B, T, N]."""
    B, T, N = x.shape
    v = np.zeros((B, N))
    s_out, h_out = np.zeros_like(x), np.zeros_like(x)
    for t in range(T):
        h = beta * v + (1 - beta) * v_leak + g * x[:, t]
        s = h > threshold
        v = np.where(s, v_reset if reset == "zero" else h - threshold, h)
        s_out[:, t], h_out[:, t] = s, h
    return s_out, h_out


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_lif_follows_semantics(reset):
    torch.set_default_dtype(torch.float64)
    try:
        x = torch.randn(4, 12, 7)
        lif = LIF(beta=0.85, threshold=0.6, reset=reset, v_leak=0.2, input_scale=1.3)
        lif.record = True
        s = lif(x)
        s_ref, h_ref = lif_reference(x.numpy(), 0.85, 0.6, reset, v_leak=0.2, g=1.3)
        np.testing.assert_array_equal(s.numpy(), s_ref)
        np.testing.assert_allclose(lif.recorded["v"].numpy(), h_ref, rtol=1e-12, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_if_is_lif_without_leak():
    x = torch.rand(3, 10, 5)
    s = IF(threshold=1.0)(x)
    s_ref, _ = lif_reference(x.double().numpy(), 1.0, 1.0, "zero")
    np.testing.assert_array_equal(s.numpy(), s_ref)


def test_cubalif_follows_semantics():
    torch.set_default_dtype(torch.float64)
    try:
        x = torch.randn(2, 15, 4)
        layer = CubaLIF(alpha=0.55, beta=0.9, threshold=0.5, syn_scale=1.2, input_scale=0.8, v_leak=0.1)
        s = layer(x).numpy()
        xn = x.numpy()
        i = np.zeros((2, 4))
        v = np.zeros((2, 4))
        for t in range(15):
            i = 0.55 * i + 1.2 * xn[:, t]
            h = 0.9 * v + (1 - 0.9) * 0.1 + 0.8 * i
            st = h > 0.5
            v = np.where(st, 0.0, h)
            np.testing.assert_array_equal(s[:, t], st)
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("learn", [False, True])
def test_fused_scan_equals_step_function(reset, learn):
    """The fast whole-sequence path and the step path: identical forward, equal gradients."""
    torch.manual_seed(1)
    lif = LIF(beta=torch.rand(6) * 0.5 + 0.45, threshold=0.7, reset=reset, v_leak=0.05, input_scale=0.9,
              learn_beta=learn, learn_threshold=learn)
    x = torch.randn(5, 9, 6, requires_grad=True)
    w_s, w_h = torch.randn(5, 9, 6), torch.randn(5, 9, 6)
    params = [x] + ([lif.beta, lif.threshold] if learn else [])

    lif.record = True
    s = lif(x)
    h = lif.recorded["v"]
    grads = torch.autograd.grad((s * w_s).sum() + (h * w_h).sum(), params)

    state = lif.init_state(x[:, 0])
    s_steps, h_steps = [], []
    for t in range(x.shape[1]):
        st, state, ht = lif.step(x[:, t], state)
        s_steps.append(st)
        h_steps.append(ht)
    s2, h2 = torch.stack(s_steps, 1), torch.stack(h_steps, 1)
    grads2 = torch.autograd.grad((s2 * w_s).sum() + (h2 * w_h).sum(), params)

    assert torch.equal(s, s2) and torch.equal(h, h2)
    assert s.sum() > 0, "the test input must make the layer fire"
    for g1, g2 in zip(grads, grads2):
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


def test_state_resets_between_calls():
    from snnkit.models import build

    torch.manual_seed(0)
    model = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [32], "threshold": 0.3})
    a, b = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    first_b = model.run(b).outputs
    model(a)
    again_b = model.run(b).outputs
    assert first_b.sum() > 0
    assert torch.equal(first_b, again_b)


def test_use_surrogate_swaps_and_restores():
    from snnkit.models import build

    model = build({"arch": "mlp", "input_shape": [4], "num_classes": 3, "hidden": [8]})
    layers = list(model.spiking_layers().values())
    with use_surrogate(model, "triangle:gamma=0.3"):
        assert all(m.surrogate.spec == "triangle:gamma=0.3" for m in layers)
    assert all(m.surrogate.spec == "atan:alpha=2" for m in layers)


# --- encoders ---------------------------------------------------------------------------------------------

def test_direct_encoder_repeats_input():
    x = torch.rand(3, 2, 5)
    y = build_encoder("direct", 6)(x)
    assert y.shape == (3, 6, 2, 5)
    assert all(torch.equal(y[:, t], x) for t in range(6))


def test_poisson_encoder_rate_and_seed():
    x = torch.tensor([[0.0, 0.1, 0.5, 0.9, 1.0]])
    T = 4000
    enc = build_encoder({"name": "poisson", "seed": 3}, T)
    s = enc(x)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    rate = s.mean(1)[0]
    sigma = torch.sqrt(x[0] * (1 - x[0]) / T)
    assert torch.all((rate - x[0]).abs() <= 4 * sigma + 1e-12)
    assert rate[0] == 0 and rate[-1] == 1
    # seeded: same seed -> same draws; different seed -> different draws
    assert torch.equal(build_encoder({"name": "poisson", "seed": 3}, T)(x), s)
    assert not torch.equal(build_encoder({"name": "poisson", "seed": 4}, T)(x), s)
    # straight-through gradient
    xg = x.clone().requires_grad_(True)
    enc.reseed()
    (g,) = torch.autograd.grad(enc(xg).sum(), xg)
    assert torch.all(g == T)


def test_latency_encoder_first_spike_times():
    T = 8
    x = torch.tensor([[1.0, 0.75, 0.5, 0.2, 0.01, 0.0]])
    s = build_encoder({"name": "latency", "x_min": 0.05}, T)(x)
    assert s.shape == (1, T, 6)
    counts = s.sum(1)[0]
    assert counts.tolist() == [1, 1, 1, 1, 0, 0]
    times = s[0].argmax(0)[:4].tolist()
    expected = [round((1 - v) * (T - 1)) for v in [1.0, 0.75, 0.5, 0.2]]
    assert times == expected


def test_latency_encoder_gradient_is_sparse():
    T = 8
    x = torch.rand(64, 20, requires_grad=True)
    s = build_encoder("latency", T)(x)
    (g,) = torch.autograd.grad((s * torch.arange(T).view(1, T, 1)).sum(), x)
    zero_fraction = float((g == 0).float().mean())
    assert 0.2 < zero_fraction < 1.0

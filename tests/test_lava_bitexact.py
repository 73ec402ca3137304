"""Lava (fixed_pt) and the torch emulator give identical spike rasters, layer by layer.

One worker process runs every network of this module (Lava is imported once): the NIR zoo graphs Lava runs,
random MLPs and ConvNets with random integer parameters generated here (weights of every sign mode, odd
mixed-sign weights that Lava truncates, negative and positive weight exponents, graded inputs, sparse and
recurrent projections, biases, and layers driven into 24-bit wrap-around and saturation; and in the
``features`` networks: per-neuron decays (one Lava process per group, recurrent and convolutional projections
into them), LI/CubaLI readouts whose potentials are compared, and skip connections delayed by relay layers or
a delayed copy of the graded input), and lif_norse with the NIR paper's input, whose spike times must also
equal the paper's Lava trace.
"""
from __future__ import annotations


import nir
import numpy as np
import pytest
import torch

from snnkit.deploy.loihi.emulator import LoihiEmulator, to_numpy
from snnkit.deploy.loihi.graph import InputSpec, LoihiGraph, NeuronLayer, Projection
from snnkit.deploy.loihi.prepare import prepare_graph
from conftest import NO_LAVA_REASON, ZOO, lava_available

pytestmark = [pytest.mark.lava, pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)]


# --- random integer networks ----------------------------------------------------------------------------

def _weights(rng, shape, mode=None, density=1.0):
    mode = mode or rng.choice(["excitatory", "inhibitory", "mixed", "mixed"])
    if mode == "excitatory":
        w = rng.integers(0, 256, shape)
    elif mode == "inhibitory":
        w = -rng.integers(0, 256, shape)
    else:
        w = rng.integers(-256, 256, shape)  # odd values: Lava's Dense drops their lowest bit
    if density < 1:
        w = w * (rng.random(shape) < density)
    return w.astype(np.int32)


def _layer(rng, name, shape, depth, stress=None, kind="LIF", decay_groups=1, per_channel=False):
    du = 4095 if rng.random() < 0.4 else int(rng.integers(0, 4096))
    dv = 0 if rng.random() < 0.2 else int(rng.integers(0, 4096))
    if decay_groups > 1:  # per-neuron decays drawn from a few (du, dv) pairs: one Lava process per pair
        pairs = rng.integers(0, 4096, (decay_groups, 2))
        which = rng.integers(0, decay_groups, shape[0] if per_channel else shape)
        if per_channel:
            which = np.broadcast_to(which.reshape(-1, *[1] * (len(shape) - 1)), shape)
        du, dv = pairs[which, 0].astype(np.int32), pairs[which, 1].astype(np.int32)
    if stress == "wrap":
        du = 0  # the current never decays: it wraps around at 24 bits
    if stress == "saturate":
        dv = 0  # no leak: the large negative bias drives v into the clip
    bias_exp = rng.integers(0, 8, shape).astype(np.int32)
    bias_mant = (rng.integers(-4096, 4096, shape) * (rng.random(shape) < 0.5)).astype(np.int32)
    if stress == "saturate":  # half of the neurons: far below zero, v clips at -(2**23 - 1)
        bias_mant.reshape(-1)[::2] = -4096
        bias_exp.reshape(-1)[::2] = 7
    return NeuronLayer(name=name, kind=kind, shape=tuple(shape), depth=depth, du=du, dv=dv, vth=1,
                       bias_mant=bias_mant, bias_exp=bias_exp, du_f=1.0, dv_f=0.0, bias_f=np.zeros(shape))


def _dense(rng, name, src, dst, n_src, n_dst, *, exp, kind="dense", recurrent=False, bits=0, mode=None, delay=0):
    w = _weights(rng, (n_dst, n_src), mode, density=0.3 if kind == "sparse" else 0.9)
    return Projection(name=name, nodes=[name], src=src, dst=dst, kind=kind, weight=w, weight_exp=int(exp),
                      weight_f=w.astype(np.float64), recurrent=recurrent, message_bits=bits, delay=delay)


def _conv(rng, name, src, dst, in_shape, c_out, k, stride, padding, dilation, groups, *, exp, bits=0,
          mode="mixed", delay=0):
    w = _weights(rng, (c_out, in_shape[0] // groups, k, k), mode)
    h = (in_shape[1] + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wd = (in_shape[2] + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    return Projection(name=name, nodes=[name], src=src, dst=dst, kind="conv", weight=w, weight_exp=int(exp),
                      weight_f=w.astype(np.float64), message_bits=bits, stride=(stride, stride),
                      padding=(padding, padding), dilation=(dilation, dilation), groups=groups,
                      in_shape=tuple(in_shape), out_shape=(c_out, h, wd), delay=delay)


def _calibrate(lg: LoihiGraph, x: np.ndarray, rng) -> LoihiGraph:
    """Choose each layer's threshold (a power of two) so that it fires on roughly 10-45 % of its steps."""
    xt = torch.from_numpy(x.astype(np.float64))
    for layer in lg.layers:
        layer.vth = 131071
    for layer in sorted((layer for layer in lg.layers if not layer.readout), key=lambda l: l.depth):
        target = rng.uniform(0.1, 0.45)
        best = None
        for bits in range(18):
            layer.vth = min(2 ** bits, 131071)
            with torch.no_grad():
                rate = float(LoihiEmulator(lg).run(xt, encoded=True)[layer.name][:, layer.depth:].mean())
            if best is None or abs(rate - target) < best[0]:
                best = (abs(rate - target), layer.vth)
        layer.vth = best[1]
    return lg


def random_mlp(seed: int, graded: bool) -> tuple[LoihiGraph, np.ndarray]:
    rng = np.random.default_rng(seed)
    b, t, n_in = 4, 20, 14
    spec = (InputSpec("in", (n_in,), "counts", 1.0, 7, 3) if graded else InputSpec("in", (n_in,), "spikes"))
    x = rng.integers(0, 8, (b, t, n_in)) if graded else (rng.random((b, t, n_in)) < 0.35).astype(np.int32)
    layers = [_layer(rng, "h1", (20,), 1, stress="wrap" if seed % 2 else None), _layer(rng, "h2", (30,), 2),
              _layer(rng, "out", (6,), 3, stress="saturate" if seed % 2 == 0 else None)]
    projs = [_dense(rng, "fc1", "in", "h1", n_in, 20, exp=3 if seed % 2 else rng.integers(-2, 6),
                    bits=spec.message_bits, mode="excitatory" if seed % 2 else "mixed"),
             _dense(rng, "rec1", "h1", "h1", 20, 20, exp=rng.integers(-3, 3), recurrent=True,
                    mode="mixed" if seed % 2 else "inhibitory"),
             _dense(rng, "fc2", "h1", "h2", 20, 30, exp=rng.integers(-8, 0), mode="excitatory"),
             _dense(rng, "fc3", "h2", "out", 30, 6, exp=rng.integers(0, 8), kind="sparse", mode="mixed")]
    lg = LoihiGraph(input=spec, layers=layers, projections=projs, output="out", dt=1e-3)
    return _calibrate(lg, x, rng), x.astype(np.int32)


def random_convnet(seed: int, graded: bool) -> tuple[LoihiGraph, np.ndarray]:
    rng = np.random.default_rng(seed)
    b, t, shape = 3, 6, (2, 11, 11)
    spec = (InputSpec("in", shape, "analog", 7.0, 15, 5) if graded else InputSpec("in", shape, "spikes"))
    x = (rng.integers(-15, 16, (b, t, *shape)) if graded else (rng.random((b, t, *shape)) < 0.3).astype(np.int32))
    c1 = _conv(rng, "conv1", "in", "l1", shape, 4, 3, 1, 1, 1, 1, exp=7 if graded else 1, bits=spec.message_bits)
    c2 = _conv(rng, "conv2", "l1", "l2", c1.out_shape, 6, 3, 2, 0, 1, 2, exp=rng.integers(0, 3),
               mode="excitatory")
    c3 = _conv(rng, "conv3", "l2", "l3", c2.out_shape, 4, 2, 1, 1, 2, 1, exp=0)
    n3 = int(np.prod(c3.out_shape))
    layers = [_layer(rng, "l1", c1.out_shape, 1), _layer(rng, "l2", c2.out_shape, 2),
              _layer(rng, "l3", c3.out_shape, 3), _layer(rng, "fc", (12,), 4), _layer(rng, "out", (5,), 5)]
    projs = [c1, c2, c3, _dense(rng, "fc1", "l3", "fc", n3, 12, exp=rng.integers(-1, 3), mode="mixed"),
             _dense(rng, "fc2", "fc", "out", 12, 5, exp=1, mode="excitatory")]
    lg = LoihiGraph(input=spec, layers=layers, projections=projs, output="out", dt=1e-3)
    return _calibrate(lg, x, rng), x.astype(np.int32)


def random_features_mlp(seed: int) -> tuple[LoihiGraph, np.ndarray]:
    """Graded input; a hidden layer of three decay groups with a recurrent projection, a second of two; skip
    connections from the input (delayed input copies, 1 and 2 steps) and from the first hidden layer (one relay
    layer); a CubaLI (odd seeds: LI) readout with per-neuron decays and a saturating bias on some neurons."""
    rng = np.random.default_rng(seed)
    b, t, n_in = 4, 20, 14
    spec = InputSpec("in", (n_in,), "counts", 1.0, 7, 3)
    x = rng.integers(0, 8, (b, t, n_in))
    readout = "LI" if seed % 2 else "CubaLI"
    out = _layer(rng, "out", (6,), 3, kind=readout, decay_groups=2)
    if readout == "LI":
        out.du = 4095
    layers = [_layer(rng, "h1", (20,), 1, decay_groups=3), _layer(rng, "h2", (30,), 2, decay_groups=2), out]
    projs = [_dense(rng, "fc1", "in", "h1", n_in, 20, exp=rng.integers(0, 4), bits=spec.message_bits, mode="mixed"),
             _dense(rng, "rec1", "h1", "h1", 20, 20, exp=rng.integers(-3, 3), recurrent=True, mode="mixed"),
             _dense(rng, "fc2", "h1", "h2", 20, 30, exp=rng.integers(-4, 1), mode="mixed"),
             _dense(rng, "skip_in", "in", "h2", n_in, 30, exp=-2, bits=spec.message_bits, delay=1, mode="mixed"),
             _dense(rng, "fc3", "h2", "out", 30, 6, exp=rng.integers(0, 4), kind="sparse", mode="mixed"),
             _dense(rng, "skip_h1", "h1", "out", 20, 6, exp=2, delay=1, mode="inhibitory"),
             _dense(rng, "skip_in2", "in", "out", n_in, 6, exp=0, bits=spec.message_bits, delay=2, mode="excitatory")]
    lg = LoihiGraph(input=spec, layers=layers, projections=projs, output="out", dt=1e-3)
    return _calibrate(lg, x, rng), x.astype(np.int32)


def random_features_convnet(seed: int) -> tuple[LoihiGraph, np.ndarray]:
    """Spike input; convolution layers with per-channel decays (each Conv split by output channel between the
    groups, one with groups=2); a 3-D layer whose decays vary within channels, fed by Sparse projections and
    feeding a Conv; skips from the first layer over one, two and four stages (a chain of 3-D relay layers, a
    Sparse, a Conv and a Dense after them); an LI readout."""
    rng = np.random.default_rng(seed)
    b, t, shape = 3, 8, (2, 9, 9)
    spec = InputSpec("in", shape, "spikes")
    x = (rng.random((b, t, *shape)) < 0.3).astype(np.int32)
    c1 = _conv(rng, "conv1", "in", "l1", shape, 4, 3, 1, 1, 1, 1, exp=1)
    fmap = c1.out_shape
    n = int(np.prod(fmap))
    layers = [_layer(rng, "l1", fmap, 1, decay_groups=2, per_channel=True),
              _layer(rng, "l2", fmap, 2, decay_groups=3, per_channel=True),
              _layer(rng, "l3", fmap, 3, decay_groups=2), _layer(rng, "l4", fmap, 4, decay_groups=2, per_channel=True),
              _layer(rng, "fc", (10,), 5, decay_groups=2), _layer(rng, "out", (5,), 6, kind="LI")]
    layers[-1].du = 4095
    projs = [c1, _conv(rng, "conv2", "l1", "l2", fmap, 4, 3, 1, 1, 1, 2, exp=0, mode="excitatory"),
             _dense(rng, "sparse3", "l2", "l3", n, n, exp=-1, kind="sparse", mode="mixed"),
             _dense(rng, "skip3", "l1", "l3", n, n, exp=0, kind="sparse", mode="mixed", delay=1),
             _conv(rng, "conv4", "l3", "l4", fmap, 4, 3, 1, 1, 1, 1, exp=0),
             _conv(rng, "skip4", "l1", "l4", fmap, 4, 3, 1, 1, 1, 1, exp=0, delay=2),
             _dense(rng, "fc1", "l4", "fc", n, 10, exp=0, mode="mixed"),
             _dense(rng, "fc2", "fc", "out", 10, 5, exp=1, mode="mixed"),
             _dense(rng, "skip_out", "l1", "out", n, 5, exp=0, delay=4, mode="mixed")]
    lg = LoihiGraph(input=spec, layers=layers, projections=projs, output="out", dt=1e-3)
    return _calibrate(lg, x, rng), x


def _zoo_jobs():
    rng = np.random.default_rng(1)
    inputs = {
        "two_lif_neurons": (rng.random((2, 260, 1)) < 0.5).astype(float),
        "braille_noDelay_bias_zero": (rng.random((3, 25, 12)) < 0.3).astype(float),
        "braille_noDelay_noBias_subtract": (rng.random((3, 25, 12)) < 0.4).astype(float),
        "cnn_sinabs": rng.poisson(1.0, (2, 5, 2, 34, 34)).astype(float),
    }
    jobs = {}
    for name, x in inputs.items():
        lg = prepare_graph(nir.read(ZOO / f"{name}.nir"), x, source=name)
        jobs[name] = (lg, lg.input.encode(x)[0])
    trace = np.loadtxt(ZOO / "lif_lava_cpu_fixed.csv", delimiter=",")
    x = trace[:, 0].reshape(1, -1, 1)
    lg = prepare_graph(nir.read(ZOO / "lif_norse.nir"), x, source="lif_norse")
    jobs["lif_norse"] = (lg, lg.input.encode(x)[0])
    return jobs


def subtracting(lg: LoihiGraph, x: np.ndarray, seed: int) -> tuple[LoihiGraph, np.ndarray]:
    """The same network with reset by subtraction in every layer (snnkit's LIFSubtractReset on Lava),
    thresholds chosen again."""
    for layer in lg.layers:
        layer.reset = "subtract"
    return _calibrate(lg, x, np.random.default_rng(seed)), x


@pytest.fixture(scope="module")
def lava_runs():
    from snnkit.deploy.lava.target import run_lava

    jobs = _zoo_jobs()
    for seed, graded in [(0, False), (1, True)]:
        jobs[f"mlp{seed}"] = random_mlp(seed, graded)
        jobs[f"convnet{seed}"] = random_convnet(seed + 10, graded)
    jobs["mlp2"] = subtracting(*random_mlp(2, True), 2)
    jobs["convnet2"] = subtracting(*random_convnet(12, False), 12)
    for seed in (0, 1):
        jobs[f"features_mlp{seed}"] = random_features_mlp(20 + seed)
        jobs[f"features_convnet{seed}"] = random_features_convnet(30 + seed)
    names = list(jobs)
    results = run_lava([jobs[n] for n in names])
    return {n: (jobs[n][0], jobs[n][1], r[0]) for n, r in zip(names, results)}


def _emulate(lg: LoihiGraph, x: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return to_numpy(lg, LoihiEmulator(lg).run(torch.from_numpy(x.astype(np.float64)), encoded=True))


FEATURES = ["features_mlp0", "features_mlp1", "features_convnet0", "features_convnet1"]


@pytest.mark.parametrize("name", ["lif_norse", "two_lif_neurons", "braille_noDelay_bias_zero",
                                  "braille_noDelay_noBias_subtract", "cnn_sinabs", "mlp0", "mlp1", "convnet0",
                                  "convnet1", "mlp2", "convnet2", *FEATURES])
def test_emulator_equals_lava_on_every_layer(lava_runs, name):
    lg, x, lava = lava_runs[name]
    emu = _emulate(lg, x)
    assert set(emu) == set(lava) == {layer.name for layer in lg.layers}
    for layer in lg.layers:
        a, b = lava[layer.name], emu[layer.name]
        assert a.shape == b.shape == (x.shape[0], x.shape[1] + lg.delay, layer.size)
        diff = np.argwhere(a != b)
        assert diff.size == 0, f"{name}/{layer.name}: {len(diff)} differing entries, first at {diff[:3].tolist()}"


@pytest.mark.parametrize("name", ["mlp0", "mlp1", "convnet0", "convnet1", "mlp2", "convnet2", *FEATURES])
def test_random_networks_are_active(lava_runs, name):
    """Neither silent nor saturated layers, readouts that move: the equality above is informative."""
    lg, x, lava = lava_runs[name]
    for layer in lg.layers:
        r = lava[layer.name][:, layer.depth:]
        if layer.readout:
            assert r.dtype == np.int32 and len(np.unique(r)) > r.size // 4, f"{name}/{layer.name}: flat potential"
        else:
            assert 0 < r.mean() < 0.9, f"{name}/{layer.name}: firing fraction {r.mean():.3f}"


@pytest.mark.parametrize("name", FEATURES)
def test_feature_networks_exercise_groups_readouts_and_relays(lava_runs, name):
    """The feature networks really hold several decay groups per layer (some within channels), delayed
    projections from the input and from layers (relays), and a readout."""
    lg, _, _ = lava_runs[name]
    assert lg.layer(lg.output).readout
    assert sum(len(layer.groups()) > 1 for layer in lg.layers) >= 3
    sources = {p.src for p in lg.projections if p.delay}
    assert any(src != lg.input.name for src in sources)
    assert "convnet" in name or lg.input.name in sources


def test_random_networks_reach_wraparound_and_saturation(lava_runs):
    """The stressed layers really leave the linear range, so those paths are part of the equality above."""
    events = {}
    for name in ("mlp0", "mlp1"):
        lg, x, _ = lava_runs[name]
        emu = LoihiEmulator(lg)
        with torch.no_grad():
            emu.run(torch.from_numpy(x.astype(np.float64)), encoded=True)
        events[name] = emu.overflow
    assert events["mlp1"]["h1"]["u_wraps"] > 0
    assert events["mlp0"]["out"]["v_saturations"] > 0


def test_lif_norse_spike_times_equal_the_papers_lava_trace(lava_runs):
    lg, x, lava = lava_runs["lif_norse"]
    trace = np.loadtxt(ZOO / "lif_lava_cpu_fixed.csv", delimiter=",")
    expected = np.nonzero(trace[:, 2])[0]
    got = np.nonzero(lava[lg.output][0, :, 0])[0]
    assert expected.size > 0
    np.testing.assert_array_equal(got, expected)

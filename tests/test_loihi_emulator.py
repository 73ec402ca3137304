"""The torch Loihi emulator (``loihi-emu``) without Lava: the paper's Lava trace, alignment with the reference
semantics, batching, the target's result record, the differentiable mode, and CPU/GPU agreement."""
from __future__ import annotations

import math

import nir
import numpy as np
import pytest
import torch

from snnkit.deploy.base import DeployError, get_target
from snnkit.deploy.loihi import emulator, quantize
from snnkit.deploy.loihi.emulator import LoihiEmulator, LoihiEmulatorTarget, LoihiModule, conv2d_im2col
from snnkit.deploy.loihi.prepare import infer_input, prepare_graph
from snnkit.energy.counting import fanout
from snnkit.graph import ops
from conftest import ZOO



@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny per-step ops: one thread avoids OpenMP spin-waits on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _if_net(seed: int, n_in=6, n_h=8, n_out=4) -> nir.NIRGraph:
    """IF layers whose weights are multiples of 1/16: Loihi 2 represents them exactly."""
    rng = np.random.default_rng(seed)
    w1 = rng.integers(-12, 16, (n_h, n_in)) / 16
    w2 = rng.integers(-8, 16, (n_out, n_h)) / 16

    def cell(n):
        return nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n))

    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}), "fc1": nir.Linear(weight=w1),
             "l1": cell(n_h), "fc2": nir.Linear(weight=w2), "l2": cell(n_out),
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("input", "fc1"), ("fc1", "l1"), ("l1", "fc2"), ("fc2", "l2"), ("l2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1e-3})


def test_lif_norse_reproduces_the_papers_lava_fixed_point_trace():
    trace = np.loadtxt(ZOO / "lif_lava_cpu_fixed.csv", delimiter=",")
    res = LoihiEmulatorTarget().run(nir.read(ZOO / "lif_norse.nir"), trace[:, 0].reshape(1, -1, 1))
    assert res.delay == 1 and res.outputs.shape == (1, 1001, 1)
    np.testing.assert_array_equal(np.nonzero(res.outputs[0, :, 0])[0], np.nonzero(trace[:, 2])[0])
    # on the reference time axis the spikes are those of the exact (Norse) solution
    norse = np.loadtxt(ZOO / "lif_norse.csv", delimiter=",")
    np.testing.assert_array_equal(np.nonzero(res.aligned_outputs(1000)[0, :, 0])[0], np.nonzero(norse[:, 2])[0])


def test_exactly_representable_network_equals_the_torch_reference_after_the_delay():
    g = _if_net(0)
    x = (np.random.default_rng(1).random((16, 20, 6)) < 0.4).astype(np.float32)
    ref = get_target("torch", device="cpu").run(g, x, record=True)
    emu = LoihiEmulatorTarget().run(g, x, record=True)
    assert emu.delay == 2 and emu.outputs.shape == (16, 22, 4)
    assert ref.outputs.sum() > 0
    np.testing.assert_array_equal(emu.aligned_outputs(20), ref.outputs)
    np.testing.assert_array_equal(emu.records["l1"][:, 1:21], ref.records["l1"])  # hidden layer: delay 1
    assert np.all(emu.records["l1"][:, 0] == 0) and np.all(emu.outputs[:, :2] == 0)


def test_batching_does_not_change_any_sample():
    g = nir.read(ZOO / "braille_noDelay_bias_zero.nir")  # recurrent, with biases
    x = (np.random.default_rng(2).random((6, 30, 12)) < 0.3).astype(np.float32)
    lg = prepare_graph(g, x)
    whole = LoihiEmulatorTarget().run_quantised(lg, g, x, record=True)
    alone = [LoihiEmulatorTarget(batch_size=1).run_quantised(lg, g, x[i:i + 1], record=True) for i in (0, 5)]
    for i, r in zip((0, 5), alone):
        for name in whole.records:
            np.testing.assert_array_equal(whole.records[name][i], r.records[name][0])
    assert whole.total_spikes > 0


def test_result_record_counts_the_target_time_axis():
    g = nir.read(ZOO / "cnn_sinabs.nir")
    x = np.random.default_rng(3).poisson(0.5, (3, 4, 2, 34, 34)).astype(np.float32)
    res = LoihiEmulatorTarget().run(g, x, record=True)
    steps = 4 + res.delay
    by_name = {layer.name: layer for layer in res.layers}
    assert list(by_name) == ["0", "1", "2", "3", "5", "6", "9", "10", "11", "12"]
    for name, rec in res.records.items():
        assert by_name[name].spikes == int(rec.sum())
        assert by_name[name].neuron_updates == by_name[name].neurons * 3 * steps
    # synaptic ops: input events (T steps) and pooled spike counts (a connection node's activity) x fan-out
    assert by_name["0"].synops == int((x.sum(axis=(0, 1)) * fanout(g.nodes["0"], (2, 34, 34))).sum()) > 0
    pooled = ops.sum_pool2d(res.records["3"].sum(axis=(0, 1))[None].astype(float), (2, 2), (2, 2), (0, 0))[0]
    assert by_name["5"].synops == int((pooled * fanout(g.nodes["5"], (16, 8, 8))).sum()) > 0
    assert res.info["quantisation"]["input"]["mode"] == "counts"
    assert set(res.info["overflow_events"]) == set(res.records)


def test_input_inference():
    assert infer_input(np.array([[[0.0, 1.0]]])) == ("spikes", 1.0)
    assert infer_input(np.array([[[0.0, 3.0]]])) == ("counts", 3.0)
    assert infer_input(np.array([[[0.3, -0.7]]])) == ("analog", 1.0)
    assert infer_input(np.array([[[0.0, 1.0]]]), {"encoder": {"name": "direct"}}) == ("analog", 1.0)
    assert infer_input(np.array([[[0.2, 0.0]]]), {"encoder": {"name": "poisson"}}) == ("spikes", 1.0)
    with pytest.raises(DeployError, match="input must be \\[B, T, ...\\]"):
        LoihiEmulatorTarget().run(_if_net(0), np.zeros((3, 6)))
    with pytest.raises(DeployError, match="loihi-emu: input has shape"):
        LoihiEmulatorTarget().run(_if_net(0), np.zeros((1, 3, 5)))


def _analog_mlp(seed: int) -> tuple[nir.NIRGraph, np.ndarray]:
    rng = np.random.default_rng(seed)
    beta = 0.9
    lif = lambda n: nir.LIF(tau=np.full(n, 1e-3 / (1 - beta)), r=np.full(n, 1 / (1 - beta)),  # noqa: E731
                            v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))
    nodes = {"input": nir.Input(input_type={"input": np.array([16])}),
             "fc1": nir.Affine(weight=rng.normal(0, 0.5, (24, 16)), bias=rng.normal(0, 0.05, 24)), "l1": lif(24),
             "fc2": nir.Affine(weight=rng.normal(0, 0.5, (5, 24)), bias=np.zeros(5)), "l2": lif(5),
             "output": nir.Output(output_type={"output": np.array([5])})}
    edges = [("input", "fc1"), ("fc1", "l1"), ("l1", "fc2"), ("fc2", "l2"), ("l2", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1e-3, "encoder": {"name": "direct"}})
    x = np.repeat(rng.random((32, 1, 16)), 10, axis=1).astype(np.float32)
    return g, x


def test_quantised_network_stays_close_to_the_float_reference():
    g, x = _analog_mlp(4)
    ref = get_target("torch", device="cpu").run(g, x)
    emu = LoihiEmulatorTarget().run(g, x)
    a, b = emu.aligned_outputs(10), ref.outputs
    assert b.sum() > 50
    assert np.mean(a == b) > 0.97
    assert np.mean(emu.predictions() == ref.predictions()) >= 0.9


def test_differentiable_mode_has_identical_forward_and_useful_gradients():
    g, x = _analog_mlp(5)
    lg = prepare_graph(g, x)
    exact = LoihiEmulator(lg).run(torch.from_numpy(x))[lg.output]
    xt = torch.from_numpy(x).double().requires_grad_(True)
    module = LoihiModule(lg)
    out = module(xt)
    assert torch.equal(out.detach(), exact)
    logits = out.sum(1)
    logits[:, 0].sum().backward()
    grad = xt.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # the surrogate gradient points where the float model's does: raising inputs with positive gradient
    # should (on average) raise class 0's spike count
    step = 0.05 * grad.sign()
    with torch.no_grad():
        up = LoihiEmulator(lg).run(torch.clamp(xt + step, 0, 1))[lg.output].sum(1)[:, 0]
        down = LoihiEmulator(lg).run(torch.clamp(xt - step, 0, 1))[lg.output].sum(1)[:, 0]
    assert up.sum() > down.sum()


def test_repeated_frame_is_projected_once_with_the_same_values_and_gradients():
    """A time-invariant input (one frame as a stride-0 view, the direct encoder's output) is encoded and projected
    once: every raster is identical to the same input written out step by step, and the gradient at the frame
    agrees to rounding (summed over the steps before the product instead of after)."""
    g, x = _analog_mlp(6)
    lg = prepare_graph(g, x)
    frame = torch.from_numpy(x[:, :1]).double()
    runs = []
    for make in (lambda f: f.expand(-1, x.shape[1], -1), lambda f: f.repeat(1, x.shape[1], 1)):
        f = frame.clone().requires_grad_(True)
        xin = make(f)
        assert (xin.stride(1) == 0) == (len(runs) == 0)
        emu = LoihiEmulator(lg, differentiable=True)
        rows, project = [], emu._project
        emu._project = lambda i, p, src: rows.append((p.src, src.shape[0])) or project(i, p, src)
        out = emu.run(xin)
        assert dict(rows)[lg.input.name] == x.shape[0] * (1 if xin.stride(1) == 0 else x.shape[1])
        (grad,) = torch.autograd.grad((out[lg.output] * torch.linspace(-1, 1, 5, dtype=torch.float64)).sum(), f)
        runs.append(({k: r.detach() for k, r in out.items()}, grad))
    (a, ga), (b, gb) = runs
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert float(gb.abs().sum()) > 0
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6 * float(gb.abs().max()))


class _FormerSpikeFn(torch.autograd.Function):
    """The emulator's spike before it used snnkit.nn.surrogate.ATan: its own arctan formula, written out."""

    @staticmethod
    def forward(ctx, z, alpha):
        ctx.save_for_backward(z)
        ctx.alpha = alpha
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        a = ctx.alpha
        return grad * (a / 2) / (1 + (math.pi / 2 * a * z) ** 2), None


def _stepped(drive, bias, emu, plan, surrogate):
    """``_ScanFn.apply`` replaced by the stepped form: autograd through every step of the layer."""
    return emu._scan(plan, drive, bias, surrogate)[0]


def _former_spike(h, thr, alpha):
    return _FormerSpikeFn.apply((h - thr) / thr, getattr(alpha, "alpha", alpha))  # a number, or an ATan


def test_spike_surrogate_is_the_former_arctan_formula(monkeypatch):
    """The spike takes nn.surrogate.ATan on (h - thr) / thr: the same spikes as the formula it replaced and the
    same gradients up to the order of one multiplication (grad * (a/2 / D) against (grad * a/2) / D: at most an
    ulp or two), for the spike alone and through a whole differentiable emulator (its one-pass backward against
    the stepped form with the former formula)."""
    gen = torch.Generator().manual_seed(3)
    thr = float(37 << 6)
    for alpha in (2.0, 0.5, 3.7):
        h = torch.randint(-3 * int(thr), 3 * int(thr), (4000,), generator=gen).double().requires_grad_(True)
        up = torch.randn(4000, generator=gen, dtype=torch.float64)
        s, s_old = emulator._spike(h, thr, alpha), _former_spike(h, thr, alpha)
        assert torch.equal(s, s_old) and 0 < float(s.detach().sum()) < 4000
        (g,), (g_old,) = (torch.autograd.grad(out, h, up) for out in (s, s_old))
        torch.testing.assert_close(g, g_old, rtol=1e-15, atol=0)

    g, x = _analog_mlp(5)
    lg = prepare_graph(g, x)
    grads, outs = [], []
    for spike in (emulator._spike, _former_spike):
        if spike is _former_spike:  # the stepped form (autograd through every step) with the former formula
            monkeypatch.setattr(emulator, "_spike", spike)
            monkeypatch.setattr(emulator._ScanFn, "apply", _stepped)
        xt = torch.from_numpy(x).double().requires_grad_(True)
        out = LoihiModule(lg)(xt)
        (grad,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum(), xt)
        outs.append(out.detach())
        grads.append(grad)
    assert torch.equal(outs[0], outs[1]) and grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14 * float(grads[1].abs().max()))


@pytest.mark.parametrize("geom", [((1, 1), (0, 0), (1, 1), 1), ((2, 1), (1, 2), (1, 1), 2), ((1, 2), (2, 0), (2, 1), 3)])
def test_gpu_convolution_path_is_exact(geom):
    """The im2col convolution used on GPUs (cuDNN may pick inexact algorithms), checked on the CPU."""
    stride, padding, dilation, groups = geom
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.integers(0, 4, (5, 6, 11, 9)).astype(np.float32))
    w = torch.from_numpy(rng.integers(-256, 256, (12, 6 // groups, 3, 2)).astype(np.float32))
    ref = torch.nn.functional.conv2d(x.double(), w.double(), stride=stride, padding=padding, dilation=dilation,
                                     groups=groups)
    got = conv2d_im2col(x, w, stride, padding, dilation, groups)
    assert torch.equal(got.double(), ref)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_cuda_request_without_cuda_is_one_line():
    with pytest.raises(DeployError, match="loihi-emu: device 'cuda' requested but CUDA is not available"):
        LoihiEmulatorTarget(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_and_cpu_emulation_are_identical():
    g = nir.read(ZOO / "cnn_sinabs.nir")
    x = np.random.default_rng(6).poisson(1.0, (8, 6, 2, 34, 34)).astype(np.float32)
    lg = prepare_graph(g, x)
    cpu = LoihiEmulatorTarget(device="cpu").run_quantised(lg, g, x, record=True)
    gpu = LoihiEmulatorTarget(device="cuda").run_quantised(lg, g, x, record=True)
    assert cpu.total_spikes > 0
    for name in cpu.records:
        np.testing.assert_array_equal(cpu.records[name], gpu.records[name])
    m = quantize(_analog_mlp(7)[0], input_mode="analog")
    xa = torch.from_numpy(_analog_mlp(7)[1])
    np.testing.assert_array_equal(LoihiEmulator(m).run(xa)[m.output].numpy(),
                                  LoihiEmulator(m, device="cuda").run(xa)[m.output].cpu().numpy())


class _ScaledPath(emulator.FloatPath):
    """A float path whose messages and biases are the exact integers times parameters equal to 1 (forward
    values unchanged), so that gradients reach the parameters through both."""

    def __init__(self, emu_for_messages: LoihiEmulator):
        self.emu = emu_for_messages
        lg = emu_for_messages.lg
        self.msg = {p.name: torch.ones((), dtype=torch.float64, requires_grad=True) for p in lg.projections}
        self.gain = {layer.name: torch.ones((), dtype=torch.float64, requires_grad=True) for layer in lg.layers}

    def message(self, p, x):
        return self.emu._message(self.emu.lg.projections.index(p), p, x) * self.msg[p.name]

    def bias(self, layer):
        return self.emu._bias[layer.name] * self.gain[layer.name]


def _random_networks():
    """Integer networks of every neuron kind and feature (those the Lava bit-exactness tests run)."""
    from test_lava_bitexact import (random_convnet, random_features_convnet, random_features_mlp, random_mlp,
                                    subtracting)

    return [random_mlp(0, False), random_mlp(1, True), random_convnet(0, False), random_features_mlp(0),
            random_features_mlp(1), random_features_convnet(0), subtracting(*random_mlp(2, True), 2)]


@pytest.fixture(params=[True, False], ids=["compiled", "torch"])
def native(request):
    """Run with the compiled scan (where it builds) and with the torch loop."""
    from snnkit.nn import native as kernels

    kernels.set_enabled(request.param)
    yield request.param
    kernels.set_enabled(kernels.build._env_enabled())


def test_compiled_and_torch_scans_are_identical():
    """The compiled loop (``loihi_scan.h``) and the torch loop give the same rasters, potentials and overflow
    counts (the Lava tests check each against Lava where Lava is installed)."""
    from snnkit.nn import native as kernels

    kernels.set_enabled(True)  # also where $SNNKIT_NATIVE=0 turns them off by default: both loops are compared
    found = kernels.load()
    kernels.set_enabled(kernels.build._env_enabled())
    if found is None:
        pytest.skip("no C compiler: only the torch loop runs")
    events = {"u_wraps": 0, "v_saturations": 0}
    for lg, x in _random_networks():
        runs = []
        for on in (True, False):
            kernels.set_enabled(on)
            emu = LoihiEmulator(lg)
            runs.append((emu.run(torch.from_numpy(x.astype(np.float64)), encoded=True), dict(emu.overflow)))
        kernels.set_enabled(kernels.build._env_enabled())
        (a, oa), (b, ob) = runs
        assert oa == ob and set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in a)
        for counts in oa.values():
            for key in events:
                events[key] += counts[key]
    assert events["u_wraps"] > 0 and events["v_saturations"] > 0  # both loops met the wrap and the clip


def test_one_pass_backward_equals_autograd_through_every_step(monkeypatch, native):
    """Feed-forward layers take their straight-through gradient in one reverse pass (``_ScanFn``, compiled or
    torch); it must be the gradient autograd takes through the stepped form (the one recurrent layers use), for
    every neuron kind: LIF/IF with reset to zero or by subtraction, per-neuron decays, CubaLIF currents that
    wrap, saturating voltages, LI/CubaLI readouts, skip connections, and float-path messages and biases."""
    cases = _random_networks()
    for lg, x in cases:
        weights = None
        results = []
        for one_pass in (True, False):
            if not one_pass:
                monkeypatch.setattr(emulator._ScanFn, "apply", _stepped)
            path = _ScaledPath(LoihiEmulator(lg))
            emu = LoihiEmulator(lg, differentiable=True, float_path=path)
            xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
            out = emu.run(xt, encoded=False)
            if weights is None:
                gen = torch.Generator().manual_seed(0)
                weights = {k: torch.randn(r.shape, generator=gen, dtype=torch.float64) for k, r in out.items()}
            loss = sum((r * weights[k]).sum() for k, r in out.items())
            params = [xt, *path.msg.values(), *path.gain.values()]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            results.append(([r.detach() for r in out.values()], grads, dict(emu.overflow)))
            monkeypatch.undo()
        (out1, g1, o1), (out2, g2, o2) = results
        assert all(torch.equal(a, b) for a, b in zip(out1, out2)) and o1 == o2
        assert float(g1[0].abs().sum()) > 0
        for a, b in zip(g1, g2):
            if a is None or b is None:
                assert a is None and b is None or float((a if b is None else b).abs().sum()) == 0
                continue
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))


def test_chunked_batch_equals_one_pass():
    """A batch split into chunks (CPU, :meth:`LoihiEmulator.chunk_size`) gives the rasters and overflow counts
    of the whole batch at once, and its gradients up to float32 rounding (the products pass their gradient in
    float32, whose summation order depends on the batch)."""
    for lg, x in _random_networks()[:4]:
        xt = torch.from_numpy(np.concatenate([x] * 3).astype(np.float64))
        whole, chunked = LoihiEmulator(lg), LoihiEmulator(lg)
        chunked.CHUNK_BYTES = 1  # one sample per chunk
        assert chunked.chunk_size(xt.shape[0], xt.shape[1]) == 1 < whole.chunk_size(xt.shape[0], xt.shape[1])
        a, b = whole.run(xt, encoded=True), chunked.run(xt, encoded=True)
        assert whole.overflow == chunked.overflow and all(torch.equal(a[k], b[k]) for k in a)
        grads = []
        for size in (LoihiEmulator.CHUNK_BYTES, 1):
            emu = LoihiEmulator(lg, differentiable=True)
            emu.CHUNK_BYTES = size
            xg = xt.clone().requires_grad_(True)
            out = emu.run(xg)[lg.output]
            (g,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum(), xg)
            grads.append(g)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6 * float(grads[0].abs().max()))

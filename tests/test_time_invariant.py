"""The direct code's constant input computed once (SpikingModel.propagate) and the 2 x 2 pooling fast path
(snnkit.nn.layers) give what the step-by-step computation gives: outputs, gradients, BatchNorm statistics."""
import copy

import pytest
import torch
import torch.nn.functional as F

from snnkit.models import build
from snnkit.nn import native
from snnkit.nn.layers import AvgPool2d, SumPool2d, time_invariant


def _twins(arch: str, batchnorm: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = build({"arch": arch, "input_shape": [1, 8, 8], "num_classes": 10, "timesteps": 6,
                   "batchnorm": batchnorm})
    return model, copy.deepcopy(model)


def _stepwise(model, x):
    """The same model with the encoded input materialised (no stride-0 view: every step computed)."""
    h = model.encoder(x).contiguous()
    assert not time_invariant(h)
    return model.layers(h).mean(1) * model.logit_scale


@pytest.mark.parametrize("arch,batchnorm", [("mlp", False), ("mlp", True), ("convnet", True), ("convnet", False)])
def test_constant_input_once_equals_every_step(arch, batchnorm):
    fast, slow = _twins(arch, batchnorm)
    x = torch.rand(12, 1, 8, 8, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    for _ in range(2):  # two training steps' worth of BatchNorm statistics
        a, b = fast(x), _stepwise(slow, x2)
    assert torch.equal(a, b)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(fast.named_parameters(), slow.parameters()):
        # rounding relative to the largest gradient of the model (the bias before a BatchNorm has a gradient
        # that is exactly zero in exact arithmetic, so only its rounding noise can be compared)
        scale = max(r.grad.abs().max().item() for r in slow.parameters())
        assert (p.grad - q.grad).abs().max().item() <= 1e-5 * scale, name
    assert (x.grad - x2.grad).abs().max() <= 1e-5 * x2.grad.abs().max()
    for (name, u), v in zip(fast.named_buffers(), slow.named_buffers()):
        torch.testing.assert_close(u, v[1], rtol=1e-6, atol=1e-7, msg=name)
    if batchnorm:  # the running variance counts all T steps (unbiased over B*T*H*W samples, not B*H*W)
        bn = next(m for m in fast.modules() if isinstance(m, torch.nn.BatchNorm1d))
        assert int(bn.num_batches_tracked) == 2
    fast.eval()
    slow.eval()
    assert torch.equal(fast(x), _stepwise(slow, x))


def test_recordings_cover_every_step():
    model, _ = _twins("mlp", False)
    run = model.run(torch.rand(4, 1, 8, 8))
    spikes = next(iter(run.spikes.values()))
    assert spikes.shape[:2] == (4, 6) and run.outputs.shape == (4, 6, 10)


def test_time_invariant_is_only_a_stride_zero_view():
    x = torch.rand(3, 5)
    assert time_invariant(x.unsqueeze(1).expand(3, 4, 5))
    assert not time_invariant(x.unsqueeze(1).expand(3, 4, 5).contiguous())
    assert not time_invariant(x.unsqueeze(1))  # one step: nothing to save


@pytest.mark.parametrize("cls,scale", [(AvgPool2d, 0.25), (SumPool2d, 1.0)])
@pytest.mark.parametrize("shape", [(2, 3, 4, 8, 8), (2, 3, 2, 6, 4)])
def test_pool_2x2_fast_path_matches_aten(cls, scale, shape):
    spikes = (torch.rand(shape) < 0.3).float().requires_grad_()
    pool = cls(2)
    y = pool(spikes)
    flat = spikes.reshape(-1, *shape[2:])
    ref = F.avg_pool2d(flat, 2).reshape(*shape[:2], *y.shape[2:]) * (4 * scale)
    assert torch.equal(y, ref)  # spikes: the window sums are exact in any order
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, spikes, g)
    (grad_ref,) = torch.autograd.grad(ref, spikes, g)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-7)


def test_pool_other_windows_use_aten():
    x = torch.rand(2, 3, 4, 9, 9)
    pool = AvgPool2d(3, stride=2, padding=1)
    ref = F.avg_pool2d(x.reshape(-1, 4, 9, 9), 3, stride=2, padding=1).reshape(2, 3, 4, 5, 5)
    assert torch.equal(pool(x), ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pool_kernels_equal_the_torch_form(dtype):
    if native.load() is None:
        pytest.skip("no compiled kernels on this machine (no C compiler, or SNNKIT_NATIVE=0)")
    x = torch.randn(2, 3, 5, 6, 4, dtype=dtype, requires_grad=True)  # analog values: rounding order matters
    g = torch.randn(2, 3, 5, 3, 2, dtype=dtype)
    results = []
    for enabled in (True, False):
        native.set_enabled(enabled)
        try:
            y = AvgPool2d(2)(x)
            (grad,) = torch.autograd.grad(y, x, g)
        finally:
            native.set_enabled(True)
        results.append((y, grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("compiled", [False, True])
def test_drive_of_a_repeated_frame_is_computed_once_with_the_same_spikes(compiled, monkeypatch):
    """A LIF layer with a real drive (input gain, resting potential) given a frame to repeat (``forward_frame``,
    what ``SpikingModel.propagate`` calls) scales the frame once and scans a stride-0 view: spikes identical to
    those of the materialised input, eagerly and under torch.compile (where the drive's terms are always written:
    they used to be written for every step). Inputs and parameters are dyadic, so every value is exact whichever
    kernels (fused or not) compute it."""
    from snnkit.nn.neurons import LIF

    lif = LIF(beta=0.5, input_scale=0.75, v_leak=0.25, threshold=0.5)
    frame = torch.randint(-64, 64, (5, 1, 33), generator=torch.Generator().manual_seed(0)) / 64
    scanned, scan = [], lif._scan
    monkeypatch.setattr(lif, "_scan", lambda drive, steps=None: scanned.append((drive.shape[1], steps))
                        or scan(drive, steps))
    # aot_eager: the traced graph (the drive's terms written, the operator) without Inductor's C++ code generation,
    # which fails under the portable run's ATEN_CPU_CAPABILITY=default
    run = torch.compile(lif.forward_frame, backend="aot_eager", dynamic=False) if compiled else lif.forward_frame
    out = run(frame, 6)
    monkeypatch.undo()
    if not compiled:
        assert scanned == [(1, 6)]  # the scan got one frame to repeat
    assert torch.equal(out, lif(frame.expand(5, 6, 33).contiguous())) and 0 < float(out.mean()) < 1


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("subtract", [False, True])
def test_repeated_drive_gradient_is_the_sum_over_steps(kernels, subtract):
    """``lif_scan(..., steps=T)`` on one frame: spikes and potentials identical to the scan of the frame copied T
    times, and the frame's gradient (summed over the steps inside the backward) equal, to rounding, to the sum
    over time of the copied input's gradient; time-first and batch-first alike."""
    from snnkit.nn.functional import lif_scan
    from snnkit.nn.surrogate import parse

    gen = torch.Generator().manual_seed(1)
    frame = torch.rand(4, 1, 3, 5, generator=gen, dtype=torch.float64) * 1.5
    grad_s, grad_h = (torch.randn(4, 7, 3, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    beta, th, vr = (torch.tensor(v, dtype=torch.float64) for v in (0.8, 1.0, 0.0))
    args = (beta, th, vr, parse("atan:alpha=2"), subtract)
    native.set_enabled(kernels)  # conftest restores $SNNKIT_NATIVE's choice after the test
    if kernels and native.load() is None:
        pytest.skip("no C compiler (or the built kernels disagreed with torch): only the torch path exists")
    for batch_first in (True, False):
        swap = (lambda t: t) if batch_first else (lambda t: t.transpose(0, 1))
        f = swap(frame).detach().requires_grad_()
        s, h = lif_scan(f, *args, with_h=True, batch_first=batch_first, steps=7)
        (g_frame,) = torch.autograd.grad((s * swap(grad_s)).sum() + (h * swap(grad_h)).sum(), f)
        full = swap(frame.expand(4, 7, 3, 5).contiguous()).requires_grad_()
        s_ref, h_ref = lif_scan(full, *args, with_h=True, batch_first=batch_first)
        (g_full,) = torch.autograd.grad((s_ref * swap(grad_s)).sum() + (h_ref * swap(grad_h)).sum(), full)
        assert s.shape == s_ref.shape and torch.equal(s, s_ref) and torch.equal(h, h_ref)
        assert g_frame.shape == f.shape
        torch.testing.assert_close(g_frame, g_full.sum(1 if batch_first else 0, keepdim=True), rtol=1e-12,
                                   atol=1e-12)
        assert 0 < float(s.detach().mean()) < 1
    with pytest.raises(ValueError, match="steps=7 repeats one step"):
        lif_scan(grad_s, *args, batch_first=True, steps=7)

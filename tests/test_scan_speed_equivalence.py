"""The fast LIF scan (compiled kernels or the torch fallback) against the step function it must reproduce.

Forward values must be bit-identical to stepping ``lif_step``; gradients equal to autograd through the steps
(float tolerance). Every case runs on three paths: ``operator`` (the C kernels behind the dispatcher operator
``snnkit::lif_scan`` of ``native/scan_op.cpp``, what an eager layer calls where it can be built), ``kernels``
(the same kernels through ctypes and ``functional._LIFScan``, where only a C compiler is there) and ``torch``
(the pure-torch loop used without any compiler).
"""
import ctypes
import dataclasses
import math
import re

import pytest
import torch

from snnkit.nn import LIF, functional as F, native
from snnkit.nn.native import build as native_build
from snnkit.nn.surrogate import SURROGATES, ATan, Surrogate, from_kernel_form, kernel_form, parse


def _kernels_or_skip() -> None:
    """Switch the compiled kernels on; skip, saying why, only where they cannot be built here."""
    native.set_enabled(True)
    if native.load() is None:
        pytest.skip("no C compiler (or the built kernels disagreed with torch): only the torch path exists")


def _operator_or_skip() -> None:
    """:func:`_kernels_or_skip`, and the operator ``snnkit::lif_scan`` built on them, or skip saying why."""
    _kernels_or_skip()
    if not native_build.op_loaded():
        pytest.skip("no C++ compiler or torch headers: the operator snnkit::lif_scan cannot be built here (the "
                    "kernels run through ctypes)")


@pytest.fixture(params=["operator", "kernels", "torch"])
def path(request, monkeypatch):
    """Select one implementation for the test; the compiled ones skip only if they cannot be built here."""
    if request.param == "operator":
        _operator_or_skip()
    elif request.param == "kernels":
        _kernels_or_skip()
        monkeypatch.setattr(native_build, "op_loaded", lambda: False)
    else:
        native.set_enabled(False)
    yield request.param


def steps(x, beta, threshold, v_reset, surrogate, subtract):
    """Reference: ``lif_step`` over ``x [T, B, ...]``, differentiated by autograd."""
    state = F.LIFState(torch.zeros_like(x[0]))
    s_all, h_all = [], []
    for t in range(x.shape[0]):
        s, state, h = F.lif_step(x[t], state, beta, threshold, v_reset, surrogate, subtract)
        s_all.append(s)
        h_all.append(h)
    return torch.stack(s_all), torch.stack(h_all)


def params_for(kind, neuron_shape, dtype):
    g = torch.Generator().manual_seed(7)
    if kind == "scalar":
        return torch.tensor(0.9, dtype=dtype), torch.tensor(1.0, dtype=dtype), torch.tensor(0.0, dtype=dtype)
    if kind == "per_neuron_beta":
        return (torch.rand(neuron_shape, generator=g, dtype=dtype) * 0.5 + 0.45, torch.tensor(0.8, dtype=dtype),
                torch.tensor(0.1, dtype=dtype))
    if kind == "per_channel_all":  # [C, 1, 1] broadcast over H, W (an imported conv layer)
        shape = (neuron_shape[0],) + (1,) * (len(neuron_shape) - 1)
        return (torch.rand(shape, generator=g, dtype=dtype) * 0.5 + 0.45,
                torch.rand(shape, generator=g, dtype=dtype) + 0.3, torch.rand(shape, generator=g, dtype=dtype) * 0.2)
    if kind == "float_threshold":
        return torch.tensor(0.85, dtype=dtype), 0.7, torch.tensor(0.0, dtype=dtype)
    raise ValueError(kind)


LAYOUTS = ["time_major", "batch_major"]  # x stored [T, B, ...] or [B, T, ...] (what the LIF layer passes)


def make_x(layout, T, B, neuron_shape, dtype, scale=1.2):
    g = torch.Generator().manual_seed(3)
    if layout == "time_major":
        return torch.randn(T, B, *neuron_shape, generator=g, dtype=dtype) * scale
    return (torch.randn(B, T, *neuron_shape, generator=g, dtype=dtype) * scale).transpose(0, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("subtract", [False, True])
@pytest.mark.parametrize("kind", ["scalar", "per_neuron_beta", "per_channel_all", "float_threshold"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_forward_is_bit_identical_to_steps(path, dtype, subtract, kind, layout):
    neuron_shape = (3, 4, 5)
    x = make_x(layout, 9, 6, neuron_shape, dtype)
    beta, th, vr = params_for(kind, neuron_shape, dtype)
    sg = parse("atan:alpha=2")
    s, h = F.lif_scan(x, beta, th, vr, sg, subtract)
    s_ref, h_ref = steps(x, beta, th, vr, sg, subtract)
    assert s.dtype == dtype and s.shape == x.shape
    assert torch.equal(s, s_ref) and torch.equal(h, h_ref)
    assert 0 < float(s.mean()) < 0.5, "the input must make some but not all neurons fire"


class ShiftedATan(Surrogate):
    """A user-defined surrogate the kernels do not know (they hand back h - threshold for torch to map)."""

    name = "shifted_atan"

    def derivative(self, u):
        return 1.0 / (1.0 + (3.0 * (u - 0.1)) ** 2)


SPECS = sorted(SURROGATES) + ["custom"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("subtract", [False, True])
def test_gradients_match_autograd_through_steps(path, spec, subtract):
    surrogate = ShiftedATan() if spec == "custom" else parse(spec)
    dtype = torch.float64
    x = make_x("batch_major", 10, 5, (7,), dtype).requires_grad_(True)
    beta = torch.rand(7, dtype=dtype) * 0.4 + 0.5
    th, vr = torch.tensor(0.6, dtype=dtype), torch.tensor(0.05, dtype=dtype)
    w_s, w_h = torch.randn(x.shape, dtype=dtype), torch.randn(x.shape, dtype=dtype)

    s, h = F.lif_scan(x, beta, th, vr, surrogate, subtract)
    s_ref, h_ref = steps(x, beta, th, vr, surrogate, subtract)
    for loss_terms in ("s", "h", "both"):
        def loss(s_, h_):
            return ((s_ * w_s).sum() if loss_terms != "h" else 0) + ((h_ * w_h).sum() if loss_terms != "s" else 0)

        (g,) = torch.autograd.grad(loss(s, h), x, retain_graph=True)
        (g_ref,) = torch.autograd.grad(loss(s_ref, h_ref), x, retain_graph=True)
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    assert float(g.abs().sum()) > 0


@pytest.mark.parametrize("subtract", [False, True])
def test_float32_gradients_and_learned_parameters(path, subtract):
    """float32, per-neuron learnable beta and threshold, as ``LIF(learn_beta=True, learn_threshold=True)``."""
    torch.manual_seed(0)
    lif = LIF(beta=torch.rand(16) * 0.4 + 0.5, threshold=0.8, reset="subtract" if subtract else "zero",
              learn_beta=True, learn_threshold=True)
    x = (torch.randn(8, 12, 16) * 1.1).requires_grad_(True)
    w = torch.randn(8, 12, 16)
    params = [x, lif.beta, lif.threshold]
    grads = torch.autograd.grad((lif(x) * w).sum(), params)
    state = lif.init_state(x[:, 0])
    out = []
    for t in range(x.shape[1]):
        s, state, _ = lif.step(x[:, t], state)
        out.append(s)
    grads_ref = torch.autograd.grad((torch.stack(out, 1) * w).sum(), params)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_layer_without_recording_keeps_no_potentials(path):
    """``LIF`` asks the scan for ``h`` only while recording; spikes and gradients are the same either way."""
    lif = LIF(beta=0.9, threshold=0.5)
    x = torch.randn(4, 8, 10, requires_grad=True)
    s_plain = lif(x)
    assert lif.recorded == {}
    (g_plain,) = torch.autograd.grad(s_plain.sum(), x)
    lif.record = True
    s_rec = lif(x)
    (g_rec,) = torch.autograd.grad(s_rec.sum(), x)
    assert torch.equal(s_plain, s_rec) and torch.equal(g_plain, g_rec)
    assert lif.recorded["v"].shape == x.shape
    s_only, h_none = F.lif_scan(x.transpose(0, 1), lif.beta, lif.threshold, lif.v_reset, lif.surrogate,
                                with_h=False)
    assert h_none is None and torch.equal(s_only.transpose(0, 1), s_plain)


def test_inference_path_matches_training_path(path):
    x = torch.randn(9, 4, 6)
    beta, th, vr = torch.tensor(0.8), torch.tensor(0.5), torch.tensor(0.0)
    with torch.no_grad():
        s_eval, h_eval = F.lif_scan(x, beta, th, vr, parse("atan"))
    s_train, h_train = F.lif_scan(x.clone().requires_grad_(True), beta, th, vr, parse("atan"))
    assert torch.equal(s_eval, s_train) and torch.equal(h_eval, h_train.detach())


def test_retained_graph_gives_the_same_gradient_twice(path):
    x = torch.randn(6, 3, 5, requires_grad=True)
    s, _ = F.lif_scan(x, torch.tensor(0.9), torch.tensor(0.4), torch.tensor(0.0), parse("atan"))
    loss = (s * torch.arange(5.0)).sum()
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, x)
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("subtract", [False, True])
def test_input_constant_over_time_is_read_without_copy(path, subtract):
    """A drive expanded over time (stride 0, as from a direct encoder) gives the same spikes and gradients."""
    x0 = (torch.randn(5, 3, 4) * 1.5).requires_grad_(True)
    x = x0.unsqueeze(0).expand(7, 5, 3, 4)
    beta, th, vr = torch.tensor(0.9), torch.tensor(0.8), torch.tensor(0.0)
    if path != "torch":
        assert native.supports(x) and F._native_params(x, beta, th, vr) is not None
    s, h = F.lif_scan(x, beta, th, vr, parse("atan"), subtract)
    s_ref, h_ref = steps(x, beta, th, vr, parse("atan"), subtract)
    assert torch.equal(s, s_ref) and torch.equal(h, h_ref) and s.sum() > 0
    w = torch.randn(s.shape)
    torch.testing.assert_close(torch.autograd.grad((s * w).sum(), x0)[0],
                               torch.autograd.grad((s_ref * w).sum(), x0)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["scalar", "per_channel_all"])
def test_channels_last_input_is_read_as_it_is(path, kind):
    """A conv layer's channels-last output ([B*T, C, H, W] stored as [B*T, H, W, C]) keeps its layout."""
    B, T, C, H, W = 3, 6, 4, 5, 5
    y = torch.randn(B * T, C, H, W).contiguous(memory_format=torch.channels_last) * 1.3
    x = y.reshape(B, T, C, H, W).transpose(0, 1).requires_grad_(True)  # [T, B, C, H, W] view
    beta, th, vr = params_for(kind, (C, H, W), torch.float32)
    if path != "torch":
        assert native.neuron_order(x) == [1, 2, 0] and F._native_params(x, beta, th, vr) is not None
    s, h = F.lif_scan(x, beta, th, vr, parse("atan"))
    s_ref, h_ref = steps(x, beta, th, vr, parse("atan"), False)
    assert torch.equal(s, s_ref) and torch.equal(h, h_ref) and s.sum() > 0
    if path != "torch":
        assert s.stride() == x.stride(), "the output keeps the input's layout"
    w = torch.randn(s.shape)
    torch.testing.assert_close(torch.autograd.grad((s * w).sum(), x)[0],
                               torch.autograd.grad((s_ref * w).sum(), x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["strided_input", "batch_axis_beta", "float_beta"])
def test_inputs_the_kernels_do_not_take_fall_back_exactly(path, case):
    """Non-dense input, a per-sample beta and a float beta use the torch loop, still exact."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, 12, generator=g)
    beta = torch.tensor(0.9)
    if case == "strided_input":
        x = x[:, :, ::2]
    elif case == "batch_axis_beta":
        beta = torch.rand(4, 12, generator=g) * 0.5 + 0.4
    else:
        beta = 0.9
    if case != "float_beta":
        assert F._native_params(x, beta, torch.tensor(0.5), torch.tensor(0.0)) is None
    x.requires_grad_(True)
    s, h = F.lif_scan(x, beta, torch.tensor(0.5), torch.tensor(0.0), parse("atan"))
    s_ref, h_ref = steps(x, beta, torch.tensor(0.5), torch.tensor(0.0), parse("atan"), False)
    assert torch.equal(s, s_ref) and torch.equal(h, h_ref)
    w = torch.randn(s.shape)
    torch.testing.assert_close(torch.autograd.grad((s * w).sum(), x)[0],
                               torch.autograd.grad((s_ref * w).sum(), x)[0], rtol=1e-5, atol=1e-6)


def test_native_and_torch_paths_agree_on_a_model():
    """A whole ConvNet-shaped LIF stack: the two implementations give the same spikes and close gradients."""
    _kernels_or_skip()
    torch.manual_seed(0)
    lif = LIF(beta=0.9, threshold=1.0)
    x = (torch.randn(16, 8, 32, 8, 8) * 1.5).requires_grad_(True)
    results = []
    for enabled in (True, False):
        native.set_enabled(enabled)
        s = lif(x)
        results.append((s, torch.autograd.grad((s * s.detach().cumsum(1)).sum(), x)[0]))
    native.set_enabled(True)
    (s1, g1), (s2, g2) = results
    assert torch.equal(s1, s2)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


def test_build_failures_fall_back_to_torch(monkeypatch):
    """No compiler, or a library whose arithmetic differs from torch's: load() gives None, the scan still runs."""
    x = torch.randn(5, 2, 3)
    expected = steps(x, torch.tensor(0.9), torch.tensor(0.3), torch.tensor(0.0), parse("atan"), False)
    for patch in ("_compiler", "_agrees_with_torch"):
        monkeypatch.setattr(native_build, "_lib", False)
        monkeypatch.setattr(native_build, patch, (lambda: None) if patch == "_compiler" else (lambda lib: False))
        assert native.load() is None
        s, h = F.lif_scan(x, torch.tensor(0.9), torch.tensor(0.3), torch.tensor(0.0), parse("atan"))
        assert torch.equal(s, expected[0]) and torch.equal(h, expected[1])
        monkeypatch.undo()


def test_library_is_built_once_into_the_cache_and_env_switch_disables_it(tmp_path, monkeypatch):
    cc = native_build._compiler()
    if cc is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv("SNNKIT_CACHE", str(tmp_path))
    agree = []
    for fused in (True, False):  # torch's addcmul rounds once or twice, by CPU: exactly one form reproduces it
        built = native_build._build(cc, fused)
        assert built.parent == tmp_path and built.name.startswith("lif_scan_") and built.suffix == ".so"
        stamp = built.stat().st_mtime_ns
        assert native_build._build(cc, fused) == built and built.stat().st_mtime_ns == stamp  # cached, not rebuilt
        lib = ctypes.CDLL(str(built))
        native_build._declare(lib)
        agree.append(native_build._agrees_with_torch(lib))
    assert len(list(tmp_path.iterdir())) == 2, "two libraries and no temporary build files"
    assert agree.count(True) == 1, agree
    monkeypatch.setattr(native_build, "_lib", False)
    monkeypatch.setattr(native_build, "_enabled", True)
    assert native.load() is not None, "load() must find the form that agrees"
    for value, expected in (("0", False), ("off", False), ("1", True)):
        monkeypatch.setenv("SNNKIT_NATIVE", value)
        assert native_build._env_enabled() is expected


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_torch_compile_keeps_the_scan_in_one_graph_and_matches_eager(arch):
    """Under ``torch.compile`` the scan is the operator ``snnkit::lif_scan``: no graph break, same results."""
    from snnkit.models import build

    torch.manual_seed(0)
    cfg = {"arch": arch, "input_shape": [6] if arch == "mlp" else [1, 6, 6], "num_classes": 3, "timesteps": 4,
           "threshold": 0.3, "hidden": [16], "channels": [4], "fc": [8]}
    model = build(cfg)
    x = torch.rand(5, *cfg["input_shape"])
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")  # the operator's fake, autograd and eager kernels
    out_c = compiled(x)
    grads_c = torch.autograd.grad(out_c.sum(), list(model.parameters()))
    out_e = model(x)
    grads_e = torch.autograd.grad(out_e.sum(), list(model.parameters()))
    assert out_e.abs().sum() > 0
    torch.testing.assert_close(out_c, out_e)
    for gc, ge in zip(grads_c, grads_e):
        torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-5)


_FIRST_COMPILE = """
import torch
from snnkit.models import build
graphs = []
def backend(gm, example_inputs):
    graphs.append(gm)
    return gm.forward
model = build({"arch": "convnet", "input_shape": [1, 8, 8], "num_classes": 10, "timesteps": 4})
torch.compile(model, backend=backend, dynamic=False)(torch.rand(4, 1, 8, 8)).sum().backward()
print(len(graphs))
"""


def test_torch_compile_before_any_eager_call_is_one_graph():
    """A fresh process whose first call is compiled (the kernels not loaded yet) still gets one graph: what loads
    or builds the kernels (a compiler lookup, files) is never traced (it used to split the ConvNet into 14 graphs
    at every pooling layer); the scan operator's kernels are built and registered by ``functional._op_ready``,
    which torch.compile runs once as a constant."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FIRST_COMPILE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", ["scalar", "per_neuron_beta", "per_channel_all"])
def test_scan_operator_is_the_function_on_the_kernels(batch_first, kind, monkeypatch):
    """``snnkit::lif_scan`` (CPU, Meta and Autograd kernels in C++) against ``functional._LIFScan`` on the same C
    kernels through ctypes: the same outputs, strides and gradients, bit for bit; every step given or one
    repeated; both resets; two surrogates; with and without ``h``. ``opcheck`` checks the schema, the Meta kernel
    (shapes and strides of the real outputs) and the autograd registration."""
    from torch.library import opcheck

    _operator_or_skip()
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(6, 4, 3, 5, generator=g) * 1.2).transpose(0, 1)  # [T, B, ...] stored batch-major
    beta, th, vr = params_for(kind, (3, 5), torch.float32)
    for surrogate in (parse("atan:alpha=2"), parse("triangle:gamma=0.5")):
        code, p1, p2 = kernel_form(surrogate)
        for subtract, with_h in ((False, True), (True, True), (False, False)):
            for inp, steps in ((x, 0), (x[:1], len(x))):
                inp = (inp.transpose(0, 1) if batch_first else inp).detach().requires_grad_(True)
                s, h, sg = torch.ops.snnkit.lif_scan(inp, beta, th, vr, subtract, code, p1, p2, with_h, True, steps,
                                                     batch_first, F._OP_VERSION)
                with monkeypatch.context() as m:
                    m.setattr(native_build, "op_loaded", lambda: False)
                    s_ref, h_ref = F.lif_scan(inp, beta, th, vr, surrogate, subtract, with_h=with_h,
                                              batch_first=batch_first, steps=steps or None)
                assert torch.equal(s, s_ref) and s.stride() == s_ref.stride() and s.sum() > 0
                assert (torch.equal(h, h_ref) and h.stride() == h_ref.stride()) if with_h else h.numel() == 0
                w = torch.randn(s.shape, generator=g)
                loss, loss_ref = (s * w).sum(), (s_ref * w).sum()
                if with_h:
                    loss, loss_ref = loss + (h * w).sum(), loss_ref + (h_ref * w).sum()
                assert torch.equal(torch.autograd.grad(loss, inp)[0], torch.autograd.grad(loss_ref, inp)[0])
    for given, steps in ((x, 0), (x[:1], len(x))):
        for wanted in (True, False):  # h and sg; or neither (inference: two separate empty outputs)
            inp = (given.transpose(0, 1) if batch_first else given).detach().requires_grad_(wanted)
            opcheck(torch.ops.snnkit.lif_scan.default,
                    (inp, beta, th, vr, False, 0, math.pi, 1.0, wanted, wanted, steps, batch_first, F._OP_VERSION),
                    test_utils=("test_schema", "test_faketensor", "test_autograd_registration",
                                "test_aot_dispatch_dynamic"))


def test_scan_operator_outputs_follow_the_kernels_layout_rule():
    """The operator's output strides are those of ``native.layout`` (the rule is written in Python for the ctypes
    path and in C++ for the operator) on every layout the kernels read; one it cannot read is refused with a
    clear error (callers check ``native.supports`` first)."""
    _operator_or_skip()
    atan = kernel_form(parse("atan"))
    base = torch.randn(4, 3, 2, 5, 6)
    layouts = {"time_major": base, "batch_major": base.transpose(0, 1).contiguous().transpose(0, 1),
               "channels_last": base.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3),
               "expanded_time": base[:1].expand(4, -1, -1, -1, -1),
               "expanded_batch_major": base[:1].transpose(0, 1).contiguous().transpose(0, 1).expand(4, -1, -1, -1, -1),
               "size_one_neurons": torch.randn(4, 3, 1, 5, 1)}
    for name, x in layouts.items():
        assert native.supports(x), name
        beta, th, vr = torch.tensor(0.9), torch.tensor(0.5), torch.tensor(0.0)
        s, h, sg = torch.ops.snnkit.lif_scan(x, beta, th, vr, False, *atan, True, True, 0, False, F._OP_VERSION)
        assert s.stride() == h.stride() == sg.stride() == native.out_strides(x), name
        dh = torch.ops.snnkit.lif_scan_backward(torch.ones_like(s), None, sg, s, beta, False, True, F._OP_VERSION)
        assert dh.shape == (1, *x.shape[1:]) and dh.stride() == native.summed_strides(s), name
    with pytest.raises(RuntimeError, match="one contiguous block"):
        torch.ops.snnkit.lif_scan(base[:, :, :, ::2], beta, th, vr, False, *atan, True, True, 0, False, F._OP_VERSION)
    with pytest.raises(RuntimeError, match="called for other kernels"):  # a graph compiled against another build
        torch.ops.snnkit.lif_scan(base, beta, th, vr, False, *atan, True, True, 0, False, F._OP_VERSION + 1)


def test_eager_layers_call_the_operator():
    """Where the operator is built, an eager LIF layer's scan is one ``snnkit::lif_scan`` node (no Python autograd
    function); learnable parameters take ``functional._LIFScan``."""
    _operator_or_skip()
    x = torch.randn(2, 5, 7, requires_grad=True)
    assert "ScanFunction" in LIF(beta=0.9)(x).grad_fn.name()
    assert "_LIFScan" in LIF(beta=0.9, learn_beta=True)(x).grad_fn.name()


def test_operator_outputs_reuse_released_storage():
    """The operator's outputs come from its own buffer pool (``BufferPool``'s rule, in C++): storage nobody holds
    is handed out again, storage still held (by a tensor or an autograd graph) is not."""
    _operator_or_skip()
    beta, th, vr = torch.tensor(0.9), torch.tensor(0.5), torch.tensor(0.0)
    x = torch.randn(6, 3, 257)
    atan = kernel_form(parse("atan"))

    def scan(inp):
        return torch.ops.snnkit.lif_scan(inp, beta, th, vr, False, *atan, False, True, 0, False, F._OP_VERSION)

    s, _, sg = scan(x)
    ptrs = {s.data_ptr(), sg.data_ptr()}
    s2, _, sg2 = scan(x)
    assert not ptrs & {s2.data_ptr(), sg2.data_ptr()}, "held buffers are not handed out"
    del s, sg
    s3, _, sg3 = scan(x)
    assert {s3.data_ptr(), sg3.data_ptr()} == ptrs, "released buffers are reused"
    del s2, sg2, s3, sg3  # all four buffers free again
    out = scan(x.clone().requires_grad_(True))
    held = {out[0].data_ptr(), out[2].data_ptr()}
    loss = out[0].sum()  # the graph now holds the scan's s and sg (saved for its backward)
    del out
    others = [scan(x) for _ in range(2)]
    assert not held & {t.data_ptr() for o in others for t in (o[0], o[2])}, "held by the autograd graph"
    del loss, others
    again = [scan(x) for _ in range(2)]
    assert held <= {t.data_ptr() for o in again for t in (o[0], o[2])}, "released by the graph: reused"


KERNEL_SURROGATES = sorted(name for name, cls in SURROGATES.items() if cls.kernel_code >= 0)


def _with_other_parameters(cls: type) -> Surrogate:
    """``cls`` with every parameter 0.7 times its default (the kernels' p1, p2 must follow them)."""
    return cls(**{f.name: 0.7 * f.default for f in dataclasses.fields(cls)})


def test_kernel_cases_are_the_surrogate_classes():
    """The C kernels' derivative cases are exactly the ``kernel_code`` of nn/surrogate.py's classes, one class
    each; ``from_kernel_form`` inverts ``kernel_form``; a surrogate the kernels do not know has code -1."""
    source = native_build._INCLUDED.read_text()
    cases = sorted(int(c) for c in re.findall(r"^\s*case (\d+):", source, re.MULTILINE))
    assert sorted(SURROGATES[name].kernel_code for name in KERNEL_SURROGATES) == cases == list(range(len(cases)))
    for name in KERNEL_SURROGATES:
        for surrogate in (SURROGATES[name](), _with_other_parameters(SURROGATES[name])):
            code, p1, p2 = kernel_form(surrogate)
            assert code == type(surrogate).kernel_code and from_kernel_form(code, p1, p2) == surrogate

    class SharperATan(ATan):  # a subclass may redefine the derivative: not the built-in case
        def derivative(self, u):
            return 2 * super().derivative(u)

    assert kernel_form(SharperATan())[0] == kernel_form(ShiftedATan())[0] == kernel_form(None)[0] == -1
    with pytest.raises(ValueError, match="no built-in surrogate"):
        from_kernel_form(-1, 0.0, 0.0)


@pytest.mark.parametrize("name", KERNEL_SURROGATES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_derivative_is_the_surrogate_derivative(name, dtype):
    """Each surrogate class's C case gives what its torch ``derivative`` gives at ``u = h - threshold``."""
    if native.load() is None:
        pytest.skip("no compiled kernels on this machine (no C compiler, or SNNKIT_NATIVE=0)")
    x = torch.randn(9, 4, 50, generator=torch.Generator().manual_seed(2), dtype=dtype) * 0.8
    beta, th, vr = (torch.tensor(v, dtype=dtype) for v in (0.9, 0.4, 0.0))
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-13)
    for surrogate in (SURROGATES[name](), _with_other_parameters(SURROGATES[name])):
        _, h, sg = native.forward(x, beta, th, vr, False, surrogate, with_h=True)
        expected = surrogate.derivative(h - th)
        assert expected.abs().sum() > 0
        torch.testing.assert_close(sg, expected, **tol)


def test_buffer_pool_reuses_only_released_buffers():
    pool = native.BufferPool(max_bytes=10 * 2**20)
    if pool._free_count is None:
        pytest.skip("this torch has no storage use-count introspection: the pool is off")
    a = pool.empty((4, 5), torch.float32)
    ptr = a.data_ptr()
    a_t = a.t()  # any view keeps the storage busy
    del a
    b = pool.empty((4, 5), torch.float32)
    assert b.data_ptr() != ptr, "a buffer still viewed elsewhere must not be handed out"
    del a_t
    c = pool.empty((4, 5), torch.float32)
    assert c.data_ptr() == ptr, "a released buffer is reused"

    class Keep(torch.autograd.Function):  # autograd's saved tensors count as holders too
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x

    c.requires_grad_(True)
    y = Keep.apply(c)
    c = None
    assert pool.empty((4, 5), torch.float32).data_ptr() != ptr, "held by the autograd graph"
    y = None  # the graph and its saved tensor go
    assert pool.empty((4, 5), torch.float32).data_ptr() == ptr
    assert pool.nbytes <= pool.max_bytes


def test_buffer_pool_cap_and_off_switch():
    pool = native.BufferPool(max_bytes=1000)
    big = pool.empty((1000,), torch.float32)  # 4000 bytes: over the cap, never pooled
    assert big.shape == (1000,) and pool.nbytes == 0
    small = [pool.empty((50,), torch.float32) for _ in range(6)]  # 200 bytes each, all in use: 5 fit
    assert pool.nbytes == 1000
    del small
    pool.empty((100,), torch.float32)  # 400 bytes: free buffers are dropped to make room
    assert pool.nbytes <= 1000
    off = native.BufferPool(max_bytes=0)
    t = off.empty((3,), torch.float32)
    assert t.shape == (3,) and off.nbytes == 0


@pytest.mark.parametrize("subtract", [False, True])
def test_batches_split_over_threads_give_the_one_thread_results(subtract):
    """Above ``PARALLEL_MIN`` elements the compiled scan and pooling split the batch over torch's OpenMP threads
    (where the library was built with OpenMP): every output equals the one-thread run and the step function's
    forward, bit for bit; each sample's arithmetic is the same whichever thread runs it."""
    _kernels_or_skip()
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(37, 6, 3, 8, 40, generator=g) * 0.8).transpose(0, 1)  # [T, B, ...], 35520 elements
    beta, th, vr = params_for("per_channel_all", (3, 8, 40), torch.float32)
    surrogate = parse("atan:alpha=2")
    grad = torch.randn(x.shape, generator=g)
    maps = torch.randint(0, 2, (37 * 6, 3, 8, 40), generator=g).float()
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, max(threads, 2)):
            torch.set_num_threads(n)
            xg = x.detach().clone().requires_grad_(True)
            s, h = F.lif_scan(xg, beta, th, vr, surrogate, subtract)
            (gx,) = torch.autograd.grad((s * grad).sum() + h.sum(), xg)
            pooled = native.pool2x2(maps, 0.25)
            runs.append((s, h, gx, pooled, native.pool2x2_backward(pooled, 0.25)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    s_ref, h_ref = steps(x, beta, th, vr, surrogate, subtract)
    assert torch.equal(runs[1][0], s_ref) and torch.equal(runs[1][1], h_ref) and 0 < float(s_ref.mean()) < 1

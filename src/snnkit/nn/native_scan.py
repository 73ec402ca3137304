"""An optional compiled inner loop for the LIF scan (CPU, float32/float64), with a clean fallback; also the
2 x 2 pooling of spike maps (:func:`pool2x2`), which ATen's NCHW kernel runs slowly on small maps.

The whole-sequence LIF scan (``snnkit.nn.functional.lif_scan``) is a loop over time of a few elementwise
operations; run as separate torch operators it costs a dozen kernel launches and temporaries per step. Here the
same loop is one pass of plain C over memory: per neuron ``h = beta v + x`` rounded as ``torch.addcmul`` rounds it
on this CPU, ``s = h > threshold``, reset; the backward recurrence is one reverse pass. torch's vectorised
kernels (AVX2, AVX-512, NEON) fuse the multiply-add into one rounding, its generic kernel rounds twice, so the
library is built in both forms (``-DSNNKIT_FUSED=1`` or ``0``) and :func:`load` keeps the one that reproduces
torch bit for bit on a probe.

The C source (no torch headers, so it compiles in well under a second) is built once with the system C compiler
into ``$SNNKIT_CACHE`` (default ``~/.cache/snnkit``), named by a hash of the source, form, compiler and CPU,
and loaded with ctypes. ``SNNKIT_NATIVE=0`` turns it off. If there is no compiler, the build fails or the probe
disagrees with torch, :func:`load` returns ``None`` and the torch path is used: results are the same either way.

Layout understood by the kernels (:class:`Plan`, cached per shape and strides): ``O x T x N`` elements where
element ``(o, t, n)`` sits at ``o * so + t * st + n`` (``n`` runs over one contiguous neuron block, in any
dimension order: channels-last activations are read as they are). The input may have any batch and time
strides (an input expanded over time, stride 0, is not copied); outputs keep the input's neuron order, batch
outer unless the input stores time outer. Per-neuron parameters are contiguous ``[N]`` arrays in that order.
Outputs come from :data:`POOL`, which hands a buffer out again once no tensor uses it (see
:class:`BufferPool`).
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

import torch

from snnkit.nn import surrogate as S

_HEADER = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>
#define RESTRICT __restrict__  /* every array argument is a separate buffer */
/* The charge beta * v + x: one rounding (fused) or two (-ffp-contract=off keeps them apart). */
#if SNNKIT_FUSED
#define CHARGE_f32(a, b, c) fmaf(a, b, c)
#define CHARGE_f64(a, b, c) fma(a, b, c)
#else
#define CHARGE_f32(a, b, c) ((a) * (b) + (c))
#define CHARGE_f64(a, b, c) ((a) * (b) + (c))
#endif
"""

# One copy per floating type: REAL, SUF(fix), FABS, EXP are filled in by _source().
_TEMPLATE = r"""
/* u -> d spike / d u in place over one row (codes: SURROGATE_CODES in native_scan.py; < 0 leaves u). */
static void deriv_row_SUF(REAL *RESTRICT u, long n, int code, REAL p1, REAL p2) {
    long i;
    switch (code) {
    case 0: /* atan: p1 = pi/2 alpha, p2 = alpha/2 */
        for (i = 0; i < n; ++i) { const REAL z = p1 * u[i]; u[i] = p2 / ((REAL)1 + z * z); }
        break;
    case 1: /* fast_sigmoid: p1 = k */
        for (i = 0; i < n; ++i) { const REAL z = p1 * FABS(u[i]) + (REAL)1; u[i] = (REAL)1 / (z * z); }
        break;
    case 2: /* triangle: p1 = gamma, p2 = gamma^2 */
        for (i = 0; i < n; ++i) { const REAL z = p1 - FABS(u[i]); u[i] = (z > 0 ? z : (REAL)0) / p2; }
        break;
    case 3: /* rectangular: p1 = width / 2, p2 = width */
        for (i = 0; i < n; ++i) u[i] = (FABS(u[i]) < p1 ? (REAL)1 : (REAL)0) / p2;
        break;
    case 4: /* sigmoid: p1 = k */
        for (i = 0; i < n; ++i) { const REAL g = (REAL)1 / ((REAL)1 + EXP(-p1 * u[i])); u[i] = p1 * g * ((REAL)1 - g); }
        break;
    case 5: /* escape: p1 = k, p2 = b */
        for (i = 0; i < n; ++i) u[i] = p1 * EXP(-p2 * FABS(u[i]));
        break;
    case 6: /* straight-through */
        for (i = 0; i < n; ++i) u[i] = (REAL)1;
        break;
    default:
        break;
    }
}

/* One neuron, one step: charge h = beta v + x (rounded as torch.addcmul), fire if h > th, reset. */
static inline __attribute__((always_inline)) void cell_SUF(
        REAL x, REAL b, REAL th, REAL vr, int subtract, REAL *RESTRICT v, REAL *RESTRICT s, REAL *RESTRICT h,
        REAL *RESTRICT u) {
    const REAL hv = CHARGE_SUF(b, *v, x);
    const REAL sv = hv > th ? (REAL)1 : (REAL)0;
    *s = sv;
    if (h) *h = hv;
    if (u) *u = hv - th;
    *v = subtract ? hv - sv * th : (hv > th ? vr : hv);
}

/* Forward over O x T x N: input element (o, t, n) at o*xso + t*xst + n (a stride may be 0: an input constant
   over time), outputs at o*so + t*st + n. h and sg may be NULL (not wanted).
   beta, th, vr: N values each, or one each when per_neuron is 0. Returns 0, or 1 if out of memory. */
int lif_forward_SUF(const REAL *RESTRICT x, long xso, long xst, REAL *RESTRICT s, REAL *RESTRICT h,
                    REAL *RESTRICT sg, long O, long T, long N, long so, long st,
                    const REAL *RESTRICT beta, const REAL *RESTRICT th, const REAL *RESTRICT vr,
                    int per_neuron, int subtract, int code, REAL p1, REAL p2) {
    REAL *RESTRICT v = (REAL *)malloc((size_t)(N > 0 ? N : 1) * sizeof(REAL));
    if (!v) return 1;
    for (long o = 0; o < O; ++o) {
        memset(v, 0, (size_t)N * sizeof(REAL));
        for (long t = 0; t < T; ++t) {
            const long off = o * so + t * st;
            const REAL *RESTRICT xp = x + o * xso + t * xst;
            REAL *RESTRICT sp = s + off;
            REAL *RESTRICT hp = h ? h + off : 0;
            REAL *RESTRICT up = sg ? sg + off : 0;
            if (per_neuron) {
                for (long n = 0; n < N; ++n)
                    cell_SUF(xp[n], beta[n], th[n], vr[n], subtract, v + n, sp + n, hp ? hp + n : 0,
                             up ? up + n : 0);
            } else {
                const REAL b = beta[0], t0 = th[0], r0 = vr[0];
                for (long n = 0; n < N; ++n)
                    cell_SUF(xp[n], b, t0, r0, subtract, v + n, sp + n, hp ? hp + n : 0, up ? up + n : 0);
            }
            if (up) deriv_row_SUF(up, N, code, p1, p2);
        }
    }
    free(v);
    return 0;
}

/* dh[t] = gs[t] sg[t] + gh[t] + beta dh[t+1] (1 - s[t]) (no (1 - s[t]) factor for subtract); gs, gh may be NULL.
   Returns 0, or 1 if out of memory. */
int lif_backward_SUF(const REAL *RESTRICT gs, const REAL *RESTRICT gh, const REAL *RESTRICT sg,
                     const REAL *RESTRICT s, REAL *RESTRICT dh, long O, long T, long N,
                     long so, long st, const REAL *RESTRICT beta, int per_neuron, int subtract) {
    REAL *RESTRICT carry = (REAL *)malloc((size_t)(N > 0 ? N : 1) * sizeof(REAL));
    if (!carry) return 1;
    for (long o = 0; o < O; ++o) {
        memset(carry, 0, (size_t)N * sizeof(REAL));
        for (long t = T - 1; t >= 0; --t) {
            const long off = o * so + t * st;
            const REAL *RESTRICT sgp = sg + off, *RESTRICT sp = s + off;
            const REAL *RESTRICT gsp = gs ? gs + off : 0, *RESTRICT ghp = gh ? gh + off : 0;
            REAL *RESTRICT dp = dh + off;
            for (long n = 0; n < N; ++n) {
                REAL g = (subtract || sp[n] == (REAL)0) ? carry[n] : (REAL)0;
                if (gsp) g += gsp[n] * sgp[n];
                if (ghp) g += ghp[n];
                dp[n] = g;
                carry[n] = g * beta[per_neuron ? n : 0];
            }
        }
    }
    free(carry);
    return 0;
}

/* 2 x 2 windows, stride 2, over P contiguous H x W planes (H, W even): y = ((x00 + x10) + (x01 + x11)) * scale,
   the order of snnkit.nn.layers._Pool2x2's torch path. */
void pool2_forward_SUF(const REAL *RESTRICT x, REAL *RESTRICT y, long P, long H, long W, REAL scale) {
    const long h2 = H / 2, w2 = W / 2;
    for (long p = 0; p < P; ++p)
        for (long i = 0; i < h2; ++i) {
            const REAL *RESTRICT r0 = x + (p * H + 2 * i) * W, *RESTRICT r1 = r0 + W;
            REAL *RESTRICT yp = y + (p * h2 + i) * w2;
            for (long j = 0; j < w2; ++j)
                yp[j] = ((r0[2 * j] + r1[2 * j]) + (r0[2 * j + 1] + r1[2 * j + 1])) * scale;
        }
}

/* Its backward: every input of a window gets the window's gradient times scale. */
void pool2_backward_SUF(const REAL *RESTRICT g, REAL *RESTRICT dx, long P, long H, long W, REAL scale) {
    const long h2 = H / 2, w2 = W / 2;
    for (long p = 0; p < P; ++p)
        for (long i = 0; i < h2; ++i) {
            const REAL *RESTRICT gp = g + (p * h2 + i) * w2;
            REAL *RESTRICT r0 = dx + (p * H + 2 * i) * W, *RESTRICT r1 = r0 + W;
            for (long j = 0; j < w2; ++j) {
                const REAL v = gp[j] * scale;
                r0[2 * j] = v; r0[2 * j + 1] = v; r1[2 * j] = v; r1[2 * j + 1] = v;
            }
        }
}
"""


def _source() -> str:
    kinds = [("float", "f32", "fabsf", "expf"), ("double", "f64", "fabs", "exp")]
    out = [_HEADER]
    for real, suf, fabs, exp in kinds:
        text = _TEMPLATE
        for key, value in (("REAL", real), ("SUF", suf), ("FABS", fabs), ("EXP", exp)):
            text = text.replace(key, value)
        out.append(text)
    return "".join(out)


_SOURCE = _source()

_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"]
_ENV_SWITCH = "SNNKIT_NATIVE"
RAW_U = object()  # pass as ``surrogate`` to :func:`forward` to get ``u = h - threshold`` instead of a derivative
_lib: "ctypes.CDLL | None | bool" = False  # False: not tried yet


def _env_enabled() -> bool:
    return os.environ.get(_ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


_enabled = _env_enabled()


def _cache_dir() -> Path:
    root = os.environ.get("SNNKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "snnkit")
    return Path(root)


def _cpu_tag() -> str:
    """What the compiled code depends on besides the source: the machine and its instruction set."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def _compiler() -> "str | None":
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(cc: str, fused: bool = True) -> Path:
    """The library in one form (fused or two-rounding charge), compiled into the cache unless it is there."""
    flags = [*_FLAGS, f"-DSNNKIT_FUSED={int(fused)}"]
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([_SOURCE, " ".join(flags), version, _cpu_tag()]).encode()).hexdigest()[:20]
    out_dir = _cache_dir()
    lib_path = out_dir / f"lif_scan_{key}.so"
    if lib_path.is_file():
        return lib_path
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        src = Path(tmp) / "lif_scan.c"
        src.write_text(_SOURCE)
        tmp_lib = Path(tmp) / lib_path.name
        subprocess.run([cc, *flags, str(src), "-o", str(tmp_lib), "-lm"], check=True, capture_output=True,
                       timeout=120)
        os.replace(tmp_lib, lib_path)  # atomic: concurrent builders all produce the same file
    return lib_path


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    for suf, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        fwd = getattr(lib, f"lif_forward_{suf}")
        fwd.argtypes = [p, i64, i64, p, p, p, i64, i64, i64, i64, i64, p, p, p, i32, i32, i32, real, real]
        fwd.restype = i32
        bwd = getattr(lib, f"lif_backward_{suf}")
        bwd.argtypes = [p, p, p, p, p, i64, i64, i64, i64, i64, p, i32, i32]
        bwd.restype = i32
        for name in ("pool2_forward", "pool2_backward"):
            fn = getattr(lib, f"{name}_{suf}")
            fn.argtypes = [p, p, i64, i64, i64, real]
            fn.restype = None


def _agrees_with_torch(lib: ctypes.CDLL) -> bool:
    """The library's forward must reproduce torch's step arithmetic (``addcmul``) bit for bit."""
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(7, 3, 37, generator=gen, dtype=dtype) * 0.7
        for beta, th, vr in ((torch.rand(37, generator=gen, dtype=dtype), torch.full((37,), 0.5, dtype=dtype),
                              torch.zeros(37, dtype=dtype)),
                             (torch.tensor(0.9, dtype=dtype), torch.tensor(0.5, dtype=dtype),
                              torch.tensor(0.1, dtype=dtype))):
            for subtract in (False, True):
                s, h, u = forward(x, beta, th, vr, subtract, RAW_U, with_h=True, lib=lib)
                v = torch.zeros(3, 37, dtype=dtype)
                for t in range(7):
                    ht = torch.addcmul(x[t], beta, v)
                    st = ht > th
                    if not (torch.equal(ht, h[t]) and torch.equal(st.to(dtype), s[t])
                            and torch.equal(ht - th, u[t])):
                        return False
                    v = ht - st * th if subtract else torch.where(st, vr, ht)
    return True


def load() -> "ctypes.CDLL | None":
    """The compiled kernels, building them on first use; ``None`` when off or unavailable (then use torch)."""
    global _lib
    if not _enabled:
        return None
    if _lib is False:
        _lib = _try_load()
    return _lib


def set_enabled(flag: bool) -> None:
    """Turn the compiled kernels on or off for this process (the default comes from ``$SNNKIT_NATIVE``)."""
    global _enabled
    _enabled = bool(flag)


def _try_load() -> "ctypes.CDLL | None":
    """The form of the library that agrees with torch on this CPU (fused first), or None."""
    cc = _compiler()
    if cc is None:
        return None
    for fused in (True, False):
        try:
            lib = ctypes.CDLL(str(_build(cc, fused)))
            _declare(lib)
        except (OSError, subprocess.SubprocessError, AttributeError):
            return None
        if _agrees_with_torch(lib):
            return lib
    return None


class Plan(NamedTuple):
    """How the kernels walk an input ``x [T, B, ...]`` of one shape, strides and dtype (computed once, cached).

    The per-step neuron block must be one contiguous span of memory, in any dimension order (``order``, outer
    first: channels-last ``[C, H, W]`` storage gives ``(1, 2, 0)``); the batch and time strides are free,
    0 included (an input expanded over time is read without copying it). Outputs keep x's neuron order, with
    time outer if x stores it so and batch outer otherwise (what the layers pass).
    """

    xso: int                  # input batch stride (elements)
    xst: int                  # input time stride
    O: int                    # batch size
    T: int                    # steps
    N: int                    # neurons per step
    order: tuple              # neuron dimensions in memory order (per-neuron parameters follow it)
    buf_shape: tuple          # storage shape of an output, outer to inner
    to_logical: tuple         # permutation of such a buffer into [T, B, ...]
    strides: tuple            # the outputs' strides as [T, B, ...]
    suffix: str               # kernel variant: f32 / f64

    @property
    def so(self) -> int:
        return self.strides[1]

    @property
    def st(self) -> int:
        return self.strides[0]


_PLANS: dict = {}


def plan(x: torch.Tensor) -> "Plan | None":
    """The :class:`Plan` for ``x``, or None when the kernels cannot read it (device, dtype, layout, empty)."""
    key = (x.shape, x.stride(), x.dtype, x.device.type)
    try:
        return _PLANS[key]
    except KeyError:
        pass
    made = _make_plan(x)
    if len(_PLANS) > 1024:
        _PLANS.clear()
    _PLANS[key] = made
    return made


def _make_plan(x: torch.Tensor) -> "Plan | None":
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dim() < 2 or x.numel() == 0:
        return None
    dims = range(x.dim() - 2)
    order = sorted(dims, key=lambda d: (-x.stride(2 + d), d))
    expected = 1
    for d in reversed(order):
        if x.shape[2 + d] != 1 and x.stride(2 + d) != expected:
            return None
        expected *= x.shape[2 + d]
    mem = ([0, 1] if x.stride(0) > x.stride(1) else [1, 0]) + [2 + d for d in order]
    strides, acc = [0] * x.dim(), 1
    for d in reversed(mem):
        strides[d] = acc
        acc *= x.shape[d]
    return Plan(x.stride(1), x.stride(0), x.shape[1], x.shape[0], math.prod(x.shape[2:]), tuple(order),
                tuple(x.shape[d] for d in mem), tuple(sorted(range(x.dim()), key=mem.__getitem__)),
                tuple(strides), "f32" if x.dtype == torch.float32 else "f64")


def supports(x: torch.Tensor) -> bool:
    """Whether the kernels can read ``x [T, B, ...]`` as it is (CPU, float32/64, contiguous neuron block)."""
    return plan(x) is not None


def neuron_order(x: torch.Tensor) -> "list[int] | None":
    """The memory order of ``x``'s neuron dimensions (see :class:`Plan`), or None."""
    p = plan(x)
    return None if p is None else list(p.order)


def out_strides(x: torch.Tensor) -> "tuple[int, ...]":
    """The strides of the kernels' outputs for an input ``x`` that :func:`supports` (also for fake tensors)."""
    return plan(x).strides


class BufferPool:
    """The kernels' output buffers, handed out again once nobody holds them.

    Fresh multi-megabyte allocations are expensive where freed memory goes back to the operating system: every
    page is faulted in (and zeroed) again on first touch, measured at about 10 us per 4 KiB page on the project's
    2-core VM, which made allocation cost more than the scan itself. The pool keeps the storage of the scan's
    outputs (spikes, surrogate derivatives, potentials, gradients) and reuses a buffer when its storage has no
    holder left but the pool (every tensor handed out is a view, so each user, autograd's saved tensors
    included, counts). The kernels overwrite every element of a buffer they get.

    ``max_bytes`` caps the memory kept (free buffers are dropped to make room; beyond the cap, buffers are not
    pooled); 0 turns pooling off (``$SNNKIT_SCAN_POOL_MB``, default 1024).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._by_key: dict[tuple, list[torch.Tensor]] = {}  # (shape, dtype) -> contiguous buffers
        self._bytes = 0
        self._lock = threading.Lock()
        self._free_count = self._storage_count(torch.empty(1)) if max_bytes > 0 else None

    @staticmethod
    def _storage_count(t: torch.Tensor) -> "int | None":
        try:
            return torch._C._storage_Use_Count(t.untyped_storage()._cdata)
        except (AttributeError, RuntimeError):  # a torch without this introspection: no pooling
            return None

    def empty(self, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous CPU tensor of ``shape`` (a view of a pooled buffer when possible)."""
        if self._free_count is None:
            return torch.empty(shape, dtype=dtype)
        key = (tuple(shape), dtype)
        with self._lock:
            bufs = self._by_key.setdefault(key, [])
            for buf in bufs:
                if self._storage_count(buf) == self._free_count:
                    return buf.view(shape)
            buf = torch.empty(shape, dtype=dtype)
            size = buf.numel() * buf.element_size()
            if self._bytes + size > self.max_bytes:
                self._drop_free(self._bytes + size - self.max_bytes)
            if self._bytes + size <= self.max_bytes:
                bufs.append(buf)
                self._bytes += size
            return buf.view(shape)

    def _drop_free(self, need: int) -> None:
        for bufs in self._by_key.values():
            for buf in [b for b in bufs if self._storage_count(b) == self._free_count]:
                if need <= 0:
                    return
                bufs.remove(buf)
                size = buf.numel() * buf.element_size()
                self._bytes -= size
                need -= size

    def clear(self) -> None:
        """Drop every pooled buffer (tensors still in use stay valid; they are only no longer reused)."""
        with self._lock:
            self._by_key.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool (in use or free)."""
        return self._bytes


POOL = BufferPool(int(float(os.environ.get("SNNKIT_SCAN_POOL_MB", "1024")) * 2**20))


def _empty(p: Plan, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised output laid out as the plan says (a view of a pooled buffer)."""
    return POOL.empty(p.buf_shape, dtype).permute(p.to_logical)


def surrogate_code(surrogate) -> "tuple[int, float, float]":
    """``(code, p1, p2)`` for the kernels' built-in derivative of ``surrogate``; code -1 when there is none.

    Only the exact built-in classes are recognised (a subclass may redefine ``derivative``).
    """
    kind = type(surrogate)
    if kind is S.ATan:
        return 0, math.pi / 2 * surrogate.alpha, surrogate.alpha / 2
    if kind is S.FastSigmoid:
        return 1, surrogate.k, 0.0
    if kind is S.Triangle:
        return 2, surrogate.gamma, surrogate.gamma**2
    if kind is S.Rectangular:
        return 3, surrogate.width / 2, surrogate.width
    if kind is S.Sigmoid:
        return 4, surrogate.k, 0.0
    if kind is S.Escape:
        return 5, surrogate.k, surrogate.b
    if kind is S.StraightThrough:
        return 6, 0.0, 0.0
    return -1, 0.0, 0.0


def surrogate_from_code(code: int, p1: float, p2: float) -> S.Surrogate:
    """The built-in surrogate that :func:`surrogate_code` maps to ``(code, p1, p2)`` (its inverse)."""
    makers = {0: lambda: S.ATan(alpha=2 * p2), 1: lambda: S.FastSigmoid(k=p1), 2: lambda: S.Triangle(gamma=p1),
              3: lambda: S.Rectangular(width=p2), 4: lambda: S.Sigmoid(k=p1), 5: lambda: S.Escape(k=p1, b=p2),
              6: S.StraightThrough}
    if code not in makers:
        raise ValueError(f"no built-in surrogate has code {code}")
    return makers[code]()


def forward(x: torch.Tensor, beta: torch.Tensor, th: torch.Tensor, vr: torch.Tensor, subtract: bool,
            surrogate, with_h: bool, lib: "ctypes.CDLL | None" = None):
    """LIF over ``x [T, B, ...]`` (see :func:`supports`).

    ``beta``, ``th``, ``vr``: all 0-dim, or all contiguous ``[N]`` (one value per neuron, in the memory order of
    x's neuron block, :func:`neuron_order`), of x's dtype.
    ``surrogate``: None (no gradient wanted), or the surrogate whose derivative to evaluate at ``u = h - th``.
    Returns ``(s, h, sg)`` with x's shape and :func:`out_strides`: spikes (0/1 in x's dtype), pre-reset
    potentials (None unless ``with_h``) and the surrogate derivative per step (None when ``surrogate`` is
    None; ``h - th`` for a surrogate the kernels do not know, code -1 of :func:`surrogate_code`).
    """
    p = plan(x)
    s = _empty(p, x.dtype)
    h = _empty(p, x.dtype) if with_h else None
    sg = _empty(p, x.dtype) if surrogate is not None else None
    code, p1, p2 = surrogate_code(surrogate) if surrogate is not None else (-1, 0.0, 0.0)
    failed = getattr(lib or _lib, "lif_forward_" + p.suffix)(
        x.data_ptr(), p.xso, p.xst, s.data_ptr(), None if h is None else h.data_ptr(),
        None if sg is None else sg.data_ptr(), p.O, p.T, p.N, p.so, p.st, beta.data_ptr(), th.data_ptr(),
        vr.data_ptr(), int(beta.dim() > 0), int(subtract), code, p1, p2)
    if failed:
        raise MemoryError(f"LIF scan kernel: no memory for {p.N} neuron states")
    return s, h, sg


def backward(grad_s: "torch.Tensor | None", grad_h: "torch.Tensor | None", sg: torch.Tensor, s: torch.Tensor,
             beta: torch.Tensor, subtract: bool) -> torch.Tensor:
    """Gradient at the pre-reset potentials, ``dL/dh [T, B, ...]``, by the reverse recurrence.

    ``dh[t] = grad_s[t] sg[t] + grad_h[t] + beta dh[t+1] (1 - s[t])`` (no ``1 - s`` factor for subtract: the
    reset is detached). ``s`` is the forward's spike tensor (its layout is the one the kernels read; the other
    tensors are copied to it only if they differ); ``beta`` is 0-dim or contiguous ``[N]``.
    """
    p = plan(s)
    dh = _empty(p, s.dtype)
    gs, gh, sg = (_like(g, s) for g in (grad_s, grad_h, sg))
    failed = getattr(_lib, "lif_backward_" + p.suffix)(
        None if gs is None else gs.data_ptr(), None if gh is None else gh.data_ptr(), sg.data_ptr(),
        s.data_ptr(), dh.data_ptr(), p.O, p.T, p.N, p.so, p.st, beta.data_ptr(), int(beta.dim() > 0),
        int(subtract))
    if failed:
        raise MemoryError(f"LIF scan kernel: no memory for {p.N} neuron states")
    return dh


def pool2x2(x: torch.Tensor, scale: float) -> "torch.Tensor | None":
    """2 x 2 window sums times ``scale`` (stride 2) of a contiguous CPU float ``x [N, C, H, W]`` (even H, W),
    or None when the kernels are off or cannot read ``x`` (the caller then uses torch)."""
    lib = load()
    if lib is None or not _pool_input(x):
        return None
    n, c, h, w = x.shape
    y = POOL.empty((n, c, h // 2, w // 2), x.dtype)
    getattr(lib, "pool2_forward_" + _suffix(x))(x.data_ptr(), y.data_ptr(), n * c, h, w, scale)
    return y


def pool2x2_backward(grad: torch.Tensor, scale: float) -> "torch.Tensor | None":
    """The gradient of :func:`pool2x2` at its input, from ``grad [N, C, H/2, W/2]``; None as for pool2x2."""
    lib = load()
    if lib is None or not _pool_input(grad):
        return None
    n, c, h2, w2 = grad.shape
    dx = POOL.empty((n, c, 2 * h2, 2 * w2), grad.dtype)
    getattr(lib, "pool2_backward_" + _suffix(grad))(grad.data_ptr(), dx.data_ptr(), n * c, 2 * h2, 2 * w2, scale)
    return dx


def _pool_input(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 4
            and x.is_contiguous() and x.numel() > 0 and not torch.compiler.is_compiling())


def _suffix(x: torch.Tensor) -> str:
    return "f32" if x.dtype == torch.float32 else "f64"


def _like(g: "torch.Tensor | None", ref: torch.Tensor) -> "torch.Tensor | None":
    """``g`` stored with ``ref``'s strides (a copy only when they differ, e.g. an expanded gradient)."""
    if g is None or (g.stride() == ref.stride() and g.dtype == ref.dtype):
        return g
    return torch.empty_like(ref).copy_(g)

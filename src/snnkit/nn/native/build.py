"""Compiling, caching and loading the C kernels (``lif_scan.c``), and choosing the form that matches torch.

The source (no torch headers, so it compiles in well under a second) is built with the system C compiler
(``$CC``, else ``cc``, ``gcc``, ``clang``) into ``$SNNKIT_CACHE`` (default ``~/.cache/snnkit``), named by a
hash of the source, flags, compiler and CPU, and loaded with ctypes. torch's vectorised kernels (AVX2,
AVX-512, NEON) fuse the multiply-add of the charge into one rounding, its generic kernel rounds twice, so the
library is built in both forms (``-DSNNKIT_FUSED=1`` or ``0``) and :func:`load` keeps the one that reproduces
``torch.addcmul`` bit for bit on a probe. ``SNNKIT_NATIVE=0`` turns the kernels off; if there is no
compiler, the build fails or neither form agrees with torch, :func:`load` returns ``None`` (use torch).
Where the compiler has OpenMP the library is built with ``-fopenmp`` and splits large batches over torch's
threads (``torch.set_num_threads``); otherwise it runs single-threaded, with the same results.

``scan_op.cpp`` (the C++ kernels of the operator ``snnkit::lif_scan``) is built the same way with the system C++
compiler (``$CXX``, else ``c++``, ``g++``, ``clang++``) against the installed torch's headers and libraries (about
30 s, once per torch version), registered once per process and handed the loaded library's scan kernels
(:func:`op_loaded`); without a C++ compiler the kernels are reached through ctypes.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("lif_scan.c")
_INCLUDED = Path(__file__).with_name("lif_scan_real.h")  # included by _SOURCE, once per floating type
_LOIHI = Path(__file__).with_name("loihi_scan.h")  # included by _SOURCE once: loihi-emu's integer scan
_OP_SOURCE = Path(__file__).with_name("scan_op.cpp")  # the scan as a torch operator, over the loaded kernels
# -ffp-contract=off: no fused multiply-add the source does not ask for (torch's roundings, bit for bit).
# -fno-trapping-math: no operation may trap, so the compiler may evaluate both sides of a comparison's select
# (the reset by subtraction, h - s * th, stayed a scalar loop without it); values are unchanged (IEEE results do not
# depend on it; only floating-point exception traps, which torch never enables, would).
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
_ENV_SWITCH = "SNNKIT_NATIVE"
_lib: "ctypes.CDLL | None | bool" = False  # False: not tried yet
_op_path: "Path | None | bool" = False  # scan_op.cpp's library, registered in this process at most once (None: cannot)
_op_lib: "ctypes.CDLL | None" = None  # the kernel library the operators call


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


def _compiler(env: str = "CC", names: tuple = ("cc", "gcc", "clang")) -> "str | None":
    """The compiler ``$env`` names, else the first of ``names`` on the PATH (the environment read at each call)."""
    for name in (os.environ.get(env), *names):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiled(compiler: str, command: list[str], sources: list[Path], name: str, depends: str = "") -> Path:
    """``compiler command... -o <lib>`` run into the cache unless the library is there: named ``name_<hash>.so`` by
    the sources' text, the command, the compiler's version, the CPU and ``depends``; written atomically."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    texts = [src.read_text() for src in sources]
    parts = [*texts, " ".join(command), version, _cpu_tag(), depends]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]
    out_dir = _cache_dir()
    lib_path = out_dir / f"{name}_{key}.so"
    if lib_path.is_file():
        return lib_path
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_lib = Path(tmp) / lib_path.name
        subprocess.run([compiler, *command, "-o", str(tmp_lib)], check=True, capture_output=True, timeout=600)
        os.replace(tmp_lib, lib_path)  # atomic: concurrent builders all produce the same file
    return lib_path


def _build(cc: str, fused: bool = True, openmp: bool = True) -> Path:
    """The library in one form (fused or two-rounding charge; with OpenMP or single-threaded), compiled into the
    cache unless it is there."""
    flags = [*_FLAGS, f"-DSNNKIT_FUSED={int(fused)}", *(["-fopenmp"] if openmp else [])]
    return _compiled(cc, [*flags, str(_SOURCE), "-lm"], [_SOURCE, _INCLUDED, _LOIHI], "lif_scan")


def op_version() -> int:
    """A checksum of ``scan_op.cpp``, compiled into the operator's kernels and passed by every call (``version``):
    a call from a graph traced against other kernels fails with a clear error, and a change of the kernels
    changes the traced graphs, so torch.compile's on-disk caches never hand back a graph built for others."""
    return zlib.crc32(_OP_SOURCE.read_bytes())


def _build_op(cxx: str) -> Path:
    """``scan_op.cpp`` compiled against this torch's headers and libraries (named by torch's version too)."""
    from torch.utils.cpp_extension import include_paths, library_paths

    torch_lib = library_paths()[0]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    command = ["-O2", "-std=c++20", "-fPIC", "-shared", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
               f"-DSNNKIT_OP_VERSION={op_version()}",
               *(f"-I{p}" for p in include_paths()), str(_OP_SOURCE),
               f"-L{torch_lib}", "-lc10", "-ltorch_cpu", "-ltorch", f"-Wl,-rpath,{torch_lib}"]
    return _compiled(cxx, command, [_OP_SOURCE], "scan_op", depends=torch.__version__)


def _declare(lib: ctypes.CDLL) -> None:
    """The kernels' C signatures, for ctypes (pointers as ``void *``, sizes and strides as ``long``)."""
    p, i64, i32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    for suf, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        fwd = getattr(lib, f"lif_forward_{suf}")
        fwd.argtypes = [p, i64, i64, p, p, p, i64, i64, i64, i64, i64, p, p, p, i32, i32, i32, real, real]
        fwd.restype = i32
        bwd = getattr(lib, f"lif_backward_{suf}")
        bwd.argtypes = [p, p, p, p, p, p, i64, i64, i64, i64, i64, p, i32, i32]
        bwd.restype = i32
        for name in ("pool2_forward", "pool2_backward"):
            fn = getattr(lib, f"{name}_{suf}")
            fn.argtypes = [p, p, i64, i64, i64, real]
            fn.restype = None
    lib.loihi_forward_f64.argtypes = [p, p, i64, i64, i64, p, ctypes.c_double, i32, i32, ctypes.c_double]
    lib.loihi_forward_f64.restype = i64
    lib.loihi_backward_f64.argtypes = [p, p, p, p, i64, i64, i64]
    lib.loihi_backward_f64.restype = None
    lib.loihi_grad_f64.argtypes = [p, p, p, p, i64, i64, i64, ctypes.c_double, i32, i32, ctypes.c_double,
                                   ctypes.c_double, ctypes.c_double]
    lib.loihi_grad_f64.restype = None


def _agrees_with_torch(lib: ctypes.CDLL) -> bool:
    """The library's forward must reproduce torch's step arithmetic (``addcmul``) bit for bit."""
    from snnkit.nn.native.kernels import RAW_U, forward  # kernels.py finds the library through this module

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


def loaded() -> "ctypes.CDLL | None":
    """The library :func:`load` found, even while :func:`set_enabled` has turned it off (outputs of an earlier
    forward still take its backward); None before :func:`load` or when unavailable."""
    return _lib or None


def is_enabled() -> bool:
    """Whether the compiled kernels may be used (:func:`set_enabled`; read by torch.compile as a guard)."""
    return _enabled


def set_enabled(flag: bool) -> None:
    """Turn the compiled kernels on or off for this process (the default comes from ``$SNNKIT_NATIVE``)."""
    global _enabled
    _enabled = bool(flag)


def op_loaded() -> bool:
    """Whether the operators ``snnkit::lif_scan`` and ``snnkit::lif_scan_backward`` have their C++ kernels
    (``scan_op.cpp``) in this process, bound to the kernels :func:`load` gives: built and registered on the first
    call where a C++ compiler and torch's headers are there (otherwise callers use the kernels through ctypes,
    or torch)."""
    lib = load()
    if lib is not None and lib is not _op_lib:
        _bind_op(lib)
    return lib is not None and lib is _op_lib


def _bind_op(lib: ctypes.CDLL) -> None:
    """Register ``scan_op.cpp``'s operators (built on first use; once per process: a namespace registers once) and
    hand them ``lib``'s scan kernels. Nothing happens where they cannot be built here (no C++ compiler, no torch
    headers, a failed build): callers then reach the kernels through ctypes."""
    global _op_path, _op_lib
    if _op_path is False:
        _op_path = _register_op()
    if _op_path is None:
        return
    kernels = [ctypes.cast(getattr(lib, name), ctypes.c_void_p)
               for name in ("lif_forward_f32", "lif_forward_f64", "lif_backward_f32", "lif_backward_f64")]
    from snnkit.nn.native.buffers import POOL  # the operators' outputs are pooled under the same cap

    ctypes.CDLL(str(_op_path)).snnkit_bind_kernels(*kernels, ctypes.c_int64(POOL.max_bytes))
    _op_lib = lib


def _register_op() -> "Path | None":
    cxx = _compiler("CXX", ("c++", "g++", "clang++"))
    if cxx is None:
        return None
    try:
        path = _build_op(cxx)
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError, IndexError):
        return None
    return path


def _try_load() -> "ctypes.CDLL | None":
    """The form of the library that agrees with torch on this CPU (fused first), or None.

    Built with OpenMP first: its libgomp is the one torch has already loaded (the same soname), so the loops
    share torch's threads. A compiler without OpenMP, or a library that does not load against torch's runtime,
    gets the single-threaded build."""
    cc = _compiler()
    if cc is None:
        return None
    for openmp in (True, False):
        for fused in (True, False):
            try:
                lib = ctypes.CDLL(str(_build(cc, fused, openmp)))
                _declare(lib)
            except (OSError, subprocess.SubprocessError, AttributeError):
                break  # this build (OpenMP or not) is unavailable: try the next
            if _agrees_with_torch(lib):
                return lib
    return None

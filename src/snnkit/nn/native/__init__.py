"""Optional compiled CPU kernels (float32/float64) for the whole-sequence LIF scan and 2 x 2 pooling, with a
clean fallback: when they are off or cannot be built, callers use torch and get the same results.

- ``lif_scan.c`` + ``lif_scan_real.h``: the C source (package data), instantiated for float and double by the
  preprocessor; its surrogate derivatives are those of :mod:`snnkit.nn.surrogate` (``kernel_code``);
- ``scan_op.cpp``: the C++ CPU and autograd kernels of the operator ``snnkit::lif_scan`` over those kernels
  (schema and fake kernel in :mod:`snnkit.nn.functional`), with its own buffer pool under the same cap;
- :mod:`.build`: compiler, cache (``$SNNKIT_CACHE``), ctypes loading, the probe that picks the fused or
  two-rounding form matching torch, the ``$SNNKIT_NATIVE`` switch (:func:`load`, :func:`set_enabled`), the
  operator's build (:func:`~.build.op_loaded`);
- :mod:`.layout`: the :class:`~.layout.Plan` of strides and orders by which the kernels read a tensor;
- :mod:`.buffers`: the :class:`BufferPool` the outputs come from;
- :mod:`.kernels`: the calls themselves (:func:`forward`, :func:`backward`, :func:`pool2x2`, ...), and
  loihi-emu's integer-exact scan (``loihi_scan.h``: :func:`loihi_forward`, :func:`loihi_backward`,
  :func:`loihi_gradient`).
"""
from snnkit.nn.native.buffers import POOL, BufferPool
from snnkit.nn.native.build import load, set_enabled
from snnkit.nn.native.kernels import (RAW_U, backward, forward, loihi_backward, loihi_forward, loihi_gradient,
                                     pool2x2, pool2x2_backward)
from snnkit.nn.native.layout import neuron_order, out_strides, summed_strides, supports

__all__ = ["POOL", "RAW_U", "BufferPool", "backward", "forward", "load", "loihi_backward", "loihi_forward",
           "loihi_gradient", "neuron_order", "out_strides", "pool2x2", "pool2x2_backward", "set_enabled",
           "summed_strides", "supports"]

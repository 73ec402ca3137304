"""Reused output buffers for the compiled kernels (:class:`BufferPool`, and the process-wide :data:`POOL`)."""
from __future__ import annotations

import os
import threading

import torch


class BufferPool:
    """The kernels' output buffers, handed out again once nobody holds them.

    Fresh multi-megabyte allocations are expensive where freed memory goes back to the operating system: every
    page is faulted in (and zeroed) again on first touch, measured at about 10 us per 4 KiB page on the project's
    2-core VM, which made allocation cost more than the scan itself. The pool keeps the storage of the scan's
    outputs (spikes, surrogate derivatives, potentials, gradients) and reuses a buffer when its storage has no
    holder left but the pool (every tensor handed out is a view, so each user, autograd's saved tensors
    included, counts). The kernels overwrite every element of a buffer they get.

    ``max_bytes`` caps the memory kept (free buffers are dropped to make room; beyond the cap, buffers are not
    pooled); 0 turns pooling off (``$SNNKIT_SCAN_POOL_MB``, default 1024). The holder count comes from torch's
    private ``torch._C._storage_Use_Count``; a torch without it gets no pooling.
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

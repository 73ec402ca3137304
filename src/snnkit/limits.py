"""A memory limit checked before large arrays are built, so that absurd sizes end in one line, not a MemoryError.

The limit is ``SNNKIT_MAX_MEMORY_GB`` (GiB; default: 80 % of the machine's physical memory). Raise it to run
something larger on purpose.
"""
from __future__ import annotations

import os

ENV = "SNNKIT_MAX_MEMORY_GB"
GIB = 1024 ** 3


class MemoryLimitError(ValueError):
    """An array would exceed the memory limit; the message gives the estimate and how to raise the limit."""


def max_bytes() -> int:
    """The limit in bytes: ``$SNNKIT_MAX_MEMORY_GB`` or 80 % of physical memory."""
    value = os.environ.get(ENV)
    if value is not None:
        try:
            gib = float(value)
        except ValueError:
            raise MemoryLimitError(f"{ENV}={value!r} is not a number of GiB") from None
        return int(gib * GIB)
    try:
        return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # no sysconf: a conservative 8 GiB
        return 8 * GIB


def check(what: str, nbytes: float) -> None:
    """Refuse (MemoryLimitError) when ``what`` would need more than the limit."""
    limit = max_bytes()
    if nbytes > limit:
        raise MemoryLimitError(f"{what} would need about {nbytes / GIB:,.1f} GiB, over the limit of "
                               f"{limit / GIB:,.1f} GiB (raise it with {ENV}=...)")

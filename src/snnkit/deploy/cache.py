"""Per-graph build caches for targets (torch-free: the Lava host side uses it too).

A target builds something from a graph before it runs (an executor, a quantised graph, an emulator). Attacks
call ``Target.run`` on the same graph object for every query batch, so targets keep the last few builds keyed by
the *identity* of the graph they came from plus a key of whatever else the build depends on. Graphs are treated
as immutable once handed to a target: a graph changed in place after a run needs a new graph object (or
:meth:`BuildCache.clear`). The cache holds a reference to each graph it keys, so an identity is never reused
while its entry lives.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


class BuildCache:
    """The ``size`` most recently used builds, by ``(graph identity, key)``."""

    def __init__(self, size: int = 4):
        if size < 1:
            raise ValueError(f"BuildCache: size must be >= 1, not {size}")
        self.size = int(size)
        self._entries: OrderedDict[tuple[int, Hashable], tuple[object, object]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, graph: object, key: Hashable, build: Callable[[], T]) -> T:
        """The cached build for ``(graph, key)``, or ``build()`` (stored, the least recently used one evicted)."""
        k = (id(graph), key)
        entry = self._entries.get(k)
        if entry is not None and entry[0] is graph:
            self._entries.move_to_end(k)
            self.hits += 1
            return entry[1]  # type: ignore[return-value]
        value = build()
        self.misses += 1
        self._entries[k] = (graph, value)
        self._entries.move_to_end(k)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

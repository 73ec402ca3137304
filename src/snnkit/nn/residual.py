"""Residual blocks: a small graph of multi-step layers over ``[B, T, ...]``, read the way NIR reads a graph.

A :class:`Block` holds named layers, each with the names of its sources: ``"input"`` (the block's input) or an
earlier layer. A layer's input is the **sum** of its sources (NIR's rule: a node's incoming edges are summed),
and the block's output is the sum of its ``output`` sources. Both residual forms of the seed papers are written
this way, so ``snnkit.export.exporter`` can write them as NIR edges without any new node kind:

- tdBN / ResNet-19 form (Zheng et al. 2021): the shortcut joins the input current of the block's last neuron,
  ``lif2 <- (bn2, shortcut)``;
- SEW ADD (Fang et al. 2021): the block's output spikes are added, ``output = (lif2, shortcut)``; the next
  layer takes edges from both.

The one connection that is not a sum, SEW's IAND ``(not A) and S`` (:class:`IAnd`), takes its sources as
separate arguments; it has no NIR form.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

BLOCK_INPUT = "input"


def summed(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of one or more tensors (the first one itself when there is one)."""
    total = None
    for t in tensors:
        total = t if total is None else total + t
    if total is None:
        raise ValueError("nothing to sum")
    return total


class IAnd(nn.Module):
    """SEW-ResNet's IAND connection ``g(A, S) = (1 - A) S`` of the residual branch's spikes ``A`` and the
    shortcut's spikes ``S`` (both ``[B, T, ...]``, 0/1): a shortcut spike passes where the branch is silent.
    Differentiable through ``A`` and ``S`` (their surrogate gradients)."""

    def forward(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return shortcut * (1.0 - branch)


class Block(nn.Module):
    """A residual block (module docstring): ``forward(x [B, T, ...]) -> [B, T, ...]``.

    Args:
        layers: ``(name, module, sources)`` in an order where every source comes first; a source is
            :data:`BLOCK_INPUT` or an earlier name. Modules take the sum of their sources, :class:`IAnd` takes
            them as ``(branch, shortcut)``.
        output: the names whose sum is the block's output.
    """

    def __init__(self, layers: Sequence[tuple[str, nn.Module, Sequence[str]]], output: Sequence[str]):
        super().__init__()
        self.sources: dict[str, tuple[str, ...]] = {}
        for name, module, sources in layers:
            unknown = [s for s in sources if s != BLOCK_INPUT and s not in self.sources]
            if name == BLOCK_INPUT or unknown or not sources:
                raise ValueError(f"block layer {name!r}: sources {list(sources)} must be earlier layers or "
                                 f"{BLOCK_INPUT!r}")
            self.add_module(name, module)
            self.sources[name] = tuple(sources)
        if not output or any(s != BLOCK_INPUT and s not in self.sources for s in output):
            raise ValueError(f"block output {list(output)} must name its layers or {BLOCK_INPUT!r}")
        self.output = tuple(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = {BLOCK_INPUT: x}
        for name, module in self.named_children():
            srcs = [out[s] for s in self.sources[name]]
            out[name] = module(*srcs) if isinstance(module, IAnd) else module(summed(srcs))
        return summed(out[s] for s in self.output)

    def map_layers(self, fn: Callable[[str, nn.Module], nn.Module]) -> "Block":
        """The same graph with each layer replaced by ``fn(name, layer)`` (the modules are shared, not copied)."""
        return Block([(name, fn(name, m), self.sources[name]) for name, m in self.named_children()], self.output)

    def extra_repr(self) -> str:
        edges = ", ".join(f"{'+'.join(s)}->{n}" for n, s in self.sources.items())
        return f"{edges}; output={'+'.join(self.output)}"

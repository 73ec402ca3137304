"""The two sides a re-attack attacks: the reference model and a deployed target, each as a :class:`Side`.

A target's side is built from what the target says it can do (``snnkit.deploy.base.Target``), never from its
name:

| the target offers | judged by | white-box | adaptive |
|---|---|---|---|
| an exact differentiable view (torch, norse, snntorch) | that view (:class:`~snnkit.attack.target.TargetModule`) | yes, on the target itself | the target itself |
| a model of itself with gradients (lava, loihi-emu) | its outputs (:class:`~snnkit.attack.target.TargetScores`) | no | that model |
| a query proxy (lava: loihi-emu, bit-exact and much faster) | the proxy's outputs; the final verdicts are re-checked on the target (:mod:`snnkit.attack.recheck`) | no | as above |
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import torch
from torch import nn

from snnkit.attack.base import ScoreFn
from snnkit.attack.registry import Context, Settings
from snnkit.attack.target import TargetModule, TargetScores
from snnkit.deploy.base import Target
from snnkit.deploy.inputs import encode, graph_timesteps


@dataclass
class Side:
    """One attacked thing.

    label: ``"reference"`` or the target's name; scores: its judge ``x [B, ...] -> [B, C]``; differentiable:
    whether gradient attacks may use ``scores`` directly; adaptive: a differentiable model of it (None: no
    adaptive attack); counter: the :class:`TargetScores` that answered its queries (query accounting);
    recheck: ``(target, proxy)`` when a proxy answered the queries and the target must confirm the verdicts.
    """

    label: str
    scores: ScoreFn
    differentiable: bool
    adaptive: ScoreFn | None = None
    adaptive_via: str = ""
    counter: TargetScores | None = None
    recheck: tuple[Target, Target] | None = None

    def context(self, sources: dict, members: dict, settings: Settings, num_classes: int) -> Context:
        """What attacks on this side are built against."""
        return Context(self.label, self.scores, self.differentiable, self.adaptive, sources, members, settings,
                       num_classes)


class WithSurrogate(nn.Module):
    """``model`` differentiated through another surrogate: ``forward`` runs it under ``use_surrogate(spec)``
    (the surrogate derivative is taken in the forward pass, so the backward needs no context)."""

    def __init__(self, model: nn.Module, spec: str):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from snnkit.nn.surrogate import use_surrogate

        with use_surrogate(self.model, self.spec):
            return self.model(x)


def reference_sources(model: nn.Module, surrogates: tuple[str, ...]) -> tuple[dict, dict, list[str]]:
    """``(transfer sources, ensemble members, notes)`` derived from the reference model.

    Transfer sources: the reference (its own surrogate), its non-spiking twin and its BPTR view (each where
    defined; a note says why one is missing). Ensemble members: those plus the reference under each surrogate
    (but its own).
    """
    from snnkit.models.spiking import TwinUndefined
    from snnkit.nn.surrogate import Surrogate, parse

    sources: dict[str, ScoreFn] = {"reference": model}
    notes: list[str] = []
    for name, make in (("twin", getattr(model, "twin", None)), ("bptr", getattr(model, "bptr", None))):
        if make is None:
            notes.append(f"no {name} source: the reference is not an snnkit SpikingModel")
            continue
        try:
            sources[name] = make().to(next(model.parameters()).device)
        except TwinUndefined as exc:
            notes.append(f"no {name} source: {exc}")
    own = {repr(m.surrogate) for m in model.modules() if isinstance(getattr(m, "surrogate", None), Surrogate)}
    members = dict(sources)
    for spec in surrogates:
        if own == {repr(parse(spec))}:
            continue  # the reference's own surrogate: already the "reference" member
        members[f"surrogate:{spec}"] = WithSurrogate(model, spec)
    return sources, members, notes


def reference_side(model: nn.Module) -> Side:
    """The reference model itself: white-box, and its own adaptive model."""
    return Side("reference", model, True, adaptive=model, adaptive_via="reference")


def target_side(target: Target, graph: nir.NIRGraph, probe: torch.Tensor, settings: Settings) -> Side:
    """The side of ``target`` running ``graph`` (see the module docstring). probe: inputs ``[B, ...]`` in [0, 1]
    like those to be attacked (a quantising target infers its input coding from them)."""
    target.check_available()  # a missing environment is said before any attack runs
    meta = dict(graph.metadata or {})
    encoded = encode(probe.detach().cpu().numpy(), meta, graph_timesteps(meta, None))
    view = target.differentiable(graph, encoded, device=settings.device)
    module = None if view is None else TargetModule(target, graph, view=view)
    if module is not None and module.exact:
        return Side(target.name, module, True, adaptive=module, adaptive_via=module.via)
    proxy = target.query_proxy(device=settings.device)
    counter = TargetScores(proxy or target, graph)
    return Side(target.name, counter, False, adaptive=module, adaptive_via=module.via if module else "",
                counter=counter, recheck=(target, proxy) if proxy is not None else None)

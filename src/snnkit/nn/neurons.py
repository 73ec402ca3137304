"""Multi-step neuron layers over ``[B, T, ...]``: LIF, IF and CubaLIF, and the readouts LI and CubaLI
(docs/semantics.md).

Every ``forward`` starts from zero state, so nothing leaks between calls. Set ``layer.record = True`` (or use
``model.run``) to keep the last call's spikes and pre-reset membrane potentials, with their autograd graph, in
``layer.recorded`` (``{"spikes": [B, T, ...], "v": [B, T, ...]}``); regularisers and counters read them there.
Parameters may be scalars or per-neuron tensors (imported graphs); ``learn_*`` makes them trainable.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from snnkit.nn import functional as F
from snnkit.nn.surrogate import Surrogate, parse

RESETS = ("zero", "subtract")


def _param(module: nn.Module, name: str, value, learn: bool) -> None:
    t = torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()
    if learn:
        module.register_parameter(name, nn.Parameter(t))
    else:
        module.register_buffer(name, t)


def _all_equal(t: torch.Tensor, value: float) -> bool:
    """Whether every element of ``t`` equals ``value`` (a scalar read for the usual 0-dim buffer)."""
    return t.item() == value if t.numel() == 1 else bool((t == value).all())


class SpikingLayer(nn.Module):
    """What all spiking layers share: threshold, reset, surrogate, recording and the step interface."""

    def __init__(self, threshold=1.0, reset: str = "zero", v_reset=0.0, surrogate: "str | Surrogate" = "atan:alpha=2",
                 learn_threshold: bool = False):
        super().__init__()
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, not {reset!r}")
        self.reset = reset
        self.surrogate = parse(surrogate)
        _param(self, "threshold", threshold, learn_threshold)
        self.register_buffer("v_reset", torch.as_tensor(v_reset, dtype=torch.get_default_dtype()).clone())
        self.record = False
        self.recorded: dict[str, torch.Tensor] = {}

    @property
    def subtract(self) -> bool:
        return self.reset == "subtract"

    def _keep(self, s: torch.Tensor, h: torch.Tensor) -> None:
        if self.record:
            self.recorded = {"spikes": s, "v": h}

    def extra_repr(self) -> str:
        return f"reset={self.reset}, surrogate={self.surrogate.spec}"


class LIF(SpikingLayer):
    """Leaky integrate-and-fire: ``h = beta v + (1-beta) v_leak + g I``; spike if ``h > threshold``; reset.

    Args:
        beta: membrane decay per step, ``1 - dt/tau`` (dimensionless, in [0, 1]).
        threshold: firing threshold (same units as v).
        reset: ``"zero"`` (to ``v_reset``) or ``"subtract"`` (``v -= threshold``).
        v_leak: resting potential.
        input_scale: ``g = (1-beta) r``; 1 means the input current is added to ``v`` unscaled.
    Input ``[B, T, ...]`` currents, output ``[B, T, ...]`` spikes (0/1).
    """

    def __init__(self, beta=0.9, threshold=1.0, reset: str = "zero", v_leak=0.0, input_scale=1.0, v_reset=0.0,
                 surrogate: "str | Surrogate" = "atan:alpha=2", learn_beta: bool = False,
                 learn_threshold: bool = False):
        super().__init__(threshold, reset, v_reset, surrogate, learn_threshold)
        _param(self, "beta", beta, learn_beta)
        self.register_buffer("v_leak", torch.as_tensor(v_leak, dtype=torch.get_default_dtype()).clone())
        self.register_buffer("input_scale", torch.as_tensor(input_scale, dtype=torch.get_default_dtype()).clone())

    def decay(self) -> torch.Tensor:
        return self.beta.clamp(0.0, 1.0) if self.beta.requires_grad else self.beta

    def drive(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled input ``(1-beta) v_leak + g I`` added to the decayed potential each step.

        Eagerly, the identity cases (``g = 1``, ``v_leak = 0``) are skipped; under ``torch.compile`` the terms
        are always written (no data-dependent branch) and fused into the scan.
        """
        compiling = torch.compiler.is_compiling()
        if compiling or not _all_equal(self.input_scale, 1.0):
            x = x * self.input_scale
        if compiling or not _all_equal(self.v_leak, 0.0):
            x = x + (1 - self.decay()) * self.v_leak
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._scan(self.drive(x))

    def forward_frame(self, frame: torch.Tensor, steps: int) -> torch.Tensor:
        """:meth:`forward` on ``frame [B, 1, ...]`` repeated over ``steps`` (a time-invariant input,
        ``SpikingModel.propagate``): the drive is computed on the frame and scanned as a stride-0 view, the same
        values, and the scan reads one frame instead of T (under ``torch.compile`` too, where the drive's terms
        are always written); the frame's gradient is summed over the steps inside the scan's backward.
        Returns ``[B, steps, ...]``."""
        return self._scan(self.drive(frame), steps)

    def _scan(self, drive: torch.Tensor, steps: "int | None" = None) -> torch.Tensor:
        """The layer's output for its drive ``[B, T, ...]`` (``[B, 1, ...]`` repeated over ``steps``): spikes
        (recorded when asked)."""
        s, h = F.lif_scan(drive, self.decay(), self.threshold, self.v_reset, self.surrogate, self.subtract,
                          with_h=self.record, batch_first=True, steps=steps)
        if self.record:
            self._keep(s, h)
        return s

    def init_state(self, like: torch.Tensor) -> F.LIFState:
        return F.LIFState(torch.zeros_like(like))

    def step(self, x: torch.Tensor, state: F.LIFState):
        """One step on ``x [B, ...]``: returns ``(s, state, h)``."""
        return F.lif_step(self.drive(x), state, self.decay(), self.threshold, self.v_reset, self.surrogate,
                          self.subtract)


class IF(LIF):
    """Integrate-and-fire: ``h = v + g I`` (no leak; dt folded into ``g = r``), then fire and reset."""

    def __init__(self, threshold=1.0, reset: str = "zero", input_scale=1.0, v_reset=0.0,
                 surrogate: "str | Surrogate" = "atan:alpha=2", learn_threshold: bool = False):
        super().__init__(beta=1.0, threshold=threshold, reset=reset, input_scale=input_scale, v_reset=v_reset,
                         surrogate=surrogate, learn_threshold=learn_threshold)


class CubaLIF(SpikingLayer):
    """Current-based LIF: ``i = alpha i + g_syn x``; ``h = beta v + (1-beta) v_leak + g i``; fire; reset.

    Args:
        alpha: synaptic decay per step ``1 - dt/tau_syn``; beta: membrane decay ``1 - dt/tau_mem``.
        syn_scale: ``g_syn = (1-alpha) w_in`` (1: input added to ``i`` unscaled).
        input_scale: ``g = (1-beta) r`` (1: ``i`` added to ``v`` unscaled).
    Stepped with autograd (it is used for imported and recurrent graphs, where the input of a step depends on
    the previous step's spikes).
    """

    def __init__(self, alpha=0.8, beta=0.9, threshold=1.0, reset: str = "zero", v_leak=0.0, syn_scale=1.0,
                 input_scale=1.0, v_reset=0.0, surrogate: "str | Surrogate" = "atan:alpha=2",
                 learn_beta: bool = False, learn_threshold: bool = False):
        super().__init__(threshold, reset, v_reset, surrogate, learn_threshold)
        _param(self, "alpha", alpha, learn_beta)
        _param(self, "beta", beta, learn_beta)
        for name, value in (("v_leak", v_leak), ("syn_scale", syn_scale), ("input_scale", input_scale)):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.get_default_dtype()).clone())

    def _params(self):
        alpha, beta = self.alpha, self.beta
        if alpha.requires_grad:
            alpha, beta = alpha.clamp(0.0, 1.0), beta.clamp(0.0, 1.0)
        return alpha, beta, self.input_scale, (1 - beta) * self.v_leak

    def init_state(self, like: torch.Tensor) -> F.CubaState:
        return F.CubaState(torch.zeros_like(like), torch.zeros_like(like))

    def step(self, x: torch.Tensor, state: F.CubaState):
        """One step on ``x [B, ...]``: returns ``(s, state, h)``."""
        alpha, beta, gain, leak = self._params()
        return F.cuba_step(x * self.syn_scale, state, alpha, beta, gain, leak, self.threshold, self.v_reset,
                           self.surrogate, self.subtract)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.init_state(x[:, 0])
        spikes, hs = [], []
        for t in range(x.shape[1]):
            s, state, h = self.step(x[:, t], state)
            spikes.append(s)
            hs.append(h)
        s, h = torch.stack(spikes, 1), torch.stack(hs, 1)
        self._keep(s, h)
        return s


class LI(LIF):
    """Leaky integrator, a non-spiking readout: LIF's charge ``h = beta v + (1-beta) v_leak + g I`` without fire
    or reset; its output is ``h``. Same arguments as :class:`LIF` for the charge (the threshold is infinite)."""

    def __init__(self, beta=0.9, v_leak=0.0, input_scale=1.0, learn_beta: bool = False):
        super().__init__(beta=beta, threshold=math.inf, v_leak=v_leak, input_scale=input_scale,
                         learn_beta=learn_beta)

    def _scan(self, drive: torch.Tensor, steps: "int | None" = None) -> torch.Tensor:
        """The potential ``h [B, T, ...]`` for the drive (the readout's output)."""
        _, h = F.lif_scan(drive, self.decay(), self.threshold, self.v_reset, self.surrogate, False, with_h=True,
                          batch_first=True, steps=steps)
        if self.record:
            self._keep(torch.zeros_like(h), h)
        return h

    def step(self, x: torch.Tensor, state: F.LIFState):
        """One step on ``x [B, ...]``: returns ``(h, state, h)``."""
        _, state, h = super().step(x, state)
        return h, state, h


class CubaLI(CubaLIF):
    """Current-based leaky integrator, a non-spiking readout: CubaLIF's ``i`` and ``h`` without fire or reset;
    its output is ``h``. Same arguments as :class:`CubaLIF` for the charge (the threshold is infinite)."""

    def __init__(self, alpha=0.8, beta=0.9, v_leak=0.0, syn_scale=1.0, input_scale=1.0):
        super().__init__(alpha=alpha, beta=beta, threshold=math.inf, v_leak=v_leak, syn_scale=syn_scale,
                         input_scale=input_scale)

    def step(self, x: torch.Tensor, state: F.CubaState):
        """One step on ``x [B, ...]``: returns ``(h, state, h)``."""
        _, state, h = super().step(x, state)
        return h, state, h

    def _keep(self, s: torch.Tensor, h: torch.Tensor) -> None:
        super()._keep(torch.zeros_like(h), h)  # CubaLIF's forward stacks what step returns first: h

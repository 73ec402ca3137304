"""Lava's LIF with reset by subtraction: ``v -= vth << 6`` after a spike instead of ``v = 0``.

snnkit trains IF and LIF neurons with reset by subtraction (the ANN-to-SNN conversion depends on it: the charge
above threshold is kept). Lava 0.10 has no such process, so this one reuses every step of Lava's ``LIFReset``
(the fixed-point ``PyLifResetModelBitAcc`` and the floating-point ``PyLifResetModelFloat``) and changes only the
reset. On Loihi 2 hardware the same neuron is a microcode program; lava-dl's netx format cannot express it
(docs/loihi.md).
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import PyLifResetModelBitAcc, PyLifResetModelFloat
from lava.proc.lif.process import LIFReset


class LIFSubtractReset(LIFReset):
    """``LIFReset`` whose spiking neurons subtract the threshold from ``v`` (same parameters)."""


# The models inherit their parent's resources (CPU) and tags (fixed_pt / floating_pt); Lava's ``implements``
# refuses to change a parent's process, so the class attribute names the new one first.


@implements(proc=LIFSubtractReset, protocol=LoihiProtocol)
class PyLifSubtractResetModelBitAcc(PyLifResetModelBitAcc):
    """Lava's bit-accurate LIF step; a spike subtracts the scaled threshold (``v > vth << 6`` before, so ``v``
    stays inside its 24-bit range)."""

    implements_process = LIFSubtractReset

    def reset_voltage(self, spike_vector: np.ndarray) -> None:
        self.v[spike_vector] -= self.effective_vth


@implements(proc=LIFSubtractReset, protocol=LoihiProtocol)
class PyLifSubtractResetModelFloat(PyLifResetModelFloat):
    """Lava's floating-point LIF step; a spike subtracts the threshold."""

    implements_process = LIFSubtractReset

    def reset_voltage(self, spike_vector: np.ndarray) -> None:
        self.v[spike_vector] -= self.vth

"""A readout: Lava's LIF that never fires and writes its potential ``v`` into a file-backed array every step.

LI and CubaLI output layers (non-spiking; their membrane potential is the output) are Lava's ``LIFReset`` step
without the spike: this process reuses Lava's fixed-point ``PyLifResetModelBitAcc`` and floating-point
``PyLifResetModelFloat`` unchanged except that no neuron fires, and, after each step, it writes ``v`` (flat, in
the process's own layout) into row ``t - 1`` of a ``float64`` memory map ``[steps, n]`` that the worker created
(Lava's ``Var.get`` would move it one element at a time, as for spikes in ``recorder.py``).
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import PyLifResetModelBitAcc, PyLifResetModelFloat
from lava.proc.lif.process import LIFReset


class LIFReadout(LIFReset):
    """``LIFReset`` (same parameters) that never fires; ``steps`` and ``path`` name the array its ``v`` goes to."""

    def __init__(self, *, steps: int, path: str, **lif) -> None:
        super().__init__(**lif)
        self.proc_params["steps"] = int(steps)
        self.proc_params["path"] = str(path)


class _Readout:
    """What both models add to Lava's: no spike, and ``v`` written after every step."""

    def _open(self, proc_params) -> None:
        n = int(np.prod(proc_params["shape"]))
        self._trace = np.memmap(proc_params["path"], dtype=np.float64, mode="r+", shape=(proc_params["steps"], n))

    def spiking_activation(self) -> np.ndarray:
        return np.zeros(self.v.shape, dtype=bool)

    def run_spk(self) -> None:
        super().run_spk()
        t = self.time_step - 1
        if t < self._trace.shape[0]:
            self._trace[t] = self.v.reshape(-1)


# The models inherit their parent's resources (CPU) and tags (fixed_pt / floating_pt); Lava's ``implements``
# refuses to change a parent's process, so the class attribute names the new one first.


@implements(proc=LIFReadout, protocol=LoihiProtocol)
class PyLifReadoutModelBitAcc(_Readout, PyLifResetModelBitAcc):
    """Lava's bit-accurate LIF step without the spike; ``v`` recorded."""

    implements_process = LIFReadout

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._open(proc_params)


@implements(proc=LIFReadout, protocol=LoihiProtocol)
class PyLifReadoutModelFloat(_Readout, PyLifResetModelFloat):
    """Lava's floating-point LIF step without the spike; ``v`` recorded."""

    implements_process = LIFReadout

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._open(proc_params)

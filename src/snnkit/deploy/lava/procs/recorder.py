"""A spike recorder that writes each step into a file-backed array.

Lava's ``Var.get`` moves arrays one element at a time through the runtime (about 30 us per element here), so
reading a sink ``RingBuffer`` of a long run costs minutes. This process instead writes the spikes it receives
at step ``t`` (Lava counts from 1) into row ``t - 1`` of a ``uint8`` memory map ``[steps, n]`` that the worker
created and reads after the run. It only observes; it sends nothing back into the network.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


class RasterRecorder(AbstractProcess):
    """Records a 1-D spike vector of ``n`` neurons for ``steps`` steps into the file at ``path``."""

    def __init__(self, *, n: int, steps: int, path: str) -> None:
        super().__init__(n=int(n), steps=int(steps), path=str(path))  # kept in proc_params for the model
        self.a_in = InPort(shape=(n,))


@implements(proc=RasterRecorder, protocol=LoihiProtocol)
@requires(CPU)
class PyRasterRecorderModel(PyLoihiProcessModel):
    """Untagged, so it is chosen under both ``fixed_pt`` and ``floating_pt``."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        shape = (proc_params["steps"], proc_params["n"])
        self._raster = np.memmap(proc_params["path"], dtype=np.uint8, mode="r+", shape=shape)

    def run_spk(self) -> None:
        s = self.a_in.recv()
        t = self.time_step - 1
        if t < self._raster.shape[0]:
            self._raster[t] = s != 0

"""Load a netx HDF5 file with lava-dl's own ``netx.hdf5.Network`` and run it on Lava (Lava worker only).

This is the check that the file handed to Loihi 2 users runs as snnkit says: lava-dl builds the network from
the file (its blocks, its weight encoding, its neurons), and snnkit only feeds it and records it.

- **Imports** (:func:`import_netx`): lava-dl 0.6.0 reaches torch at import time for two names only; when
  torch is absent from the Lava environment the worker puts snnkit's stand-ins
  (``snnkit/deploy/lava/netx_imports``, see its README) first on ``sys.path`` for this import, then removes
  the stand-in ``torch`` from ``sys.modules``. With torch installed, the real modules are used.
- **Samples**: as for snnkit's own Lava network (:class:`~snnkit.deploy.lava.build.LavaNetwork`), ``B``
  samples run back to back in slots of ``P = T + L`` steps; ``Network(reset_interval=P, reset_offset=1)``
  makes netx's block ``k`` a ``LIFReset`` zeroed at slot step ``k``, when its sample's first input arrives.
  A recurrent block's synapse buffer is zeroed at the same moment (a pause and ``Var.set``).
- **Recording**: every block's output spikes, through snnkit's recorder process.

The read-back :class:`~snnkit.deploy.loihi.graph.LoihiGraph` of the same file
(:func:`snnkit.deploy.loihi.netx_read.read_netx`) only supplies the bookkeeping (layer names, sizes,
depths); the worker checks that netx built blocks of those shapes.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from snnkit.deploy.lava.build import LavaNetwork, lava_shape
from snnkit.deploy.loihi.graph import LoihiGraph

STAND_INS = Path(__file__).resolve().parent / "netx_imports"
_IMPORTED = {"how": None}  # how this process imported netx


def import_netx():
    """``(lava.lib.dl.netx.hdf5, how)``: how is ``"torch"`` (lava-dl's own imports) or ``"stand-in"``."""
    if "lava.lib.dl.netx.hdf5" in sys.modules:
        return sys.modules["lava.lib.dl.netx.hdf5"], _IMPORTED["how"]
    if importlib.util.find_spec("lava.lib.dl") is None or importlib.util.find_spec("lava.lib.dl.netx") is None:
        raise ModuleNotFoundError("lava-dl is not installed in the Lava environment; upgrade it with "
                                  "`snn-lava-env` (it installs lava-dl 0.6.0)")
    how = "torch"
    if importlib.util.find_spec("torch") is None:
        how = "stand-in"
        sys.path.insert(0, str(STAND_INS))
    try:
        from lava.lib.dl.netx import hdf5
    finally:
        if how == "stand-in":
            sys.path.remove(str(STAND_INS))
            stand_in = sys.modules.get("torch")
            if stand_in is not None and getattr(stand_in, "SNNKIT_STAND_IN", False):
                del sys.modules["torch"]  # nothing else may take it for torch
    _IMPORTED["how"] = how
    return hdf5, how


class NetxNetwork(LavaNetwork):
    """lava-dl netx's network for the file ``netx_path``, fed ``x [B, T, *input_shape]`` (input integers) and
    recorded per block; ``lg`` is the same file read back (names, sizes, depths). Fixed point only."""

    def __init__(self, lg: LoihiGraph, x: np.ndarray, netx_path: Path, workdir: Path):
        hdf5, self.imports = import_netx()
        self._stream(lg, x, "fixed_pt", workdir)
        self.net = hdf5.Network(net_config=str(netx_path), input_message_bits=int(lg.input.message_bits),
                                reset_interval=self.period, reset_offset=1)
        blocks = list(self.net.layers)
        layers = sorted(lg.layers, key=lambda l: l.depth)
        if len(blocks) != len(layers):
            raise ValueError(f"netx built {len(blocks)} blocks, the file read back has {len(layers)} layers")
        for block, layer in zip(blocks, layers):
            if tuple(block.shape) != lava_shape(tuple(layer.shape)):
                raise ValueError(f"netx block for layer {layer.name!r} has shape {tuple(block.shape)}, expected "
                                 f"{lava_shape(tuple(layer.shape))}")
        [in_port], in_shape = self.out_ports[lg.input.name]
        feed = in_port
        if len(in_shape) == 3 and len(self.net.inp.shape) == 1:  # a flatten before the first dense block
            feed = in_port.transpose([2, 1, 0]).flatten()
        feed.connect(self.net.inp)
        self.neurons = {layer.name: block.neuron for block, layer in zip(blocks, layers)}
        self.synapses = [getattr(b, name) for b in blocks for name in ("synapse", "synapse_rec") if hasattr(b, name)]
        self.recurrent = [(b.synapse_rec, layer.depth) for b, layer in zip(blocks, layers) if hasattr(b, "synapse_rec")]
        for block, layer in zip(blocks, layers):
            self.out_ports[layer.name] = ([block.out], tuple(layer.shape))
        self._record()

"""The one table of NIR node kinds as snnkit groups them (every other module asks here).

| kind | nodes | role |
|---|---|---|
| ``WEIGHTED`` | Affine, Linear, Conv1d, Conv2d | synapses: counted as synaptic ops (spike input) or MACs (analog input) |
| ``POOLING`` | SumPool2d, AvgPool2d | fixed windows, no learned weights |
| ``CONNECTIONS`` | ``WEIGHTED``, ``POOLING``, Flatten, Scale | stateless maps between neuron layers |
| ``SPIKING`` | LIF, IF, CubaLIF | neurons that emit spikes |
| ``POTENTIALS`` | LI, CubaLI, I | neurons whose output is their membrane potential (readouts) |
| ``NEURONS`` | ``SPIKING``, ``POTENTIALS`` | every stateful neuron (one update per neuron and step) |
| ``PORTS`` | Input, Output | the graph's ends |
"""
from __future__ import annotations

import nir

WEIGHTED = (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d)
POOLING = (nir.SumPool2d, nir.AvgPool2d)
CONNECTIONS = (*WEIGHTED, *POOLING, nir.Flatten, nir.Scale)
SPIKING = (nir.LIF, nir.IF, nir.CubaLIF)
POTENTIALS = (nir.LI, nir.CubaLI, nir.I)
NEURONS = (*SPIKING, *POTENTIALS)
PORTS = (nir.Input, nir.Output)

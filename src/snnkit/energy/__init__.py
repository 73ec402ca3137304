"""Operation counts and energy estimates.

- ``snnkit.energy.counting``: exact synaptic ops, MACs and neuron updates from a NIR graph and the activity a
  target recorded (shared by every target).
- ``snnkit.energy.models``: energy per run from published per-operation figures (``figures.json``, each with
  its source), or from a user file with the same schema.

Importing this package imports neither torch nor nir (the Lava worker imports ``counting`` through it).
"""
from snnkit.energy.models import (
    SCHEMA,
    TERMS,
    WORKLOADS,
    EnergyEstimate,
    EnergyModel,
    EnergyModelError,
    Figure,
    builtin_figures,
    builtin_models,
    energy_of,
    load_models,
    resolve_models,
)

__all__ = [
    "SCHEMA", "TERMS", "WORKLOADS", "EnergyEstimate", "EnergyModel", "EnergyModelError", "Figure", "builtin_figures",
    "builtin_models", "energy_of", "load_models", "resolve_models",
]

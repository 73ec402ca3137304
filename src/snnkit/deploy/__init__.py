"""Running NIR graphs on targets: ``get_target(name).run(graph, x [B, T, ...]) -> TargetResult``.

Targets: ``torch`` (snnkit's executor, the reference), ``norse`` and ``snntorch`` (through their own NIR
importers, with the work-arounds listed in their modules), plus the Lava/Loihi targets. Inputs for a data set or
an ``.npy`` file come from :mod:`snnkit.deploy.inputs`. Importing this package does not import torch.
"""
from snnkit.deploy.base import (TARGETS, DeployError, Differentiable, Exported, LayerStats, Target, TargetResult,
                                get_target, make_target, register_target, target_names)

__all__ = ["TARGETS", "DeployError", "Differentiable", "Exported", "LayerStats", "Target", "TargetResult",
           "get_target", "make_target", "register_target", "target_names"]

"""Training: the loop (``train``), its config, and the objective registry (methods and regularisers)."""
from snnkit.train.objectives import METHODS, REGULARIZERS, build_objective, parse_spec
from snnkit.train.trainer import TrainConfig, evaluate, train

__all__ = ["METHODS", "REGULARIZERS", "TrainConfig", "build_objective", "evaluate", "parse_spec", "train"]

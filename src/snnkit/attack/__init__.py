"""Adversarial attacks and robustness evaluation for snnkit models and deployed targets.

Calling convention (torchattacks-style): ``x_adv = Attack(model, eps=...)(x, y)`` with ``x [B, ...]`` in
[0, 1], ``y [B]`` class indices and ``model(x) -> [B, C]`` scores. Black-box attacks (Square), transfer
targets and :func:`evaluate` need only a score function, so non-differentiable targets plug in as callables.
Deployed targets: :class:`TargetScores` (any target, no gradients), :class:`TargetModule` (the differentiable
view a target offers: itself for torch, norse and snntorch, the emulator's differentiable mode for the Loihi
targets); :data:`ATTACKS` is the table of named attacks; :func:`reattack` attacks a target beside the reference
(``snn-attack``).
"""
from snnkit.attack.apgd import APGD
from snnkit.attack.base import Attack, WorstCase, eval_mode, margin
from snnkit.attack.ensemble import DEFAULT_SURROGATES, SurrogateEnsemble
from snnkit.attack.gradients import input_gradient, input_gradient_sparsity, loss_and_grad
from snnkit.attack.masking import masking_warnings
from snnkit.attack.noise import GaussianNoise
from snnkit.attack.pgd import BIM, FGSM, PGD
from snnkit.attack.results import AttackResult, EvaluationReport
from snnkit.attack.runner import evaluate
from snnkit.attack.square import Square
from snnkit.attack.suite import standard_attacks
from snnkit.attack.reattack import ReattackResult, reattack
from snnkit.attack.registry import ATTACKS, AttackSpec, Settings, build_attacks, parse_attacks
from snnkit.attack.target import TargetModule, TargetScores
from snnkit.attack.transfer import Transfer, transfer_success_rate

__all__ = [
    "APGD", "ATTACKS", "Attack", "AttackResult", "AttackSpec", "BIM", "DEFAULT_SURROGATES", "EvaluationReport",
    "FGSM", "GaussianNoise", "PGD", "ReattackResult", "Settings", "Square", "SurrogateEnsemble", "TargetModule",
    "TargetScores", "Transfer", "WorstCase", "build_attacks", "eval_mode", "evaluate", "input_gradient",
    "input_gradient_sparsity", "loss_and_grad", "margin", "masking_warnings", "parse_attacks", "reattack",
    "standard_attacks", "transfer_success_rate",
]

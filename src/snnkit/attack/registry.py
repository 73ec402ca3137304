"""The attacks snnkit knows by name: one table shared by ``snn-attack``, the standard suite and the re-attack.

Each :class:`AttackSpec` says what the attack needs of the attacked side and builds it against a
:class:`Context` (the side's score function, its differentiable model if any, the transfer sources and the
settings). The result is keyed by a name that is the same on every side (``PGD-20``, ``Square-1000``,
``Transfer[PGD-20]``, ``Ensemble[PGD-20]``, ``Adaptive[PGD-50]``), so reference and target line up.

| needs | meaning |
|---|---|
| ``gradients`` | white-box: the side's own scores must be differentiable |
| ``queries`` | only the side's scores |
| ``sources`` | models other than the side (transfer), plus the side's scores for the verdict |
| ``model`` | a differentiable model of the side (adaptive attacks) |
| ``any`` | a suite that adapts to what the side offers (``standard``) |

Adding an attack: write its class (``snnkit.attack.base.Attack``), then one entry in :data:`ATTACKS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from snnkit.attack.apgd import APGD
from snnkit.attack.base import Attack, ScoreFn
from snnkit.attack.ensemble import DEFAULT_SURROGATES, SurrogateEnsemble
from snnkit.attack.noise import GaussianNoise
from snnkit.attack.pgd import BIM, FGSM, PGD
from snnkit.attack.square import Square
from snnkit.attack.suite import standard_attacks
from snnkit.attack.transfer import Transfer

DEFAULT_STEPS = {"pgd": 20, "apgd": 100, "adaptive": 50, "transfer": 20}
"""Iterations per attack family when ``Settings.steps`` is None (BIM: Kurakin et al.'s rule from eps)."""


@dataclass
class Settings:
    """How to attack.

    eps: radius in input units ([0, 1] scale); norm: ``"Linf"`` or ``"L2"`` (``pgd-l2`` is always L2);
    steps: iterations of the gradient attacks (None: ``DEFAULT_STEPS``); queries: Square's budget per sample
    (the clean query included); seed: every attack's seed; batch_size: samples per attack batch; eot: gradient
    draws averaged per step (stochastic encoders); surrogates: the ensemble's surrogate specs; device: where
    the reference, the torch target and the emulator run; progress: progress bars on stderr.
    """

    eps: float
    norm: str = "Linf"
    steps: int | None = None
    queries: int = 1000
    seed: int = 0
    batch_size: int = 128
    eot: int = 1
    surrogates: tuple[str, ...] = DEFAULT_SURROGATES
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, not {self.eps}")
        if self.norm not in ("Linf", "L2"):
            raise ValueError(f"norm must be Linf or L2, not {self.norm!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, not {self.steps}")
        if self.queries < 2:
            raise ValueError(f"the Square query budget must be >= 2 (clean query and start), not {self.queries}")
        if self.batch_size < 1 or self.eot < 1:
            raise ValueError(f"batch size and EOT draws must be >= 1 (got {self.batch_size}, {self.eot})")

    def steps_for(self, family: str) -> int:
        return self.steps if self.steps is not None else DEFAULT_STEPS[family]


@dataclass
class Context:
    """What an attack is built against.

    label: the side's name; scores: its judge ``x [B, ...] -> [B, C]``; differentiable: whether ``scores`` may
    be differentiated (white-box); adaptive: a differentiable model of the side (None: none); sources: transfer
    source models by name; members: the surrogate ensemble's models by name; num_classes: of the task.
    """

    label: str
    scores: ScoreFn
    differentiable: bool
    adaptive: ScoreFn | None
    sources: dict[str, ScoreFn]
    members: dict[str, ScoreFn]
    settings: Settings
    num_classes: int

    def pgd(self, model: ScoreFn, steps: int, norm: str | None = None) -> PGD:
        s = self.settings
        return PGD(model, s.eps, steps=steps, norm=norm or s.norm, eot_samples=s.eot, seed=s.seed)

    def apgd(self, model: ScoreFn, loss: str) -> APGD:
        s = self.settings
        return APGD(model, s.eps, norm=s.norm, loss=loss, steps=s.steps_for("apgd"), eot_samples=s.eot, seed=s.seed)

    @property
    def crafter_name(self) -> str:
        return f"PGD-{self.settings.steps_for('transfer')}"

    def crafter(self, model: ScoreFn) -> PGD:
        return self.pgd(model, self.settings.steps_for("transfer"))


def _one(a: Attack) -> dict[str, Attack]:
    return {a.name: a}


def _square(c: Context) -> dict[str, Attack]:
    if c.settings.norm != "Linf":
        raise ValueError("square is an Linf attack; use --norm Linf")
    return _one(Square(c.scores, c.settings.eps, n_queries=c.settings.queries, seed=c.settings.seed))


def _noise(c: Context) -> dict[str, Attack]:
    s = c.settings
    return _one(GaussianNoise(c.scores, std=s.eps, eps=s.eps, norm=s.norm, seed=s.seed))


def _transfer(c: Context) -> dict[str, Attack]:
    return {f"Transfer[{c.crafter_name}]": Transfer(c.scores, c.sources, c.crafter, seed=c.settings.seed)}


def _ensemble(c: Context) -> dict[str, Attack]:
    extra = {k: m for k, m in c.members.items() if not (c.label == "reference" and k == "reference")}
    a = SurrogateEnsemble(c.scores, c.crafter, surrogates=(), extra_models=extra, include_model=c.differentiable,
                          seed=c.settings.seed)
    if not c.differentiable:
        a.kind = "transfer"  # every member is another model: on this side it is a transfer attack
    return {f"Ensemble[{c.crafter_name}]": a}


def _adaptive(c: Context, with_apgd: bool = False) -> dict[str, Attack]:
    if c.adaptive is None:
        raise ValueError(f"{c.label}: no differentiable model for an adaptive attack")
    steps = c.settings.steps_for("adaptive")
    out: dict[str, Attack] = {f"Adaptive[PGD-{steps}]": c.pgd(c.adaptive, steps)}
    if with_apgd:
        out["Adaptive[APGD-CE]"] = c.apgd(c.adaptive, "ce")
    return out


def _standard(c: Context) -> dict[str, Attack]:
    """The honest suite (docs/reference/robustness.md): on a side with gradients the white-box suite of
    :func:`~snnkit.attack.suite.standard_attacks` plus the ensemble; on a side without, noise, Square, the ensemble
    as a transfer attack and adaptive PGD and APGD-CE through its differentiable model."""
    s, linf = c.settings, c.settings.norm == "Linf"
    if not c.differentiable:
        return {**_noise(c), **(_square(c) if linf else {}), **_ensemble(c),
                **(_adaptive(c, with_apgd=True) if c.adaptive is not None else {})}
    suite = standard_attacks(c.scores, s.eps, norm=s.norm, pgd_steps=s.steps_for("pgd"),
                             apgd_steps=s.steps_for("apgd"), square_queries=s.queries if linf else 0,
                             dlr=c.num_classes >= 3, eot_samples=s.eot, seed=s.seed)
    return {**suite, **_ensemble(c)}


@dataclass(frozen=True)
class AttackSpec:
    """A named attack: what it needs of the side (module docstring), how to build it, one line of help, and
    which :class:`Settings` it reads besides eps, norm and seed (``steps``, ``queries``, ``eot``, ``surrogates``)."""

    name: str
    needs: str
    build: Callable[[Context], dict[str, Attack]]
    help: str
    reads: tuple[str, ...] = ()


def _fgsm(c: Context) -> dict[str, Attack]:
    s = c.settings
    return _one(FGSM(c.scores, s.eps, norm=s.norm, eot_samples=s.eot, seed=s.seed))


def _pgd(c: Context, norm: str | None = None) -> dict[str, Attack]:
    steps = c.settings.steps_for("pgd")
    return {f"PGD-L2-{steps}" if norm == "L2" else f"PGD-{steps}": c.pgd(c.scores, steps, norm)}


def _bim(c: Context) -> dict[str, Attack]:
    s = c.settings
    return _one(BIM(c.scores, s.eps, steps=s.steps, norm=s.norm, eot_samples=s.eot, seed=s.seed))


GRADIENT_READS = ("steps", "eot")

ATTACKS: dict[str, AttackSpec] = {a.name: a for a in [
    AttackSpec("fgsm", "gradients", _fgsm, "one signed-gradient step", ("eot",)),
    AttackSpec("pgd", "gradients", _pgd, "projected gradient descent, random start (default 20 steps)",
               GRADIENT_READS),
    AttackSpec("pgd-l2", "gradients", lambda c: _pgd(c, "L2"), "PGD in the L2 ball", GRADIENT_READS),
    AttackSpec("bim", "gradients", _bim, "basic iterative method (Kurakin et al.'s step rule)", GRADIENT_READS),
    AttackSpec("apgd-ce", "gradients", lambda c: _one(c.apgd(c.scores, "ce")), "auto-PGD, cross-entropy (100)",
               GRADIENT_READS),
    AttackSpec("apgd-dlr", "gradients", lambda c: _one(c.apgd(c.scores, "dlr")),
               "auto-PGD, difference of logits ratio (needs >= 3 classes)", GRADIENT_READS),
    AttackSpec("square", "queries", _square, "Square: score-based, --queries per sample", ("queries",)),
    AttackSpec("noise", "queries", _noise, "Gaussian noise, std = eps, projected"),
    AttackSpec("transfer", "sources", _transfer,
               "PGD crafted on the reference, its non-spiking twin and its rate-backprop view", GRADIENT_READS),
    AttackSpec("ensemble", "sources", _ensemble, "transfer plus the reference under every ensemble surrogate",
               (*GRADIENT_READS, "surrogates")),
    AttackSpec("adaptive", "model", _adaptive, "PGD through the side's differentiable model (default 50)",
               GRADIENT_READS),
    AttackSpec("standard", "any", _standard, "the honest suite, worst case over all",
               (*GRADIENT_READS, "queries", "surrogates")),
]}
"""Every named attack, in the order ``--help`` lists them."""


def parse_attacks(spec: str) -> list[str]:
    """``"transfer,square"`` -> ``["transfer", "square"]`` (ValueError naming an unknown one)."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError("no attack given; available: " + ", ".join(ATTACKS))
    for n in names:
        if n not in ATTACKS:
            raise ValueError(f"unknown attack {n!r}; available: {', '.join(ATTACKS)}")
    return list(dict.fromkeys(names))


def readers(setting: str) -> list[str]:
    """The named attacks that read ``setting`` (a :class:`Settings` field)."""
    return [n for n, spec in ATTACKS.items() if setting in spec.reads]


def fit_attacks(names: list[str], context: Context) -> tuple[list[str], dict[str, str]]:
    """``names`` with every attack the side of ``context`` cannot take replaced by the nearest one it can: a
    gradient attack on a side without gradients becomes ``adaptive`` (the same PGD through the side's
    differentiable model) where it has one, else ``transfer`` (PGD crafted on the reference and its views).
    Returns the names (duplicates dropped, order kept) and ``{replaced: replacement}``."""
    out: list[str] = []
    replaced: dict[str, str] = {}
    for name in names:
        if ATTACKS[name].needs == "gradients" and not context.differentiable:
            replaced[name] = "adaptive" if context.adaptive is not None else "transfer"
            name = replaced[name]
        if name not in out:
            out.append(name)
    return out, replaced


def build_attacks(names: list[str], context: Context) -> dict[str, Attack]:
    """The attacks ``names`` against the side of ``context`` (ValueError when one does not fit the side)."""
    without = [n for n in ATTACKS if ATTACKS[n].needs != "gradients"]
    out: dict[str, Attack] = {}
    for name in names:
        spec = ATTACKS[name]
        if spec.needs == "gradients" and not context.differentiable:
            raise ValueError(f"--attack {name} needs gradients of the target; {context.label} has none: use "
                             f"{', '.join(without)}")
        if name == "apgd-dlr" and context.num_classes < 3:
            raise ValueError(f"apgd-dlr needs at least 3 classes, the model has {context.num_classes}")
        out.update(spec.build(context))
    return out

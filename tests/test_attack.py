"""snnkit.attack: the calling contract of every attack, independent cross-checks against torchattacks
(PGD Linf/L2 with random start off, APGD-CE/DLR), APGD's schedule, Square's query budget, EOT."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from snnkit.attack import (APGD, BIM, FGSM, PGD, GaussianNoise, Square, SurrogateEnsemble, Transfer, input_gradient)
from snnkit.attack.apgd import checkpoints
from snnkit.attack.norms import distance
from snnkit.attack.square import square_fraction, window_size
from test_attack_models import RateTwin, accuracy, cnn, dataset, mlp, snn, stochastic, swap  # noqa: F401

EPS = 0.065  # on these models: clean ~0.93, PGD ~0.35, noise ~0.9


def n_robust(model, x_adv, y) -> int:
    return round(accuracy(model, x_adv, y) * len(y))


def _data():
    return dataset()[2], dataset()[3]


# ---------------------------------------------------------------- the contract


ATTACKS = {
    "fgsm": lambda m: FGSM(m, EPS),
    "fgm-l2": lambda m: FGSM(m, 0.5, norm="L2"),
    "bim": lambda m: BIM(m, EPS),
    "pgd": lambda m: PGD(m, EPS, steps=10, n_restarts=2),
    "pgd-l2": lambda m: PGD(m, 0.5, steps=10, norm="L2"),
    "apgd-ce": lambda m: APGD(m, EPS, steps=20),
    "apgd-dlr-l2": lambda m: APGD(m, 0.5, norm="L2", loss="dlr", steps=20),
    "square": lambda m: Square(m, EPS, n_queries=50),
    "noise": lambda m: GaussianNoise(m, 0.2, eps=EPS, draws=3),
    "transfer": lambda m: Transfer(m, [mlp(1)], lambda s: PGD(s, EPS, steps=5)),
    "ensemble": lambda m: SurrogateEnsemble(m, lambda s: PGD(s, EPS, steps=5), ["atan:alpha=2"], [RateTwin(m)],
                                            swap=swap),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_contract(name):
    """Output in [0, 1], inside the eps ball, same shape, detached; the model's train/eval flags restored."""
    model = snn()
    x, y = _data()
    x, y = x[:40], y[:40]
    model.train()
    model.fc1.eval()  # a mixed state must come back exactly
    try:
        attack = ATTACKS[name](model)
        x_adv = attack(x, y)
        assert model.training and not model.fc1.training and model.fc2.training
    finally:
        model.eval()
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(distance(x_adv, x, attack.norm).max()) <= attack.eps + 1e-6
    if attack.kind == "white-box":
        assert n_robust(model, x_adv, y) < n_robust(model, x, y), "a white-box attack must fool some samples"


def test_inputs_are_checked():
    model = mlp()
    x, y = _data()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PGD(model, EPS)(x * 2, y[:200])
    with pytest.raises(ValueError, match="labels"):
        PGD(model, EPS)(x, y[:10])
    with pytest.raises(ValueError, match="labels"):
        PGD(model, EPS)(x, y.float())
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        PGD(lambda z: model(z).unsqueeze(1), EPS)(x[:4], y[:4])
    with pytest.raises(ValueError, match="norm"):
        PGD(model, EPS, norm="L1")
    with pytest.raises(ValueError, match="n_queries"):
        Square(model, EPS, n_queries=1)
    with pytest.raises(ValueError, match="differentiabl"):
        PGD(lambda z: model(z).detach(), EPS)(x[:4], y[:4])
    assert PGD(model, EPS)(x[:0], y[:0]).shape == (0, *x.shape[1:])


def test_seeding_is_reproducible():
    model = mlp()
    x, y = _data()
    x, y = x[:30], y[:30]
    a = PGD(model, EPS, steps=3, seed=5)(x, y)
    assert torch.equal(a, PGD(model, EPS, steps=3, seed=5)(x, y))
    assert not torch.equal(a, PGD(model, EPS, steps=3, seed=6)(x, y))
    g = torch.Generator().manual_seed(5)
    attack = PGD(model, EPS, steps=3, seed=g)
    first = attack(x, y)
    assert torch.equal(first, a)  # same stream as seed=5 on the first call
    assert not torch.equal(attack(x, y), first)  # the generator advanced


def test_already_misclassified_samples_are_left_alone():
    model = mlp()
    x, y = _data()
    wrong = model(x).argmax(1) != y
    assert wrong.any()
    for attack in (PGD(model, EPS, steps=5), APGD(model, EPS, steps=5), Square(model, EPS, n_queries=20)):
        assert torch.equal(attack(x, y)[wrong], x[wrong]), attack.name


# ---------------------------------------------------------------- cross-checks against torchattacks


@pytest.mark.parametrize("model_fn", [mlp, cnn, snn], ids=["mlp", "cnn", "snn"])
@pytest.mark.parametrize("norm,eps", [("Linf", EPS), ("L2", 0.6)])
def test_pgd_matches_torchattacks(model_fn, norm, eps):
    """Same model, inputs and settings, random start off: the same robust accuracy within one sample."""
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is the independent cross-check")
    model = model_fn()
    x, y = _data()
    steps, alpha = 10, eps / 4
    ours = PGD(model, eps, alpha, steps, norm=norm, random_start=False, return_best=False)(x, y)
    cls = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
    theirs = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    r_ours, r_theirs, clean = n_robust(model, ours, y), n_robust(model, theirs, y), n_robust(model, x, y)
    right = model(x).argmax(1) == y  # we leave misclassified samples unchanged, torchattacks attacks them too
    gap = float((ours - theirs)[right].abs().max())
    print(f"PGD-{steps} {norm} eps={eps}: clean {clean}, ours {r_ours}, torchattacks {r_theirs} / {len(y)}; "
          f"max |x_ours - x_theirs| on correctly classified samples = {gap:.1e}")
    assert r_theirs < clean - 20, "the setting must be one where PGD matters"
    assert abs(r_ours - r_theirs) <= 1
    # keeping the best iterate can only help
    best = PGD(model, eps, alpha, steps, norm=norm, random_start=False)(x, y)
    assert n_robust(model, best, y) <= r_ours


SEEDS = (0, 1, 2)


def weaker_beyond_noise(ours: list[int], theirs: list[int]) -> bool:
    """Whether an attack leaving ``ours`` samples robust (one count per seed) is weaker than one leaving ``theirs``
    by more than seed-to-seed noise: on average over the seeds, by more than the larger spread (max - min) either
    attack shows between its own seeds, and by more than one sample (one borderline sample may flip with the CPU's
    floating-point path). Stochastic attacks are compared by their spread, never by one run's exact count."""
    noise = max(1, max(ours) - min(ours), max(theirs) - min(theirs))
    return float(np.mean(ours)) - float(np.mean(theirs)) > noise


def test_the_comparison_catches_a_weaker_attack():
    """The rule below can fail: single-step FGSM against torchattacks' APGD on the SNN is weaker beyond noise."""
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is the independent cross-check")
    model = snn()
    x, y = _data()
    fgsm = [n_robust(model, FGSM(model, 0.08)(x, y), y)] * len(SEEDS)
    theirs = [n_robust(model, torchattacks.APGD(model, eps=0.08, steps=100, seed=s)(x, y), y) for s in SEEDS]
    print(f"FGSM {fgsm[0]}, torchattacks APGD-100 {theirs} / {len(y)}")
    assert weaker_beyond_noise(fgsm, theirs)
    assert not weaker_beyond_noise(theirs, fgsm)


@pytest.mark.parametrize("model_fn", [mlp, cnn, snn], ids=["mlp", "cnn", "snn"])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_at_least_as_strong_as_torchattacks(model_fn, loss):
    """Our APGD (100 iterations, the paper's schedule) is not weaker beyond seed noise than torchattacks' APGD,
    with its default 10 steps and with 100 steps, over three seeds each."""
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is the independent cross-check")
    model = model_fn()
    x, y = _data()
    for eps in (0.05, 0.08):
        ours = [n_robust(model, APGD(model, eps, loss=loss, steps=100, seed=s)(x, y), y) for s in SEEDS]
        for steps in (10, 100):
            theirs = [n_robust(model, torchattacks.APGD(model, eps=eps, steps=steps, loss=loss, seed=s)(x, y), y)
                      for s in SEEDS]
            print(f"APGD-{loss.upper()} eps={eps}: ours(100) {ours}, torchattacks({steps}) {theirs} / {len(y)}")
            assert not weaker_beyond_noise(ours, theirs)


def test_apgd_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (next 1.05 > 1): w_j = ceil(p_j * 100)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]


def test_apgd_dlr_needs_three_classes():
    two = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x, y = _data()
    with pytest.raises(ValueError, match="3 classes"):
        APGD(two, EPS, loss="dlr", steps=2)(x[:4], (y[:4] % 2))


def test_apgd_beats_fgsm_and_noise():
    model = snn()
    x, y = _data()
    apgd = n_robust(model, APGD(model, EPS)(x, y), y)
    assert apgd < n_robust(model, FGSM(model, EPS)(x, y), y) < n_robust(model, GaussianNoise(model, EPS, eps=EPS)(x, y), y)


def test_bim_defaults_follow_kurakin():
    assert BIM(mlp(), 8 / 255).steps == 10  # min(8 + 4, 1.25 * 8)
    assert BIM(mlp(), 2 / 255).steps == 3  # ceil(min(6, 2.5))
    assert BIM(mlp(), 8 / 255).alpha == pytest.approx(1 / 255)


# ---------------------------------------------------------------- Square


def test_square_schedule():
    assert square_fraction(0.05, 0, 10000) == 0.05
    assert square_fraction(0.05, 11, 10000) == 0.025
    assert square_fraction(0.05, 9000, 10000) == pytest.approx(0.05 / 512)
    assert square_fraction(0.05, 3, 1000) == 0.025  # rescaled: iteration 3 of 1000 is 30 of 10000
    assert square_fraction(0.05, 6, 1000) == 0.0125  # 60 of 10000
    assert window_size(0.05, 8, 8) == (2, 2)
    assert window_size(0.5, 8, 8) == (6, 6)
    assert window_size(1.0, 8, 8) == (7, 7)
    assert window_size(0.1, 1, 40) == (1, 4)


def test_square_respects_budget_and_fools_an_undefended_model():
    model = mlp()
    x, y = _data()
    budget = 300
    attack = Square(model, EPS, n_queries=budget)
    x_adv = attack(x, y)
    q = attack.queries
    wrong = model(x).argmax(1) != y
    assert q.shape == (len(y),) and int(q.max()) <= budget and int(q.min()) >= 1
    assert torch.all(q[wrong] == 1)  # only the clean query
    fooled = (model(x_adv).argmax(1) != y) & ~wrong
    assert float(q[fooled].float().mean()) < budget / 2  # a fooled sample stops querying
    clean, robust = n_robust(model, x, y), n_robust(model, x_adv, y)
    pgd = n_robust(model, PGD(model, EPS)(x, y), y)
    print(f"Square-{budget}: clean {clean}, Square {robust}, PGD-20 {pgd}; mean queries {float(q.float().mean()):.0f}")
    assert robust < clean - 60
    assert robust <= pgd + 15


def test_square_needs_only_scores():
    """Any callable returning [B, C] scores (numpy here) gives the same result as the module itself."""
    model = mlp()
    x, y = _data()
    x, y = x[:50], y[:50]
    calls = []

    def scores(z: torch.Tensor) -> np.ndarray:
        calls.append(z.shape[0])
        with torch.no_grad():
            return model(z).numpy()

    a = Square(scores, EPS, n_queries=100, seed=3)
    b = Square(model, EPS, n_queries=100, seed=3)
    assert torch.equal(a(x, y), b(x, y))
    assert sum(calls) == int(a.queries.sum())  # every evaluated sample is a counted query


def test_square_on_1d_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 3))
    x = torch.rand(20, 40)
    y = net(x).argmax(1)
    x_adv = Square(net, 0.3, n_queries=200)(x, y)
    assert float((x_adv - x).abs().max()) <= 0.3 + 1e-6
    assert (net(x_adv).argmax(1) != y).any()


# ---------------------------------------------------------------- EOT


def test_eot_reduces_gradient_variance():
    model = stochastic()
    x, y = _data()
    x, y = x[:20], y[:20]
    torch.manual_seed(0)
    single = torch.stack([input_gradient(model, x, y) for _ in range(12)])
    eot = torch.stack([input_gradient(model, x, y, eot_samples=16) for _ in range(12)])
    v1, v16 = float(single.var(0).mean()), float(eot.var(0).mean())
    print(f"gradient variance over draws: 1 draw {v1:.3e}, EOT-16 {v16:.3e} (ratio {v16 / v1:.3f})")
    assert v16 < 0.2 * v1  # ~1/16 expected

"""snnkit.attack evaluation: transfer, the surrogate ensemble, gradient-masking checks, the evaluate runner."""
from __future__ import annotations

import json

import pytest
import torch

from snnkit.attack import (APGD, FGSM, PGD, AttackResult, EvaluationReport, GaussianNoise, Square,
                           SurrogateEnsemble, Transfer, evaluate, input_gradient_sparsity, masking_warnings,
                           standard_attacks, transfer_success_rate)
from test_attack_models import (RateTwin, accuracy, dataset, masked, mlp, snn,  # noqa: F401
                                swap)

EPS = 0.065


def _data(n: int = 200):
    return dataset()[2][:n], dataset()[3][:n]


def n_robust(model, x_adv, y) -> int:
    return round(accuracy(model, x_adv, y) * len(y))


# ---------------------------------------------------------------- transfer


def test_transfer_to_a_score_only_target():
    """Craft on two ANNs, evaluate on the SNN seen only through numpy scores; worst case over sources."""
    target_model = snn()
    x, y = _data()

    def target(z):
        with torch.no_grad():
            return target_model(z).numpy()

    sources = {"ann0": mlp(0), "ann1": mlp(1)}
    attack = Transfer(target, sources, lambda s: PGD(s, EPS, steps=10))
    x_adv = attack(x, y)
    assert set(attack.source_fooled) == {"ann0", "ann1"}
    both = n_robust(target_model, x_adv, y)
    for name, src in sources.items():
        alone = n_robust(target_model, PGD(src, EPS, steps=10)(x, y), y)
        assert both <= alone, name
        assert int(attack.source_fooled[name].sum()) == len(y) - alone
    rate = transfer_success_rate(target, x, x_adv, y)
    clean_ok = target_model(x).argmax(1) == y
    fooled = (target_model(x_adv).argmax(1) != y) & clean_ok
    assert rate == pytest.approx(float(fooled.sum()) / float(clean_ok.sum()))
    print(f"transfer ANN x2 -> SNN at eps {EPS}: success rate {rate:.1%}, robust {both}/{len(y)}")
    assert 0.2 < rate < 1.0


def test_transfer_rejects_mixed_threat_models():
    with pytest.raises(ValueError, match="share norm and eps"):
        Transfer(snn(), [mlp(0), mlp(1)], lambda s: PGD(s, EPS if s is mlp(0) else 2 * EPS))


# ---------------------------------------------------------------- surrogate ensemble


def test_surrogate_ensemble_is_the_per_sample_worst_case():
    model = snn()
    x, y = _data()
    specs = ["triangle:gamma=0.5", "rectangular:width=1", "atan:alpha=2", "straight_through"]
    factory = lambda m: PGD(m, EPS, steps=10)  # noqa: E731
    ens = SurrogateEnsemble(model, factory, specs, {"twin": RateTwin(model)}, swap=swap)
    worst = n_robust(model, ens(x, y), y)
    assert model.surrogate == ("triangle", 1.0)  # restored
    assert list(ens.member_fooled) == ["model"] + [f"surrogate:{s}" for s in specs] + ["twin"]
    members = {"model": n_robust(model, factory(model)(x, y), y),
               "twin": n_robust(model, factory(RateTwin(model))(x, y), y)}
    for spec in specs:
        with swap(model, spec):
            x_s = factory(model)(x, y)
        members[spec] = n_robust(model, x_s, y)  # judged on the unchanged model
    print(f"surrogate ensemble: worst case {worst}; members {members}")
    assert all(worst <= r for r in members.values())
    assert worst < min(members.values())  # the members disagree on some samples
    fooled_any = torch.stack(list(ens.member_fooled.values())).any(0)
    assert worst == len(y) - int(fooled_any.sum())


def test_surrogate_ensemble_sees_through_a_vanishing_surrogate():
    """An SNN whose own surrogate has zero gradient looks robust to PGD; the ensemble is not fooled."""
    model = snn()
    x, y = _data()
    with swap(model, "zero"):
        pgd = n_robust(model, PGD(model, EPS, steps=10)(x, y), y)
        ens = n_robust(model, SurrogateEnsemble(model, lambda m: PGD(m, EPS, steps=10), ["triangle:gamma=1"],
                                                swap=swap)(x, y), y)
    clean = n_robust(model, x, y)
    print(f"zero-gradient surrogate: clean {clean}, PGD {pgd}, ensemble {ens}")
    assert pgd > clean - 15 and ens < clean - 60


def test_default_swap_is_snnkits_use_surrogate():
    surrogate = pytest.importorskip("snnkit.nn.surrogate", reason="snnkit.nn provides the default surrogate swap")

    class Neuron(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.surrogate = surrogate.parse("triangle:gamma=1")
            self.fc = torch.nn.Linear(64, 5)

        def forward(self, x):
            return self.surrogate.spike(self.fc(x.flatten(1)) - 0.5) + 0.1 * self.fc(x.flatten(1))

    model = Neuron()
    seen = []
    original = model.surrogate

    def factory(m):
        seen.append(m.surrogate.spec)
        return FGSM(m, EPS)

    x, y = _data(20)
    SurrogateEnsemble(model, factory, ["atan:alpha=2", "straight_through"], include_model=False)(x, y)
    assert seen[-2:] == ["atan:alpha=2", "straight_through"]
    assert model.surrogate is original


# ---------------------------------------------------------------- masking checks and the runner


def _suite(model):
    return standard_attacks(model, EPS, pgd_steps=10, apgd_steps=50, square_queries=500)


def test_masking_checks_fire_on_a_masked_model():
    model = masked()
    x, y = _data(100)
    assert input_gradient_sparsity(model, x, y) == 1.0
    report = evaluate(model, x, y, _suite(model), batch_size=50, progress=False)
    print(json.dumps(report.summary(), indent=1))
    text = "\n".join(report.warnings)
    assert "zero input gradients" in text
    assert "Square-500 beats white-box" in text


def test_masking_checks_stay_silent_on_a_smooth_model():
    for model in (mlp(), snn()):
        x, y = _data(100)
        report = evaluate(model, x, y, _suite(model), batch_size=50, progress=False)
        assert report.warnings == [], report.warnings
        assert report.gradient_sparsity is not None and report.gradient_sparsity < 0.1


def _result(name, kind, family, correct, eps=EPS, loss=None):
    return AttackResult(name=name, kind=kind, family=family, norm="Linf", eps=eps,
                        correct=torch.tensor(correct, dtype=torch.bool), seconds=0.0, loss=loss)


def test_masking_check_rules():
    pgd = _result("PGD-20", "white-box", "pgd", [0, 0, 1, 1, 1, 1], loss="ce")
    apgd_ok = _result("APGD-CE", "white-box", "apgd", [0, 0, 0, 1, 1, 1], loss="ce")
    apgd_weak = _result("APGD-CE", "white-box", "apgd", [0, 1, 1, 1, 1, 1], loss="ce")
    dlr_weak = _result("APGD-DLR", "white-box", "apgd", [1, 1, 1, 1, 1, 1], loss="dlr")
    square_weak = _result("Square", "black-box", "square", [0, 1, 1, 1, 1, 1])
    square_strong = _result("Square", "black-box", "square", [0, 0, 0, 0, 1, 1])
    noise_unbounded = _result("Noise", "noise", "noise", [0, 0, 0, 0, 0, 0], eps=float("inf"))
    # APGD-DLR is compared with DLR attacks only; unbounded noise with nothing
    assert masking_warnings({"p": pgd, "a": apgd_ok, "d": dlr_weak, "s": square_weak, "n": noise_unbounded}) == []
    w = masking_warnings({"p": pgd, "a": apgd_weak})
    assert len(w) == 1 and w[0].startswith("APGD-CE weaker than PGD-20") and "1 samples fooled only by PGD-20" in w[0]
    assert masking_warnings({"p": pgd, "a": apgd_weak}, tolerance=0.2) == []
    assert masking_warnings({"p": _result("PGD-20", "white-box", "pgd", pgd.correct.tolist(), eps=2 * EPS, loss="ce"),
                             "a": apgd_weak}) == []  # APGD's ball is smaller: not comparable
    w = masking_warnings({"p": pgd, "a": apgd_ok, "s": square_strong})
    assert len(w) == 1 and "Square beats white-box" in w[0] and "1 samples survive every white-box" in w[0]
    # a black-box attack with a larger ball than every white-box one is not compared
    assert masking_warnings({"p": pgd, "s": _result("Square", "black-box", "square", [0] * 6, eps=2 * EPS)}) == []
    assert masking_warnings({"p": pgd}, gradient_sparsity=0.4) == []
    assert "zero input gradients" in masking_warnings({"p": pgd}, gradient_sparsity=0.9)[0]
    with pytest.raises(ValueError, match="different numbers of samples"):
        masking_warnings({"p": pgd, "x": _result("X", "white-box", "pgd", [0, 1])})


def test_evaluate_report():
    model = snn()
    x, y = _data(120)
    attacks = [FGSM(model, EPS), PGD(model, EPS, steps=10, random_start=False), GaussianNoise(model, EPS, eps=EPS),
               Square(model, EPS, n_queries=100)]
    report = evaluate(model, x, y, attacks, batch_size=50, progress=False)
    assert isinstance(report, EvaluationReport) and list(report.results) == [a.name for a in attacks]
    assert report.clean_accuracy == pytest.approx(accuracy(model, x, y))
    for r in report.results.values():
        assert r.correct.shape == (120,) and not (r.correct & ~report.clean_correct).any()
        assert r.max_distance <= EPS + 1e-6
        assert r.robust_accuracy <= report.clean_accuracy
        assert report.worst_case_accuracy <= r.robust_accuracy
    sq = report.results["Square-100"]
    assert sq.queries is not None and int(sq.queries.max()) <= 100
    assert torch.all(sq.queries[~report.clean_correct] == 0)
    # a deterministic attack gives the same per-sample answer whatever the batching
    again = evaluate(model, x, y, {"pgd": PGD(model, EPS, steps=10, random_start=False)}, batch_size=7,
                     progress=False, check_gradients=False)
    assert torch.equal(again.results["pgd"].correct, report.results["PGD-10"].correct)
    assert again.gradient_sparsity is None
    summary = json.loads(json.dumps(report.summary()))
    assert summary["n_samples"] == 120 and len(summary["attacks"]) == 4
    assert summary["attacks"][3]["mean_queries"] > 1


def test_evaluate_accepts_a_score_only_model():
    model = mlp()
    x, y = _data(60)
    scores = lambda z: model(z).detach()  # noqa: E731
    report = evaluate(scores, x, y, [Square(scores, EPS, n_queries=200)], progress=False, check_gradients=False)
    assert report.results["Square-200"].robust_accuracy < report.clean_accuracy - 0.2
    with pytest.raises(ValueError, match="differentiabl"):
        evaluate(scores, x, y, [Square(scores, EPS, n_queries=20)], progress=False)


def test_standard_attacks():
    suite = standard_attacks(mlp(), EPS)
    assert list(suite) == ["Noise-0.065", "FGSM", "PGD-20", "APGD-CE", "APGD-DLR", "Square-5000"]
    assert suite["APGD-CE"].steps == 100 and suite["Square-5000"].n_queries == 5000
    assert "Square-5000" not in standard_attacks(mlp(), 0.5, norm="L2")
    assert all(isinstance(a, (APGD, PGD, Square, GaussianNoise)) for a in suite.values())

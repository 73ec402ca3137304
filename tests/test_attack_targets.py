"""Re-attacking a deployed target: ``TargetScores`` turns a target running the exported NIR graph into a score
function for Square, transfer and ``evaluate``. Checked on the torch target, whose scores must equal the
model's logits exactly."""
from __future__ import annotations

import functools

import torch

from snnkit.attack import PGD, Square, TargetScores, Transfer, evaluate, transfer_success_rate
from snnkit.deploy.base import get_target
from snnkit.export import to_nir
from snnkit.models.build import build
from test_attack_models import accuracy, dataset, train  # noqa: F401

EPS = 0.065


@functools.lru_cache(maxsize=None)
def model():
    torch.manual_seed(3)
    net = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 5, "hidden": [32], "timesteps": 6})
    return train(net, steps=80, seed=3)


def _data(n=60):
    return dataset()[2][:n], dataset()[3][:n]


def scores_on_torch_target() -> TargetScores:
    return TargetScores(get_target("torch", device="cpu"), to_nir(model()))


def test_torch_target_scores_are_the_model_logits():
    x, _ = _data()
    target = scores_on_torch_target()
    assert target.timesteps == 6 and target.name == "torch"
    with torch.no_grad():
        assert torch.equal(target(x), model()(x))
    assert target.queries == 60 and target.calls == 1 and target.queries_per_second > 0


def test_square_and_transfer_against_a_target():
    x, y = _data()
    target = scores_on_torch_target()
    assert accuracy(model(), x, y) > 0.8
    square = Square(target, EPS, n_queries=40)
    x_sq = square(x, y)
    assert target.queries == int(square.queries.sum())
    assert float((x_sq - x).abs().max()) <= EPS + 1e-6
    transfer = Transfer(target, {"reference": model()}, lambda s: PGD(s, EPS, steps=10))
    x_tr = transfer(x, y)
    # the torch target is the reference semantics: a white-box example on the model transfers exactly
    assert torch.equal(transfer.source_fooled["reference"], model()(x_tr).argmax(1) != y)
    assert transfer_success_rate(target, x, x_tr, y) > 0.5
    report = evaluate(target, x, y, {"square": Square(target, EPS, n_queries=40), "transfer": transfer},
                      progress=False, check_gradients=False)
    assert report.results["transfer"].robust_accuracy < report.clean_accuracy - 0.4
    assert report.results["square"].robust_accuracy <= report.clean_accuracy


def test_square_moves_along_spike_count_plateaus():
    """snnkit logits are spike counts: strict-improvement Square stalls on their plateaus, accepting ties does
    not (the default)."""
    x, y = _data()
    net = model()
    strict = round(accuracy(net, Square(net, EPS, n_queries=300, accept_ties=False)(x, y), y) * len(y))
    ties = round(accuracy(net, Square(net, EPS, n_queries=300)(x, y), y) * len(y))
    pgd = round(accuracy(net, PGD(net, EPS)(x, y), y) * len(y))
    print(f"Square-300 on spike-count logits: strict {strict}, ties accepted {ties}, PGD-20 {pgd} / {len(y)} robust")
    assert ties <= strict - 6

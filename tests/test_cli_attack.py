"""``snn-attack`` (issue 6): the acceptance run on Lava from the command line, JSON beside the reference, files
written, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from snnkit.cli import attack as attack_cli
from snnkit.cli import train as train_cli
from snnkit.report.attacks import read_attack_file

from conftest import NO_LAVA_REASON, lava_available

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A digits MLP trained by ``snn-train`` (a few epochs)."""
    out = tmp_path_factory.mktemp("mlp")
    rc = train_cli.main(["--dataset", "digits", "--model", "mlp", "--hidden", "64", "--timesteps", "6",
                         "--epochs", "6", "--seed", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    return out / "model.pt"


def _run(capsys, argv, rc_expected=0):
    rc = attack_cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == rc_expected, err
    return out, err


@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
def test_acceptance_lava_transfer_square_adaptive_from_the_cli(model_file, tmp_path):
    """The robust accuracy of the Lava-deployed model under transfer, Square and adaptive attacks, next to the
    reference's, from the command line alone; Square's queries answered by loihi-emu, re-checked on Lava."""
    out_file = tmp_path / "lava.json"
    proc = subprocess.run([str(BIN / "snn-attack"), str(model_file), "--target", "lava", "--attack",
                           "transfer,square,adaptive", "--eps", "0.1", "--limit", "20", "--queries", "300",
                           "--json", "--quiet", "-o", str(out_file)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert json.loads(out_file.read_text()) == res
    assert res["target"] == "lava" and res["attack"] == "transfer,square,adaptive" and res["eps"] == 0.1
    assert res["n_samples"] == 20 and res["dataset"] == "digits"
    ref = res["reference"]
    names = ["Transfer[PGD-20]", "Square-300", "Adaptive[PGD-50]"]
    assert [a["name"] for a in res["attacks"]] == [a["name"] for a in ref["attacks"]] == names
    for side in (res, ref):  # both sides: clean and robust accuracy, every attack
        assert side["clean_accuracy"] >= 0.8
        assert 0 <= side["robust_accuracy"] <= side["clean_accuracy"]
        assert all(0 <= a["robust_accuracy"] <= side["clean_accuracy"] for a in side["attacks"])
    assert res["robust_accuracy"] < res["clean_accuracy"]  # eps 0.1 breaks a plain digits MLP on Lava too
    assert 0 < res["transfer_success_rate"] <= 1
    # Lava's verdicts equal the emulator's: the queries were answered by a bit-exact model of it
    check = res["recheck"]
    assert check["on"] == "lava" and check["answered_by"] == "loihi-emu" and check["samples"] == 4 * 20
    assert check["outputs_bit_exact"] and check["verdicts_agree"] and check["differing_verdicts"] == 0
    assert [a["robust_accuracy"] for a in res["attacks"]] == [a["proxy_robust_accuracy"] for a in res["attacks"]]
    assert res["queries"]["answered"]["by"] == "loihi-emu"
    assert 1 <= res["queries"]["Square-300"]["mean_per_sample"] <= 300
    assert res["adaptive_via"] == "loihi-emu differentiable mode"
    # snn-report reads the file: the reference and the Lava evaluation side by side
    evaluations = read_attack_file(out_file)
    assert [e.target for e in evaluations] == ["reference", "lava"]
    assert [a.robust_accuracy for a in evaluations[1].attacks] == [a["robust_accuracy"] for a in res["attacks"]]


def test_json_on_the_torch_target_and_saved_files(model_file, tmp_path, capsys):
    adv = tmp_path / "adv.npz"
    out, _ = _run(capsys, [str(model_file), "--target", "torch", "--attack", "fgsm,pgd", "--eps", "0.1", "--steps",
                           "5", "--limit", "24", "--device", "cpu", "--json", "--quiet", "--save-adv", str(adv)])
    res = json.loads(out)
    for key in ("target", "attack", "eps", "n_samples", "clean_accuracy", "robust_accuracy", "reference",
                "warnings", "wall_s"):
        assert key in res
    assert res["target"] == "torch" and res["n_samples"] == 24 and res["limit"] == 24
    # the torch target is the reference semantics: the same numbers on both sides
    assert [a["robust_accuracy"] for a in res["attacks"]] == [a["robust_accuracy"] for a in res["reference"]["attacks"]]
    assert res["robust_accuracy"] < res["clean_accuracy"]
    with np.load(adv) as z:
        assert list(z["target_attacks"]) == ["FGSM", "PGD-5"]
        assert z["target_adversarial"].shape == (2, 24, 1, 8, 8) and z["target_correct"].shape == (2, 24)
        assert np.abs(z["target_adversarial"] - z["x"][None]).max() <= 0.1 + 1e-6
        assert z["target_correct"].mean(1).tolist() == pytest.approx([a["robust_accuracy"] for a in res["attacks"]])


def test_human_output_puts_the_reference_beside_the_target(model_file, capsys):
    out, err = _run(capsys, [str(model_file), "--target", "loihi-emu", "--attack", "square,noise", "--eps", "0.05",
                             "--queries", "20", "--limit", "12", "--device", "cpu"])
    lines = out.splitlines()
    assert "reference" in lines[1] and "loihi-emu" in lines[1]
    assert any(line.strip().startswith("Square-20") for line in lines)
    assert any("queries answered by loihi-emu" in line for line in lines)
    assert "snn-attack: reference: 12 samples" in err  # phase messages (and progress bars) go to stderr


@pytest.mark.parametrize("argv, message", [
    (["--target", "loihi-emu", "--attack", "pgd", "--eps", "0.1"], "needs gradients of the target; loihi-emu has none"),
    (["--attack", "cw", "--eps", "0.1"], "unknown attack 'cw'"),
    (["--target", "tpu", "--attack", "pgd", "--eps", "0.1"], "unknown target 'tpu'"),
    (["--attack", "pgd", "--eps", "0.1", "--dataset", "wine"], "data set wine has"),
    (["--attack", "pgd", "--eps", "0.1", "--limit", "0"], "--limit must be >= 1"),
    (["--attack", "square", "--eps", "0.1", "--norm", "L2"], "square is an Linf attack"),
    (["--attack", "pgd", "--eps", "-1"], "eps must be >= 0"),
    (["--attack", "ensemble", "--eps", "0.1", "--surrogate", "bogus"], "unknown surrogate 'bogus'"),
])
def test_bad_input_is_one_line_and_exit_code_2(model_file, capsys, argv, message):
    rc = attack_cli.main([str(model_file), "--device", "cpu", "--quiet", *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("snn-attack: error:") and message in err, err


def test_missing_or_foreign_model_file(tmp_path, capsys):
    rc = attack_cli.main([str(tmp_path / "nope.pt"), "--attack", "pgd", "--eps", "0.1"])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.pt: no such model file" in err
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    rc = attack_cli.main([str(foreign), "--attack", "pgd", "--eps", "0.1"])
    err = capsys.readouterr().err
    assert rc == 2 and "foreign.pt: not an snnkit model file" in err and len(err.strip().splitlines()) == 1

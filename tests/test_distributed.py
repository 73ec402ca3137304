"""More than one process (``--distributed`` under torchrun, 2 ranks on localhost with gloo): training equals the
single-process run with the same seed and global batch, resume works, snn-attack and snn-deploy give one result
equal to one process's; ``--distributed`` outside torchrun is refused in one line; ``--amp bf16`` on the CPU.

The 2-rank cases run in one ``python -m torch.distributed.run`` launch (what the ``torchrun`` script runs; one
thread per rank), each through its command's ``main`` as the console script calls it; the single-process runs go
through the same commands in this process (``run_cli``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import snnkit
from snnkit import distributed
from conftest import lava_available, NO_LAVA_REASON, run_cli

TINY_MLP = ["--hidden", "32", "--timesteps", "4", "--threads", "1", "--no-progress", "--json"]
TIMES = {"wall_s", "build_s", "seconds", "time_s", "train_time_s", "thread_cpu_s", "queries_per_s", "target_wall_s",
         "target_run_s", "worker_total_s", "saved_output", "saved_adversarial", "out"}
"""Keys whose values are times or paths: the only ones allowed to differ between 1 and 2 processes."""


def torchrun(script: Path, *argv: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node NPROC SCRIPT ARGV``, one thread per rank; fails the test with the
    ranks' output when it exits non-zero. A rank killed by a signal prints every thread's Python stack first
    (``PYTHONFAULTHANDLER``): one rank once aborted here ("terminate called without an active exception", not
    reproduced since), and the stacks say where the next one does."""
    env = {k: v for k, v in os.environ.items() if k not in distributed.TORCHRUN_VARIABLES}
    src = str(Path(snnkit.__file__).resolve().parents[1])
    env.update(OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1",
               PYTHONPATH=os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           str(script), *argv], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-12000:]
    return proc


DRIVER = """
import contextlib, io, json, os, sys
from importlib import import_module

from snnkit import distributed

rank = int(os.environ["RANK"])
jobs = json.loads(open(sys.argv[1]).read())
printed = {}
with distributed.session(True, "cpu"):  # one group for every job (each command then keeps it)
    for name, (module, argv) in jobs.items():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            if module == "resume":  # stop after epoch 1, then resume from rank 0's checkpoint
                from snnkit.cli import train as cli
                from snnkit.train import train

                args = cli.parser().parse_args(argv)
                assert train(cli.train_config(args), args.out, progress=False, stop_after=1)["stopped_after_epoch"] == 1
                assert os.path.exists(os.path.join(args.out, "checkpoint.pt"))
                train(cli.train_config(args), args.out, progress=False, resume=True)
                code = 0
            else:
                code = import_module("snnkit.cli." + module).main(argv)
        if code:
            sys.exit(f"rank {rank}: {name} exited {code}")
        printed[name] = out.getvalue()
with open(f"{sys.argv[2]}.{rank}.json", "w") as f:
    json.dump(printed, f)
"""
"""Run under torchrun: every job ``name: (command module, argv)`` in turn in one process group (what each rank
printed goes to ``PREFIX.RANK.json``); ``resume`` trains with ``stop_after=1`` and resumes."""


def without_times(value):
    """``value`` (JSON data) with the times and paths of :data:`TIMES` left out."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def assert_same_training(one: Path, two: Path, atol: float, flips: int = 0) -> None:
    """The metrics and weights of the runs in folders ``one`` (1 process) and ``two`` (2 ranks) agree; ``flips``:
    how many samples' predictions may differ (weights that differ by rounding can move a sample whose output
    neuron sits at its threshold)."""
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    assert len(m1["history"]) == len(m2["history"])
    for h1, h2 in zip(m1["history"], m2["history"]):
        assert h2["loss"] == pytest.approx(h1["loss"], rel=1e-5 if not flips else 1e-3)
        assert h2["train_accuracy"] == pytest.approx(h1["train_accuracy"], abs=1e-6 + flips / m1["n_train"])
        # a count of correct samples over the same samples
        assert h2["test_accuracy"] == pytest.approx(h1["test_accuracy"], abs=1e-9 + flips / m1["n_test"])
        assert h2.get("loss_parts", {}) == pytest.approx(h1.get("loss_parts", {}), rel=1e-5 if not flips else 1e-3)
    s1, s2 = (snnkit.load(d / "model.pt").state_dict() for d in (one, two))
    assert s1.keys() == s2.keys()
    for k in s1:
        torch.testing.assert_close(s2[k], s1[k], rtol=0, atol=atol, msg=k)
    assert sorted(p.name for p in two.iterdir()) == ["checkpoint.pt", "metrics.json", "model.pt"]


def test_shard_and_batch_wide_draws():
    assert [distributed.shard(29, r, 2) for r in range(2)] == [(0, 15), (15, 29)]
    assert [distributed.shard(2, r, 3) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]
    for n, w in [(0, 2), (7, 3), (64, 4), (5, 8)]:
        ranges = [distributed.shard(n, r, w) for r in range(w)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(hi - lo for lo, hi in ranges) - min(hi - lo for lo, hi in ranges) <= 1
    whole = torch.rand((10, 3), generator=torch.Generator().manual_seed(4))
    with distributed.batch_slice(10, 6, 10):
        part = distributed.draw(torch.rand, (4, 3), generator=torch.Generator().manual_seed(4))
    assert torch.equal(part, whole[6:10])


MLP = ["--epochs", "2", "--encoder", "poisson:seed=3", "--reg", "mpd-sgr", *TINY_MLP]
"""MLP on digits, Poisson input, MPD-SGR (membrane statistics of the global batch): 1437 samples in global
batches of 64 (the last, of 29, split 15 + 14)."""
CONVNET = ["--model", "convnet", "--channels", "4", "--fc", "16", "--timesteps", "4", "--epochs", "1",
           "--batch-size", "50", "--optimizer", "sgd", "--lr", "0.05", "--method", "pgd-at:eps=0.1,steps=2",
           "--threads", "1", "--no-progress"]
"""ConvNet with BatchNorm (statistics of the global batch) and PGD-AT (random starts of the global batch). SGD:
the Linear bias before a BatchNorm has a zero gradient up to rounding, which Adam would scale up to steps of
the learning rate in either direction."""
EMPTY_SHARES = ["--epochs", "2", "--batch-size", "1436", "--limit", "1", *TINY_MLP]
"""Batches of 1436 and 1 sample, 1 test sample: rank 1's share of the last batch and of the test set is empty."""
RESUME = ["--epochs", "2", "--batch-size", "100", *TINY_MLP]
ATTACK = ["--target", "loihi-emu", "--attack", "adaptive,square,transfer", "--eps", "0.1", "--limit", "30",
          "--batch-size", "8", "--steps", "3", "--queries", "20", "--quiet", "--json"]
"""Gradient (adaptive, through loihi-emu), score-based (Square: random) and transfer attacks, 30 samples in
batches of 8: rank 0 attacks batches 1-2, rank 1 batches 3-4."""
DEPLOY = ["--dataset", "digits", "--limit", "50", "--json"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    assert run_cli("snn-train", "--epochs", "2", *TINY_MLP, "--out", str(out)).returncode == 0
    return out / "model.pt"


def run_jobs(folder: Path, jobs: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
    """``jobs`` run by :data:`DRIVER` on 2 ranks; returns what rank 0 printed per job (rank 1 prints nothing)."""
    (folder / "jobs.json").write_text(json.dumps(jobs))
    (folder / "driver.py").write_text(DRIVER)
    torchrun(folder / "driver.py", str(folder / "jobs.json"), str(folder / "printed"))
    printed = [json.loads((folder / f"printed.{r}.json").read_text()) for r in range(2)]
    assert not any(printed[1].values())
    return printed[0]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, model_file) -> tuple[Path, dict[str, str]]:
    """Every 2-rank run of this file in one torchrun launch (starting the ranks costs more than the runs)."""
    d = tmp_path_factory.mktemp("two-ranks")
    jobs = {"mlp": ("train", [*MLP, "--out", str(d / "mlp"), "--distributed"]),
            "convnet": ("train", [*CONVNET, "--out", str(d / "convnet"), "--distributed"]),
            "empty": ("train", [*EMPTY_SHARES, "--out", str(d / "empty"), "--distributed"]),
            "resume": ("resume", [*RESUME, "--out", str(d / "resume"), "--distributed"]),
            "attack": ("attack", [str(model_file), *ATTACK, "--save-adv", str(d / "attack.npz"), "--distributed"]),
            "deploy": ("deploy", [str(model_file), "--target", "loihi-emu", *DEPLOY, "--save-output",
                                  str(d / "deploy.npz"), "--distributed"])}
    return d, run_jobs(d, jobs)


def test_train_two_ranks_equals_one_process(tmp_path, two_ranks):
    folder, printed = two_ranks
    assert run_cli("snn-train", *MLP, "--out", str(tmp_path)).returncode == 0
    assert json.loads(printed["mlp"])["world_size"] == 2
    assert_same_training(tmp_path, folder / "mlp", atol=1e-5)


def test_train_two_ranks_batchnorm_and_adversarial(tmp_path, two_ranks):
    """Weights agree to 5e-4 (of up to ~1): the attack steps along the sign of input gradients, and where a
    gradient is at rounding level the two runs can step a pixel differently; so a few samples may be classified
    differently (seen: 1 of 360 test samples on generic instruction sets, `make test-portable`)."""
    assert run_cli("snn-train", *CONVNET, "--out", str(tmp_path)).returncode == 0
    assert_same_training(tmp_path, two_ranks[0] / "convnet", atol=5e-4, flips=3)


def test_train_two_ranks_with_empty_shares(tmp_path, two_ranks):
    assert run_cli("snn-train", *EMPTY_SHARES, "--out", str(tmp_path)).returncode == 0
    assert_same_training(tmp_path, two_ranks[0] / "empty", atol=1e-5)


def test_resume_under_two_ranks(tmp_path, two_ranks):
    """Two ranks stop after epoch 1 and resume from rank 0's checkpoint: the run one process makes in one go."""
    assert run_cli("snn-train", *RESUME, "--out", str(tmp_path)).returncode == 0
    assert_same_training(tmp_path, two_ranks[0] / "resume", atol=1e-5)


def assert_same_files(one: Path, two: Path) -> None:
    a1, a2 = np.load(one), np.load(two)
    assert a1.files == a2.files
    for k in a1.files:
        np.testing.assert_array_equal(a2[k], a1[k], err_msg=k)


def test_attack_two_ranks_equal_one_process(tmp_path, model_file, two_ranks):
    folder, printed = two_ranks
    one = run_cli("snn-attack", str(model_file), *ATTACK, "--save-adv", str(tmp_path / "one.npz"))
    assert one.returncode == 0, one.stderr
    r1, r2 = json.loads(one.stdout), json.loads(printed["attack"])
    assert 0 < r1["robust_accuracy"] < r1["clean_accuracy"]  # attacks that fool some samples and not others
    assert without_times(r2) == without_times(r1)
    assert_same_files(tmp_path / "one.npz", folder / "attack.npz")


def test_deploy_two_ranks_equal_one_process(tmp_path, model_file, two_ranks):
    """Each rank runs its 25 of the 50 samples on loihi-emu."""
    folder, printed = two_ranks
    one = run_cli("snn-deploy", str(model_file), "--target", "loihi-emu", *DEPLOY, "--save-output",
                  str(tmp_path / "one.npz"))
    assert one.returncode == 0, one.stderr
    r1, r2 = json.loads(one.stdout), json.loads(printed["deploy"])
    assert r1["n_samples"] == 50 and r1["total_spikes"] > 0
    assert without_times(r2) == without_times(r1)
    assert_same_files(tmp_path / "one.npz", folder / "deploy.npz")


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
def test_lava_deploy_one_worker_per_rank(tmp_path, model_file):
    one = run_cli("snn-deploy", str(model_file), "--target", "lava", *DEPLOY, "--save-output", str(tmp_path / "1.npz"))
    assert one.returncode == 0, one.stderr
    printed = run_jobs(tmp_path, {"lava": ("deploy", [str(model_file), "--target", "lava", *DEPLOY, "--save-output",
                                                      str(tmp_path / "2.npz"), "--distributed"])})
    assert without_times(json.loads(printed["lava"])) == without_times(json.loads(one.stdout))
    assert_same_files(tmp_path / "1.npz", tmp_path / "2.npz")


@pytest.mark.nonnumeric
@pytest.mark.parametrize("command, argv", [
    ("snn-train", ["--epochs", "1", "--out", "{out}"]),
    ("snn-attack", ["{model}", "--attack", "pgd", "--eps", "0.1"]),
    ("snn-deploy", ["{model}", "--target", "torch", "--dataset", "digits"]),
])
def test_distributed_outside_torchrun_is_one_line(tmp_path, monkeypatch, model_file, command, argv):
    for k in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(k, raising=False)
    argv = [a.format(out=tmp_path / "out", model=model_file) for a in argv]
    proc = run_cli(command, *argv, "--distributed")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"{command}: error: --distributed needs torchrun" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.nonnumeric
def test_distributed_refuses_conversion_and_qat(tmp_path):
    proc = run_cli("snn-train", "--pipeline", "convert", "--out", str(tmp_path / "o"), "--distributed")
    assert proc.returncode == 2 and "--distributed trains with --pipeline direct" in proc.stderr


def test_amp_bf16_on_cpu(tmp_path):
    """bf16 autocast trains on the CPU (the LIF recurrence in float32) to nearly the float32 run's loss."""
    from snnkit.models import build
    from snnkit.nn import functional

    seen = []
    scan = functional._lif_scan  # what every eager scan runs, on whichever path (operator, kernels, torch)

    def spy(x, *rest):
        seen.append(x.dtype)
        return scan(x, *rest)

    model = build({"arch": "convnet", "input_shape": [1, 8, 8], "num_classes": 10, "channels": [4],
                                 "fc": [16], "timesteps": 4})
    with pytest.MonkeyPatch.context() as mp, torch.autocast("cpu", dtype=torch.bfloat16):
        mp.setattr(functional, "_lif_scan", spy)
        model(torch.rand(4, 1, 8, 8)).sum().backward()
    assert seen and set(seen) == {torch.float32}
    args = ["--epochs", "1", *TINY_MLP]
    full = run_cli("snn-train", *args, "--out", str(tmp_path / "f32"))
    half = run_cli("snn-train", *args, "--amp", "bf16", "--out", str(tmp_path / "bf16"))
    assert full.returncode == half.returncode == 0, half.stderr
    m32, m16 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("f32", "bf16"))
    assert (m32["amp"], m16["amp"]) == (None, "bf16")
    assert m16["history"][0]["loss"] == pytest.approx(m32["history"][0]["loss"], rel=0.05)

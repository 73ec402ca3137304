"""The Lava target: its worker process, one-line errors, timeouts, floating point, and trained snnkit models.

Lava runs need the Python 3.10 environment (.venv-lava); the process-handling tests use stand-in
interpreters and run everywhere.
"""
from __future__ import annotations

import stat
import time
from pathlib import Path

import nir
import numpy as np
import pytest

import snnkit
from snnkit.deploy.base import DeployError, get_target
from snnkit.deploy.lava.target import LavaTarget, find_lava_python, run_lava
from snnkit.deploy.loihi.emulator import LoihiEmulatorTarget
from snnkit.deploy.loihi.prepare import prepare_graph
from conftest import NO_LAVA_REASON, ZOO, lava_available

needs_lava = [pytest.mark.lava, pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)]


def _fake_python(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "python"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def _small_job():
    g = nir.read(ZOO / "lif_norse.nir")
    x = np.zeros((1, 4, 1), np.float32)
    return g, x, prepare_graph(g, x)


# --- the environment and the worker process (no Lava needed) -------------------------------------------

def test_missing_environment_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNKIT_LAVA_ENV", str(tmp_path / "nowhere"))
    with pytest.raises(DeployError) as e:
        find_lava_python()
    assert str(e.value) == (f"lava: SNNKIT_LAVA_ENV={tmp_path / 'nowhere'} is not a Lava environment (no Python "
                            f"interpreter there); create one with `snn-lava-env {tmp_path / 'nowhere'}`")
    monkeypatch.delenv("SNNKIT_LAVA_ENV")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DeployError) as e:
        find_lava_python()
    assert str(e.value) == "lava: no Lava environment; create one with `snn-lava-env` (or set SNNKIT_LAVA_ENV=DIR)"
    g, x, _ = _small_job()
    with pytest.raises(DeployError, match="no Lava environment"):
        get_target("lava").run(g, x)


def test_environment_is_found_from_the_variable_the_folder_or_the_user_location(tmp_path, monkeypatch):
    """$SNNKIT_LAVA_ENV (a venv, an interpreter, or a path relative to the current folder), else ./.venv-lava,
    else the per-user location that `snn-lava-env` creates by default."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    py = _fake_python(tmp_path / "venv" / "bin", "exit 0")
    monkeypatch.setenv("SNNKIT_LAVA_ENV", str(tmp_path / "venv"))
    assert find_lava_python() == py
    monkeypatch.setenv("SNNKIT_LAVA_ENV", str(py))
    assert find_lava_python() == py
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SNNKIT_LAVA_ENV", "venv")
    assert find_lava_python() == py and find_lava_python().is_absolute()
    monkeypatch.delenv("SNNKIT_LAVA_ENV")
    user = tmp_path / "data" / "snnkit" / "lava-env" / "bin"
    user.mkdir(parents=True)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    user_py = _fake_python(user, "exit 0")
    assert find_lava_python() == user_py
    (tmp_path / ".venv-lava" / "bin").mkdir(parents=True)
    local_py = _fake_python(tmp_path / ".venv-lava" / "bin", "exit 0")
    assert find_lava_python() == local_py


def test_hung_worker_is_killed_with_its_children(tmp_path):
    pids = tmp_path / "pids"
    py = _fake_python(tmp_path, f"sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait")
    _, x, lg = _small_job()
    t0 = time.monotonic()
    with pytest.raises(DeployError) as e:
        run_lava([(lg, lg.input.encode(x)[0])], python=py, timeout_s=2)
    assert str(e.value) == "lava: worker did not finish within 2 s and was killed"
    assert time.monotonic() - t0 < 30
    for pid in map(int, pids.read_text().split()):  # no orphan remains (a zombie awaiting its reaper is dead)
        assert not _running(pid), pid


def _running(pid: int) -> bool:
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.1)
    return True


def test_crashed_worker_is_reported_in_one_line(tmp_path):
    py = _fake_python(tmp_path, "echo 'Segmentation fault (core dumped)' >&2; kill -SEGV $$")
    _, x, lg = _small_job()
    with pytest.raises(DeployError) as e:
        run_lava([(lg, lg.input.encode(x)[0])], python=py)
    msg = str(e.value)
    assert msg.startswith("lava: worker crashed (killed by signal 11): Segmentation fault") and "\n" not in msg
    py = _fake_python(tmp_path, "echo boom; exit 1")
    with pytest.raises(DeployError, match=r"^lava: worker crashed \(exit code 1\): boom$"):
        run_lava([(lg, lg.input.encode(x)[0])], python=py)


def test_job_directories_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    py = _fake_python(tmp_path, "exit 1")
    _, x, lg = _small_job()
    with pytest.raises(DeployError):
        run_lava([(lg, lg.input.encode(x)[0])], python=py)
    assert not list(tmp_path.glob("snnkit-lava-*"))


def test_unknown_tag():
    with pytest.raises(DeployError, match="lava: unknown tag 'fixed'"):
        LavaTarget(tag="fixed")


# --- real Lava runs -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two small snnkit models trained briefly on digits (an MLP and a ConvNet with BatchNorm and pooling)."""
    from snnkit.deploy.inputs import dataset_input
    from snnkit.export.exporter import to_nir
    from snnkit.train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("trained")
    out = {}
    for name, model, epochs in [("mlp", {"arch": "mlp", "hidden": [48], "timesteps": 6}, 4),
                                ("convnet", {"arch": "convnet", "channels": [6], "fc": [16], "timesteps": 6}, 3),
                                ("mlp-if-subtract", {"arch": "mlp", "hidden": [48], "timesteps": 6, "neuron": "if",
                                                     "reset": "subtract"}, 4)]:
        train(TrainConfig(dataset="digits", model=model, epochs=epochs, batch_size=128, seed=3), root / name,
              progress=False)
        g = to_nir(snnkit.load(root / name / "model.pt"))
        data = dataset_input("digits", g.metadata, tuple(model.get("input_shape", (1, 8, 8))))
        out[name] = (g, data)
    return out


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
def test_trained_models_run_identically_on_lava_and_the_emulator(trained):
    """Every layer's raster of three trained models (LIF and IF with reset by subtraction among them), on 48 test
    digits, one worker process for all; none of them has a lossy mapping."""
    jobs, plain = [], []
    for name in ("mlp", "convnet", "mlp-if-subtract"):
        g, data = trained[name]
        x = data.x[:48]
        lg = prepare_graph(g, x)
        assert lg.report["lossy"] == [], (name, lg.report["lossy"])
        jobs.append((lg, lg.input.encode(x)[0]))
        plain.append((name, g, x, lg))
    results = run_lava(jobs)
    for (name, g, x, lg), (rasters, info) in zip(plain, results):
        emu = LoihiEmulatorTarget().run_quantised(lg, g, x, record=True)
        assert info["run_s"] > 0
        for layer in lg.layers:
            r = rasters[layer.name].reshape(emu.records[layer.name].shape)
            assert r.sum() > 0, f"{name}/{layer.name} silent"
            np.testing.assert_array_equal(r, emu.records[layer.name], err_msg=f"{name}/{layer.name}")


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
def test_digits_accuracy_of_torch_lava_and_emulator_within_one_point(trained):
    g, data = trained["mlp"]
    ref = get_target("torch", device="cpu").run(g, data.x)
    emu = LoihiEmulatorTarget().run(g, data.x)
    acc = lambda r: float(np.mean(r.predictions() == data.y))  # noqa: E731
    assert abs(acc(emu) - acc(ref)) <= 0.01 + 1e-9, (acc(emu), acc(ref))
    n = 120  # Lava costs ~2 ms per step: a third of the split; the emulator must agree exactly there
    lava = LavaTarget().run(g, data.x[:n])
    np.testing.assert_array_equal(lava.outputs, emu.outputs[:n])
    assert [layer.spikes for layer in lava.layers] == [
        layer.spikes for layer in LoihiEmulatorTarget().run(g, data.x[:n]).layers]
    assert lava.delay == emu.delay == 2 and lava.info["tag"] == "fixed_pt"


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
def test_floating_point_models_and_lava_errors():
    trace = np.loadtxt(ZOO / "lif_lava_cpu_float.csv", delimiter=",")
    res = LavaTarget(tag="floating_pt").run(nir.read(ZOO / "lif_norse.nir"), trace[:, 0].reshape(1, -1, 1))
    np.testing.assert_array_equal(np.nonzero(res.outputs[0, :, 0])[0], np.nonzero(trace[:, 2])[0])
    assert res.info["tag"] == "floating_pt"
    # an error in the worker (here: a graph whose layer and parameter shapes disagree) comes back as one line
    g, x, lg = _small_job()
    lg.layers[0].shape = (2,)
    with pytest.raises(DeployError) as e:
        run_lava([(lg, lg.input.encode(x)[0])])
    assert str(e.value).startswith("lava: ") and "\n" not in str(e.value)

"""snnkit installed as a package (a wheel, not an editable checkout) works outside the checkout, Lava included.

The wheel is built from a copy of the sources and installed with ``--no-deps`` into a fresh virtual
environment in a temporary folder; that environment borrows the test environment's dependencies (torch, nir,
...) through a ``.pth`` line, which adds their folder without processing the editable-install hook kept there,
so ``import snnkit`` can only find the installed wheel. Every command runs from an empty folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nir
import numpy as np
import pytest

from conftest import NO_LAVA_REASON, ZOO, lava_available

pytestmark = pytest.mark.nonnumeric  # make test-portable leaves these out

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["snn-train", "snn-export", "snn-deploy", "snn-attack", "snn-report", "snn-lava-env"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """``{"venv", "bin", "work", "env"}``: the fresh environment holding the wheel, an empty working folder and a
    process environment with no trace of the checkout."""
    root = tmp_path_factory.mktemp("installed")
    src = root / "src-copy"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("snnkit-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    "--disable-pip-version-check", str(wheel)], check=True, capture_output=True, timeout=300)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = root / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SNNKIT_", "VIRTUAL_ENV"))}
    env.update(XDG_DATA_HOME=str(root / "user-data"), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return {"venv": venv, "bin": venv / "bin", "work": work, "env": env}


def _run(installed: dict, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed["bin"] / argv[0]), *argv[1:]], cwd=installed["work"],
                          env={**installed["env"], **(env or {})}, capture_output=True, text=True, timeout=600)


def test_the_wheel_is_what_runs(installed):
    out = subprocess.run([str(installed["bin"] / "python"), "-c", "import snnkit, snnkit.energy; print(snnkit.__file__)"],
                         cwd=installed["work"], env=installed["env"], capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).is_relative_to(installed["venv"]), out.stdout
    for cmd in COMMANDS:
        res = _run(installed, cmd, "--help")
        assert res.returncode == 0 and "usage:" in res.stdout, (cmd, res.stderr)


def test_installed_deploy_runs_and_a_missing_lava_environment_is_one_line(installed):
    shutil.copy(ZOO / "lif_norse.nir", installed["work"] / "g.nir")
    np.save(installed["work"] / "x.npy", np.zeros((2, 20, 1), np.float32))
    res = _run(installed, "snn-deploy", "g.nir", "--target", "torch", "--input", "x.npy", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n_samples"] == 2
    res = _run(installed, "snn-deploy", "g.nir", "--target", "lava", "--input", "x.npy")
    assert res.returncode == 2
    assert res.stderr.strip() == ("snn-deploy: error: lava: no Lava environment; create one with `snn-lava-env` "
                                  "(or set SNNKIT_LAVA_ENV=DIR)")


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
def test_installed_deploy_on_lava(installed):
    """The checkout's Lava environment, named by SNNKIT_LAVA_ENV, runs the installed package's worker; its spikes
    are the emulator's."""
    from snnkit.deploy.lava.target import find_lava_python

    lava_env = find_lava_python().parents[1]
    g = nir.read(ZOO / "lif_norse.nir")
    nir.write(installed["work"] / "g.nir", g)
    trace = np.loadtxt(ZOO / "lif_lava_cpu_fixed.csv", delimiter=",")
    np.save(installed["work"] / "x.npy", trace[:, 0].reshape(1, -1, 1).astype(np.float32))
    runs = {}
    for target in ("lava", "loihi-emu"):
        res = _run(installed, "snn-deploy", "g.nir", "--target", target, "--input", "x.npy", "--json",
                   "--save-output", f"{target}.npz", env={"SNNKIT_LAVA_ENV": str(lava_env)})
        assert res.returncode == 0, res.stderr
        with np.load(installed["work"] / f"{target}.npz") as z:
            runs[target] = {k: z[k] for k in z.files}
        assert json.loads(res.stdout)["target"] == target
    assert runs["lava"].keys() == runs["loihi-emu"].keys()
    for key in runs["lava"]:
        np.testing.assert_array_equal(runs["lava"][key], runs["loihi-emu"][key], err_msg=key)
    assert runs["lava"]["outputs"].sum() > 0


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
def test_installed_export_checks_its_netx_file_on_lava(installed):
    """The wheel carries the netx import stand-ins: the installed snn-export loads its netx file with lava-dl's
    netx on Lava and finds it bit-identical to the emulator (or says why lava-dl did not run)."""
    import torch

    from snnkit.deploy.lava.env import has_netx
    from snnkit.deploy.lava.target import find_lava_python
    from snnkit.models import build, save

    lava_python = find_lava_python()
    torch.manual_seed(0)
    model = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16], "timesteps": 4}).eval()
    save(model, installed["work"] / "m.pt", meta={"dataset": "digits"})
    res = _run(installed, "snn-export", "m.pt", "--target", "lava", "-o", "e", "--probe", "4", "--json",
               env={"SNNKIT_LAVA_ENV": str(lava_python.parents[1])})
    assert res.returncode == 0, res.stderr
    dl = json.loads(res.stdout)["checks"]["lava"]["netx"]["lava_dl"]
    if has_netx(lava_python):
        assert dl["ran"] and dl["identical"] and dl["samples"] == 4, dl
    else:
        assert not dl["ran"] and "lava-dl is not installed" in dl["reason"]

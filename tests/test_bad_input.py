"""Every class of bad input ends in one line naming the file and the problem, exit code 2, never a traceback:
unreadable checkpoints, output paths in the way, malformed model files, absurd sizes, graphs whose nodes do
not fit what they receive (on every target).

The cases run each command in this process (``run_cli``: its console-script entry point); one runs the installed
command as a whole process, where anything printed before the error line (a warning, a log line) would show."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from conftest import run_cli, scaled_model_file

pytestmark = pytest.mark.nonnumeric  # make test-portable leaves these out

BIN = Path(sys.executable).parent
LIMIT = {"SNNKIT_MAX_MEMORY_GB": "4"}


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(*argv, cwd=cwd, env=LIMIT)


def _one_line(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


def _graph(weight: np.ndarray, n_in: int = 4) -> nir.NIRGraph:
    n = weight.shape[0]
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "fc": nir.Affine(weight=weight, bias=np.zeros(n)),
        "lif": nir.LIF(tau=np.full(n, 0.01), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n)),
        "output": nir.Output(output_type={"output": np.array([n])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], metadata={"timesteps": 4}, type_check=False)


CHECKPOINTS = {
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 100),
    "not a dict": lambda p: torch.save([1, 2], p),
    "keys missing": None,  # a real checkpoint without its optimizer state, below
}


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_unusable_checkpoints(tmp_path, kind):
    args = ["snn-train", "--dataset", "digits", "--model", "mlp", "--hidden", "8", "--epochs", "1", "--limit", "20",
            "--no-progress", "--out", "run"]
    ckpt = tmp_path / "run" / "checkpoint.pt"
    if CHECKPOINTS[kind] is None:
        assert _cli(*args, cwd=tmp_path).returncode == 0
        payload = torch.load(ckpt, weights_only=True)
        del payload["optimizer"]
        torch.save(payload, ckpt)
    else:
        ckpt.parent.mkdir()
        CHECKPOINTS[kind](ckpt)
    _one_line(_cli(*args, "--resume", cwd=tmp_path), "run/checkpoint.pt: ")


@pytest.mark.parametrize("argv", [
    ("snn-train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--out", "F"),
    ("snn-export", "m.pt", "--target", "nir", "-o", "F"),
    ("snn-deploy", "m.pt", "--target", "torch", "--dataset", "digits", "--limit", "4", "--save-output", "F/o.npz"),
])
def test_an_output_path_in_the_way(tmp_path, argv):
    scaled_model_file(tmp_path / "m.pt")
    (tmp_path / "F").write_text("precious")
    _one_line(_cli(*argv, cwd=tmp_path), "F", "exists and is not a folder")
    assert (tmp_path / "F").read_text() == "precious"


MODEL_FILES = {
    "config is a string": (lambda d: d.update(config="hello"), "'config' is a str"),
    "state_dict is a list": (lambda d: d.update(state_dict=list(d["state_dict"].values())), "'state_dict' is a list"),
    "absurd timesteps": (lambda d: d["config"].update(timesteps=10 ** 9), "over the limit of 4.0 GiB"),
}


@pytest.mark.parametrize("kind", list(MODEL_FILES))
def test_malformed_model_files(tmp_path, kind):
    change, needle = MODEL_FILES[kind]
    payload = torch.load(scaled_model_file(tmp_path / "m.pt"), weights_only=True)
    change(payload)
    torch.save(payload, tmp_path / "bad.pt")
    _one_line(_cli("snn-deploy", "bad.pt", "--target", "torch", "--dataset", "digits", "--limit", "4",
                   cwd=tmp_path), needle)


def test_the_installed_command_prints_the_one_line_alone(tmp_path):
    """The whole process: nothing before or after the error line on stderr (no warning, no log line)."""
    change, needle = MODEL_FILES["absurd timesteps"]
    payload = torch.load(scaled_model_file(tmp_path / "m.pt"), weights_only=True)
    change(payload)
    torch.save(payload, tmp_path / "bad.pt")
    res = subprocess.run([str(BIN / "snn-deploy"), "bad.pt", "--target", "loihi-emu", "--dataset", "digits"],
                         capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, **LIMIT), timeout=300)
    _one_line(res, needle)


@pytest.mark.parametrize("target", ["torch", "norse", "snntorch", "loihi-emu"])
@pytest.mark.parametrize("kind", ["weight does not fit its input", "zero-size weight"])
def test_graphs_whose_nodes_do_not_fit(tmp_path, kind, target):
    weight = np.ones((3, 5)) if kind.startswith("weight") else np.ones((0, 4))
    nir.write(tmp_path / "g.nir", _graph(weight))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(0, 1, (2, 4, 4)).astype(np.float32))
    needle = "does not fit its input of shape [4]" if kind.startswith("weight") else "its weight is empty"
    _one_line(_cli("snn-deploy", "g.nir", "--target", target, "--input", "x.npy", cwd=tmp_path),
              "g.nir: node 'fc' (Affine)", needle)


def test_labels_beyond_the_graphs_classes(tmp_path):
    """A data set or a labels file whose labels exceed the graph's output size is refused, not scored."""
    rng = np.random.default_rng(0)
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([1, 8, 8])}),
        "flat": nir.Flatten(input_type={"input": np.array([1, 8, 8])}, start_dim=0),
        "fc": nir.Affine(weight=rng.normal(size=(5, 64)), bias=np.zeros(5)),
        "lif": nir.LIF(tau=np.full(5, 0.01), r=np.ones(5), v_leak=np.zeros(5), v_threshold=np.ones(5)),
        "output": nir.Output(output_type={"output": np.array([5])})},
        edges=[("input", "flat"), ("flat", "fc"), ("fc", "lif"), ("lif", "output")], metadata={"timesteps": 4},
        type_check=False)
    nir.write(tmp_path / "g.nir", graph)
    _one_line(_cli("snn-deploy", "g.nir", "--target", "torch", "--dataset", "digits", "--limit", "50",
                   cwd=tmp_path), "g.nir: ", "data set digits has labels up to 9", "has 5 values per step")
    model = scaled_model_file(tmp_path / "m.pt")
    np.save(tmp_path / "x.npy", rng.uniform(0, 1, (3, 1, 8, 8)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.array([1, 10, 2]))
    _one_line(_cli("snn-report", str(model), "--raw-input", "x.npy", "--input-labels", "y.npy", "--targets", "torch",
                   "--out", "r", cwd=tmp_path), "y.npy: labels must lie in 0..9", "got 1..10")
    assert not (tmp_path / "r").exists()


def test_an_export_stopped_by_a_later_check_still_explains_its_files(tmp_path, monkeypatch):
    """model.nir is written first; when a check fails after it, export_report.json says so."""
    from snnkit.cli import export

    def failing(*args):
        raise ValueError("probe.npy: the probe could not be read")

    monkeypatch.setattr(export, "_round_trip", failing)
    scaled_model_file(tmp_path / "m.pt")
    _one_line(run_cli("snn-export", "m.pt", "--target", "loihi-emu", "-o", "e", cwd=tmp_path),
              "the probe could not be read")
    report = json.loads((tmp_path / "e" / "export_report.json").read_text())
    assert (tmp_path / "e" / "model.nir").is_file() and report["files"]["nir"].endswith("model.nir")
    assert "export stopped: probe.npy: the probe could not be read" in report["warnings"]


@pytest.mark.parametrize("kind", ["a NIR graph", "a pickle of other objects"])
def test_foreign_files_given_as_a_model(tmp_path, kind):
    if kind == "a NIR graph":
        nir.write(tmp_path / "m.pt", _graph(np.ones((3, 4))))
        needle = "an HDF5 file (a NIR graph?), not an snnkit model file"
    else:
        from fractions import Fraction

        torch.save({"format": Fraction(1, 2)}, tmp_path / "m.pt")
        needle = "it pickles Python objects besides tensors, refused"
    _one_line(_cli("snn-export", "m.pt", "--target", "nir", cwd=tmp_path), "m.pt: ", needle)


def test_a_graph_whose_loihi_matrices_exceed_the_memory_limit(tmp_path):
    """A 200 x 200 graded input convolved into 8 channels (a dense input layer on Loihi): its matrix is estimated
    (95 GiB) before it is built."""
    h, n = 200, 8 * 200 * 200
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([1, h, h])}),
        "conv": nir.Conv2d(input_shape=(h, h), weight=np.ones((8, 1, 3, 3)), stride=1, padding=1, dilation=1,
                           groups=1, bias=np.zeros(8)),
        "lif": nir.LIF(tau=np.full((8, h, h), 0.01), r=np.ones((8, h, h)), v_leak=np.zeros((8, h, h)),
                       v_threshold=np.ones((8, h, h))),
        "flat": nir.Flatten(input_type={"input": np.array([8, h, h])}, start_dim=0),
        "fc": nir.Affine(weight=np.ones((10, n), dtype=np.float32), bias=np.zeros(10)),
        "out": nir.LIF(tau=np.full(10, 0.01), r=np.ones(10), v_leak=np.zeros(10), v_threshold=np.ones(10)),
        "output": nir.Output(output_type={"output": np.array([10])})},
        edges=[("input", "conv"), ("conv", "lif"), ("lif", "flat"), ("flat", "fc"), ("fc", "out"), ("out", "output")],
        metadata={"timesteps": 2}, type_check=False)
    nir.write(tmp_path / "g.nir", graph)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(0, 1, (1, 2, 1, h, h)).astype(np.float32))
    _one_line(_cli("snn-deploy", "g.nir", "--target", "loihi-emu", "--input", "x.npy", cwd=tmp_path),
              "g.nir: ", "[320000 x 40000] would need about 95.4 GiB, over the limit of 4.0 GiB")


def _file_size_limit(nbytes: int):
    """A child's writes fail past ``nbytes`` per file (EFBIG), as on a full disk: what the command must survive."""
    import resource
    import signal

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


@pytest.mark.parametrize("argv", [
    ("snn-train", "--dataset", "digits", "--hidden", "16", "--epochs", "1", "--limit", "64", "--no-progress",
     "--out", "out"),
    ("snn-export", "m.pt", "--target", "lava", "--probe", "8", "-o", "out"),
])
def test_a_full_disk_is_one_line_and_keeps_what_was_there(tmp_path, argv):
    scaled_model_file(tmp_path / "m.pt")
    assert run_cli(*argv, cwd=tmp_path).returncode == 0  # a complete earlier result in the folder
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    res = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, cwd=tmp_path,
                         preexec_fn=_file_size_limit(2000), timeout=300)
    _one_line(res, "out/", "cannot be written (File too large)")
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before  # nothing half-written, nothing of the earlier result lost

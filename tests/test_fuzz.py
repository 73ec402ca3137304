"""Property-based tests (hypothesis): random valid NIR graphs run on the reference and on Loihi and survive a NIR
round trip; random invalid graphs, model files, ``.npy`` inputs and command lines end in success or in one line
with exit code 2: never a traceback, never a hang, never a half-written file.

Each example runs under an alarm (:data:`LIMIT_S`), so a hang fails the test instead of stalling the suite. Every
run draws a new seed (:data:`SEED`; ``SNNKIT_FUZZ_SEED=N`` replays one); a failure's report shows it beside
hypothesis's smallest failing example and its ``@reproduce_failure`` blob. No example database is written
(``database=None``): the suite leaves nothing in the checkout.
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import warnings
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from snnkit.deploy.base import get_target
from snnkit.graph import read_nir
from conftest import quiet, run_cli, scaled_model_file

SEED = int(os.environ.get("SNNKIT_FUZZ_SEED") or random.SystemRandom().randrange(2 ** 32))
"""This run's seed for every test here (``tests/conftest.py`` adds it to a failure's report)."""
LIMIT_S = 60  # per example: far above what any of them takes (well under a second to a few seconds)
FUZZ = settings(max_examples=40, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@contextlib.contextmanager
def bounded(seconds: int = LIMIT_S):
    """Fail with TimeoutError when the body runs longer than ``seconds`` (a hang is a failure, not a stall)."""
    def expire(signum, frame):
        raise TimeoutError(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def command(*argv: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``run_cli`` under the alarm, refusing any numerical RuntimeWarning raised in snnkit's own code (a whole
    process would print it before its one line)."""
    with bounded(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_cli(*argv, cwd=cwd, env=env)
    ours = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught
            if issubclass(w.category, RuntimeWarning) and "snnkit" in w.filename]
    assert not ours, ours
    return res


def _success_or_one_line(res: subprocess.CompletedProcess) -> None:
    """The only two acceptable outcomes of a command."""
    assert res.returncode in (0, 2), f"exit {res.returncode}: {res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, res.stderr
    if res.returncode == 2:
        lines = res.stderr.strip().splitlines()
        # argparse's own usage errors print its usage first; everything else is exactly one line
        assert lines and (len(lines) == 1 or lines[0].startswith("usage:")), res.stderr
        assert ": error: " in lines[-1], res.stderr


# ----------------------------------------------------------------------------------------- valid graphs

NEURONS = ["LIF", "IF", "CubaLIF"]


def _neuron(kind: str, n: int, draw) -> nir.NIRNode:
    thr = np.asarray(draw(st.lists(st.floats(0.3, 2.0), min_size=n, max_size=n)))
    tau = np.asarray(draw(st.lists(st.floats(2e-3, 0.05), min_size=n, max_size=n)))
    if kind == "LIF":
        return nir.LIF(tau=tau, r=np.ones(n), v_leak=np.zeros(n), v_threshold=thr)
    if kind == "IF":
        return nir.IF(r=np.ones(n), v_threshold=thr)
    if kind == "CubaLIF":
        return nir.CubaLIF(tau_syn=tau / 2, tau_mem=tau, r=np.ones(n), v_leak=np.zeros(n), v_threshold=thr,
                           w_in=np.ones(n))
    return nir.LI(tau=tau, r=np.ones(n), v_leak=np.zeros(n))


@st.composite
def chain_graphs(draw) -> nir.NIRGraph:
    """Input -> (Affine or Linear -> neuron) x 1..3 -> Output; an LI readout last or not; dt 1 ms."""
    n_in = draw(st.integers(1, 6))
    kinds = draw(st.lists(st.sampled_from(NEURONS), min_size=1, max_size=3))
    if draw(st.booleans()):
        kinds[-1] = "LI"
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array([n_in])})}
    edges, prev, width = [], "input", n_in
    for i, kind in enumerate(kinds):
        n = draw(st.integers(1, 6))
        w = rng.normal(0, draw(st.floats(0.2, 3.0)), (n, width))
        nodes[f"fc{i}"] = (nir.Affine(weight=w, bias=rng.normal(0, 0.2, n)) if draw(st.booleans())
                           else nir.Linear(weight=w))
        nodes[f"n{i}"] = _neuron(kind, n, draw)
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"n{i}")]
        prev, width = f"n{i}", n
    nodes["output"] = nir.Output(output_type={"output": np.array([width])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1e-3, "timesteps": 4}, type_check=False)


def _inputs(graph: nir.NIRGraph, seed: int, spikes: bool) -> np.ndarray:
    n_in = int(graph.nodes["input"].input_type["input"][0])
    rng = np.random.default_rng(seed)
    x = rng.random((3, 4, n_in)) < 0.4 if spikes else rng.uniform(0, 1, (3, 4, n_in))
    return x.astype(np.float32)


@FUZZ
@seed(SEED)
@given(graph=chain_graphs(), seed=st.integers(0, 1000), spikes=st.booleans())
def test_valid_graphs_run_on_the_reference_and_on_loihi_and_round_trip(graph, seed, spikes, tmp_path_factory):
    x = _inputs(graph, seed, spikes)
    with bounded(), quiet():
        ref = get_target("torch", device="cpu").run(graph, x)
        emu = get_target("loihi-emu").run(graph, x)
        path = tmp_path_factory.mktemp("g") / "g.nir"
        nir.write(path, graph)
        back = read_nir(path)
    width = int(graph.nodes["output"].output_type["output"][0])
    assert ref.outputs.shape == (3, 4, width) and np.isfinite(ref.outputs).all()
    assert emu.aligned_outputs(4).shape == (3, 4, width) and np.isfinite(emu.outputs).all()
    assert set(back.nodes) == set(graph.nodes) and sorted(back.edges) == sorted(graph.edges)
    for name, node in graph.nodes.items():
        for key, value in node.__dict__.items():
            if isinstance(value, np.ndarray) and key not in ("input_type", "output_type"):
                assert np.array_equal(np.asarray(getattr(back.nodes[name], key)), value), (name, key)


# ----------------------------------------------------------------------------------------- invalid graphs

def _break(graph: nir.NIRGraph, how: str, rng: np.random.Generator) -> nir.NIRGraph:
    nodes, edges = dict(graph.nodes), list(graph.edges)
    fc = nodes["fc0"]
    if how == "nan weight":
        w = np.array(fc.weight, dtype=float)
        w.flat[rng.integers(w.size)] = rng.choice([np.nan, np.inf, -np.inf])
        nodes["fc0"] = nir.Linear(weight=w)
    elif how == "weight too wide":
        nodes["fc0"] = nir.Linear(weight=np.ones((fc.weight.shape[0], fc.weight.shape[1] + 1)))
    elif how == "empty weight":
        nodes["fc0"] = nir.Linear(weight=np.ones((0, fc.weight.shape[1])))
    elif how == "negative tau":
        n = fc.weight.shape[0]
        nodes["n0"] = nir.LIF(tau=-np.ones(n), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n))
    elif how == "zero threshold":
        n = fc.weight.shape[0]
        nodes["n0"] = nir.IF(r=np.ones(n), v_threshold=np.zeros(n))
    elif how == "no path to the output":
        edges = [e for e in edges if e[1] != "output"]
    elif how == "dangling edge":
        edges.append(("fc0", "nowhere"))
    elif how == "two inputs":
        nodes["input2"] = nir.Input(input_type={"input": np.array([2])})
        edges.append(("input2", "output"))
    elif how == "huge weights":
        nodes["fc0"] = nir.Linear(weight=np.asarray(fc.weight) * 1e300)
    elif how == "tiny threshold":
        n = fc.weight.shape[0]
        nodes["n0"] = nir.IF(r=np.ones(n), v_threshold=np.full(n, 1e-300))
    elif how == "huge threshold":
        n = fc.weight.shape[0]
        nodes["n0"] = nir.IF(r=np.ones(n), v_threshold=np.full(n, 1e300))
    elif how == "threshold of another shape":
        n = fc.weight.shape[0]
        nodes["n0"] = nir.IF(r=np.ones(n + 2), v_threshold=np.ones(n + 2))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata), type_check=False)


BREAKS = ["nan weight", "weight too wide", "empty weight", "negative tau", "zero threshold", "no path to the output",
          "dangling edge", "two inputs", "huge weights", "tiny threshold", "huge threshold", "threshold of another shape"]


@pytest.mark.nonnumeric
@FUZZ
@seed(SEED)
@given(graph=chain_graphs(), how=st.sampled_from(BREAKS), target=st.sampled_from(["torch", "loihi-emu", "norse"]),
       seed=st.integers(0, 1000))
def test_invalid_graphs_are_one_line(graph, how, target, seed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    try:
        nir.write(folder / "g.nir", _break(graph, how, np.random.default_rng(seed)))
    except Exception:  # NIR itself refuses to write some broken graphs: nothing to deploy then
        return
    np.save(folder / "x.npy", _inputs(graph, seed, False))
    res = command("snn-deploy", "g.nir", "--target", target, "--input", "x.npy", "--save-output", "out.npz",
                  cwd=folder)
    _success_or_one_line(res)
    if res.returncode:
        assert not (folder / "out.npz").exists() and not list(folder.glob("*.tmp*"))


# ----------------------------------------------------------------------------------------- model files

@pytest.fixture(scope="module")
def model_payload(tmp_path_factory) -> dict:
    return torch.load(scaled_model_file(tmp_path_factory.mktemp("m") / "m.pt"), weights_only=True)


JUNK = st.one_of(st.none(), st.integers(-10 ** 12, 10 ** 12), st.floats(allow_nan=True), st.text(max_size=8),
                 st.lists(st.integers(0, 5), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@pytest.mark.nonnumeric
@FUZZ
@seed(SEED)
@given(path=st.lists(st.sampled_from(["config", "state_dict", "meta", "format", "version", "timesteps", "hidden",
                                       "arch", "neuron", "input_shape", "num_classes", "fc0.weight"]),
                     min_size=1, max_size=2),
       value=JUNK, delete=st.booleans(), cli=st.sampled_from(["snn-deploy", "snn-export"]))
def test_mutated_model_files_are_one_line(model_payload, path, value, delete, cli, tmp_path_factory):
    payload = {k: (dict(v) if isinstance(v, dict) else v) for k, v in model_payload.items()}  # the fixture's stays
    payload["config"] = dict(payload["config"])
    node = payload
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            break
        node = node[key]
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    folder = tmp_path_factory.mktemp("model")
    torch.save(payload, folder / "m.pt")
    args = (["--target", "torch", "--dataset", "digits", "--limit", "4"] if cli == "snn-deploy"
            else ["--target", "nir", "--probe", "4", "-o", "e"])
    res = command(cli, "m.pt", *args, cwd=folder, env={"SNNKIT_MAX_MEMORY_GB": "2"})
    _success_or_one_line(res)
    if res.returncode and cli == "snn-export":
        assert not list(folder.glob("e/*.tmp*"))


@pytest.mark.nonnumeric
@FUZZ
@seed(SEED)
@given(blob=st.binary(max_size=300), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x89HDF\r\n\x1a\n", b"\x80\x02"]))
def test_random_bytes_as_a_model_file_are_one_line(blob, prefix, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bytes")
    (folder / "m.pt").write_bytes(prefix + blob)
    res = command("snn-deploy", "m.pt", "--target", "torch", "--dataset", "digits", cwd=folder)
    _success_or_one_line(res)
    assert res.returncode == 2


# ----------------------------------------------------------------------------------------- .npy inputs

@pytest.mark.nonnumeric
@FUZZ
@seed(SEED)
@given(shape=st.lists(st.integers(0, 9), min_size=0, max_size=5),
       dtype=st.sampled_from(["float32", "float64", "int8", "uint8", "bool", "complex64", "float16"]),
       fill=st.sampled_from(["uniform", "nan", "inf", "huge", "negative"]),
       target=st.sampled_from(["torch", "loihi-emu", "snntorch"]))
def test_random_npy_inputs_are_success_or_one_line(shape, dtype, fill, target, tmp_path_factory):
    folder = tmp_path_factory.mktemp("npy")
    scaled_model_file(folder / "m.pt")
    size = int(np.prod(shape)) if shape else 1
    if size > 200_000:
        return
    values = {"uniform": np.random.default_rng(0).uniform(0, 1, size), "nan": np.full(size, np.nan),
              "inf": np.full(size, np.inf), "huge": np.full(size, 1e30), "negative": -np.ones(size)}[fill]
    with np.errstate(invalid="ignore", over="ignore"):
        x = values.reshape(shape).astype(dtype)
    np.save(folder / "x.npy", x)
    res = command("snn-deploy", "m.pt", "--target", target, "--input", "x.npy", cwd=folder)
    _success_or_one_line(res)


# ----------------------------------------------------------------------------------------- command lines

FLAGS = {
    "snn-deploy": {"--target": st.sampled_from(["torch", "loihi-emu", "nope", ""]),
                   "--dataset": st.sampled_from(["digits", "mnist", "nope"]),
                   "--limit": st.integers(-2, 40).map(str), "--timesteps": st.integers(-1, 12).map(str),
                   "--batch-size": st.integers(-1, 64).map(str), "--dt": st.sampled_from(["0", "-1", "1e-3", "x"]),
                   "--reset": st.sampled_from(["zero", "subtract", "sideways"]), "--json": None},
    "snn-attack": {"--target": st.sampled_from(["torch", "loihi-emu", "nope"]),
                   "--attack": st.sampled_from(["pgd", "square", "transfer", "pgd,square", "nope", ""]),
                   "--eps": st.sampled_from(["0.1", "0", "-1", "0.03,0.1", "x"]),
                   "--limit": st.integers(-1, 12).map(str), "--steps": st.integers(-1, 3).map(str),
                   "--queries": st.integers(-1, 20).map(str), "--json": None, "--quiet": None},
    "snn-export": {"--target": st.sampled_from(["nir", "lava", "onnx", "nope"]),
                   "--probe": st.integers(-1, 8).map(str), "--dt": st.sampled_from(["1e-3", "0", "x"]), "--json": None},
}


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(FLAGS)))
    chosen = draw(st.lists(st.sampled_from(sorted(FLAGS[command])), unique=True, max_size=5))
    argv = [command, "m.pt"]
    for flag in chosen:
        argv.append(flag)
        if FLAGS[command][flag] is not None:
            argv.append(draw(FLAGS[command][flag]))
    return argv


@pytest.mark.nonnumeric
@FUZZ
@seed(SEED)
@given(argv=command_lines())
def test_random_command_lines_are_success_or_one_line(argv, tmp_path_factory):
    folder = tmp_path_factory.mktemp("argv")
    scaled_model_file(folder / "m.pt")
    if argv[0] == "snn-export":
        argv += ["-o", "e"]
    if argv[0] == "snn-attack" and "--limit" not in argv:
        argv += ["--limit", "6"]
    if argv[0] == "snn-attack" and "--target" in argv and "--dataset" not in argv:
        argv += ["--dataset", "digits"]
    res = command(*argv, cwd=folder)
    _success_or_one_line(res)
    assert not list(Path(folder).rglob("*.tmp*"))

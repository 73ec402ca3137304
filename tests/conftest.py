"""Shared test set-up: one torch thread in-process, and where the optional pieces are.

- Unit tests run tiny networks, for which torch's intra-op threads only add synchronisation (and contend with
  other jobs on a 2-core CI machine); every test runs with one thread. Commands run as subprocesses keep
  torch's default.
- ``ZOO`` (and the ``zoo`` fixture): the third-party NIR graphs and traces of the NIR paper, kept as test data in
  ``tests/data/nir-zoo`` with NIR's BSD-3 licence beside them (its README says where each file comes from).
- ``lava_available()``: whether the Python 3.10 Lava environment exists; Lava tests skip only when it does not.
- ``run_cli(...)``: an snnkit command run in this process through its console-script entry point (what the
  installed command calls), for the many tests of exit codes and error lines; a fresh interpreter per case cost
  ~3 s of importing torch each. Tests of what only a whole process shows (warnings printed before the error
  line, signals, the installed wheel) still start one.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

ZOO = Path(__file__).resolve().parent / "data" / "nir-zoo"


def lava_available() -> bool:
    from snnkit.deploy.base import DeployError
    from snnkit.deploy.lava.target import find_lava_python

    try:
        find_lava_python()
    except DeployError:
        return False
    return True


NO_LAVA_REASON = "no Lava environment (no Python 3.10 to build .venv-lava from); create one with `snn-lava-env`"


def run_cli(*argv: str, cwd: "Path | str | None" = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
    """Run the snnkit command ``argv[0]`` (``snn-train``, ``snn-deploy``, ...) with ``argv[1:]`` in this process, as
    its console script does (``sys.exit(main(argv))``): in folder ``cwd``, with ``env`` added to the environment.
    Returns what ``subprocess.run(..., capture_output=True, text=True)`` would: return code, stdout, stderr."""
    (script,) = entry_points(group="console_scripts", name=argv[0])
    main = script.load()
    out, err = io.StringIO(), io.StringIO()
    here, threads, saved = os.getcwd(), torch.get_num_threads(), {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        os.chdir(cwd or here)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv[1:]))
            except SystemExit as e:  # argparse (--help, usage errors)
                code = e.code
    finally:
        os.chdir(here)
        torch.set_num_threads(threads)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if not isinstance(code, int):  # sys.exit("message") prints it and exits 1; None is 0
        err.write(f"{code}\n" if code is not None else "")
        code = 0 if code is None else 1
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def quiet():
    """Silence third-party libraries' prints, warnings and log lines (their importers and exporters are chatty)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def scaled_model_file(path: Path, arch: str = "mlp", **cfg) -> Path:
    """An untrained digits model (``arch`` mlp or convnet, small) with weights scaled so that every layer
    spikes, saved to ``path`` with ``dataset: digits`` in its metadata."""
    from snnkit.models import build, save

    torch.manual_seed(0)
    base = {"mlp": {"hidden": [24]}, "convnet": {"channels": [4], "fc": [12]}}[arch]
    model = build({"arch": arch, "input_shape": [1, 8, 8], "num_classes": 10, "timesteps": 6, **base,
                   **cfg}).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3)
    save(model, path, meta={"dataset": "digits"})
    return path


@pytest.fixture
def zoo() -> Path:
    """The folder of third-party NIR graphs (``ZOO``)."""
    return ZOO


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _native_kernels_as_the_environment_says():
    """Tests switch the compiled kernels on and off (``snnkit.nn.native.set_enabled``); every test ends with them
    as ``$SNNKIT_NATIVE`` says, so that the portable pass (``SNNKIT_NATIVE=0``) runs the torch path everywhere
    else (some tests used to leave them on)."""
    yield
    from snnkit.nn.native import build

    build.set_enabled(build._env_enabled())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test of a module with a ``SEED`` (the fuzz tests) reports the seed that replays it."""
    outcome = yield
    report = outcome.get_result()
    seed = getattr(getattr(item, "module", None), "SEED", None)
    if report.failed and seed is not None:
        report.sections.append(("fuzz seed", f"this run's seed: {seed} (replay: SNNKIT_FUZZ_SEED={seed})"))


"""Shared test set-up: one torch thread in-process, and where the optional pieces are.

- Unit tests run tiny networks, for which torch's intra-op threads only add synchronisation (and contend with
  other jobs on a 2-core CI machine); every test runs with one thread. Commands run as subprocesses keep
  torch's default.
- ``ZOO`` (and the ``zoo`` fixture): the third-party NIR graphs and traces of the NIR paper, kept as test data in
  ``tests/data/nir-zoo`` with NIR's BSD-3 licence beside them (its README says where each file comes from).
- ``lava_available()``: whether the Python 3.10 Lava environment exists; Lava tests skip only when it does not.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
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

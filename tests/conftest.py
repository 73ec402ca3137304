"""Shared test set-up: one torch thread in-process, and where the optional pieces are.

- Unit tests run tiny networks, for which torch's intra-op threads only add synchronisation (and contend with
  other jobs on a 2-core CI machine); every test runs with one thread. Commands run as subprocesses keep
  torch's default.
- ``ZOO`` (and the ``zoo`` fixture): the third-party NIR graphs and traces of the NIR paper, kept as test data in
  ``tests/data/nir-zoo`` with NIR's BSD-3 licence beside them (its README says where each file comes from).
- ``lava_available()``: whether the Python 3.10 Lava environment exists; Lava tests skip only when it does not.
"""
from __future__ import annotations

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

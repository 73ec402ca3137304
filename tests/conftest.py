"""Shared test set-up: one torch thread in-process, and where the optional pieces are.

- Unit tests run tiny networks, for which torch's intra-op threads only add synchronisation (and contend with
  other jobs on a 2-core CI machine); every test runs with one thread. Commands run as subprocesses keep
  torch's default.
- ``ZOO``: the third-party NIR graphs, read from ../shared/nir-zoo or $SNNKIT_NIR_ZOO (never copied into the
  project).
- ``lava_available()``: whether the Python 3.10 Lava environment exists; Lava tests skip only when it does not.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ZOO = Path(os.environ.get("SNNKIT_NIR_ZOO", Path(__file__).resolve().parents[2] / "shared" / "nir-zoo"))


def lava_available() -> bool:
    from snnkit.deploy.base import DeployError
    from snnkit.deploy.lava.target import find_lava_python

    try:
        find_lava_python()
    except DeployError:
        return False
    return True


NO_LAVA_REASON = "no Lava environment (.venv-lava); run `make lava-env`"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

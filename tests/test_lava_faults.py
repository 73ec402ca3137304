"""Faults during a Lava run: the host killed (SIGTERM, SIGKILL) leaves no process and, after the next start, no
job folder; a dead Lava runtime process is reported within seconds; ``retries`` re-runs a failed worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from snnkit.deploy.base import DeployError, get_target
from snnkit.deploy.lava import target as lava_target
from snnkit.deploy.lava import watchdog
from conftest import NO_LAVA_REASON, ZOO, lava_available

pytestmark = [pytest.mark.lava, pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)]
LONG_STEPS = 200_000  # a run of minutes: long enough to be interrupted

HOST = textwrap.dedent("""
    import sys
    import nir, numpy as np
    from snnkit.deploy.lava.target import run_lava
    from snnkit.deploy.loihi.prepare import prepare_graph

    x = np.zeros((1, int(sys.argv[2]), 1), np.float32)
    lg = prepare_graph(nir.read(sys.argv[1]), x)
    try:
        run_lava([(lg, lg.input.encode(x)[0])])
    except Exception as e:
        print("ERROR", e, flush=True)
        sys.exit(2)
""")


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, process group, command line) of every live process."""
    out = {}
    for pid, fields in watchdog.proc_stats():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z":
            out[pid] = (int(fields[1]), int(fields[3]), cmd)
    return out


def _worker_group(tmp: Path, timeout: float = 120.0) -> tuple[int, list[int]]:
    """The running worker's pid (its process group) once Lava's runtime processes have started, and those."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        table = _proc_table()
        workers = [p for p, (_, _, cmd) in table.items() if "snnkit.deploy.lava.worker" in cmd and str(tmp) in cmd]
        if workers:
            children = [p for p, (pp, _, _) in table.items() if pp == workers[0]]
            if len(children) >= 3:
                return workers[0], children
        time.sleep(0.2)
    raise AssertionError("the Lava worker's runtime did not start")


def _group_alive(pgid: int) -> list[int]:
    return [p for p, (_, g, _) in _proc_table().items() if g == pgid]


def _start_host(tmp: Path) -> subprocess.Popen:
    env = dict(os.environ, TMPDIR=str(tmp))
    return subprocess.Popen([sys.executable, "-c", HOST, str(ZOO / "lif_norse.nir"), str(LONG_STEPS)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _end(host: subprocess.Popen, worker: int | None) -> None:
    """Whatever a failed test left running: the host and the worker's process group."""
    if host.poll() is None:
        host.kill()
        host.wait()
    if worker is not None:
        lava_target._kill_group(worker)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_host_ends_the_worker_and_the_next_start_removes_its_folder(tmp_path, sig, monkeypatch):
    host, worker = _start_host(tmp_path), None
    try:
        worker, _ = _worker_group(tmp_path)
        host.send_signal(sig)
        host.wait(timeout=30)
        t0 = time.monotonic()
        while _group_alive(worker) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        assert not _group_alive(worker), "Lava processes outlived the host"
    finally:
        _end(host, worker)
    left = list(tmp_path.glob(f"{lava_target.JOB_PREFIX}{host.pid}-*"))
    assert left, "the killed host had no time to clean up, so its folder is there"
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    lava_target.remove_stale_jobs()
    assert not list(tmp_path.glob(f"{lava_target.JOB_PREFIX}{host.pid}-*"))


def test_a_dead_runtime_process_is_reported_within_seconds(tmp_path):
    host, worker = _start_host(tmp_path), None
    try:
        worker, children = _worker_group(tmp_path)
        time.sleep(1.0)  # the run is under way
        t0 = time.monotonic()
        os.kill(children[-1], signal.SIGKILL)
        out, _ = host.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        _end(host, worker)
    assert host.returncode == 2, out
    line = [ln for ln in out.splitlines() if ln.startswith("ERROR")][-1]
    assert "Lava runtime process" in line and "died (killed by signal 9)" in line, out
    assert took < 10, f"reported after {took:.1f} s"
    assert not _group_alive(worker)


def test_retries_run_a_failed_worker_again(tmp_path):
    """A worker that crashes once and then succeeds: ``retries=1`` gets the result, ``retries=0`` the error."""
    import nir

    from snnkit.deploy.lava.env import find_python

    flag = tmp_path / "crashed-once"
    shim = tmp_path / "python"
    shim.write_text(f"#!/bin/sh\nif [ ! -e {flag} ]; then touch {flag}; kill -9 $$; fi\nexec {find_python()} \"$@\"\n")
    shim.chmod(0o755)
    g = nir.read(ZOO / "lif_norse.nir")
    x = np.random.default_rng(0).uniform(0, 1, (2, 6, 1)).astype(np.float32)
    with pytest.raises(DeployError, match=r"worker crashed \(killed by signal 9\)"):
        get_target("lava", python=str(shim)).run(g, x)
    flag.unlink()
    res = get_target("lava", python=str(shim), retries=1).run(g, x)
    assert res.info["attempts"] == 2
    emu = get_target("loihi-emu").run(g, x)
    np.testing.assert_array_equal(res.outputs, emu.outputs)


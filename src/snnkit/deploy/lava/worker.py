"""The Lava worker: ``python -m snnkit.deploy.lava.worker JOB_DIR [JOB_DIR...]`` in the Lava environment.

Never imports torch (Lava forks its runtime processes, and torch is absent from that environment anyway).

JOB_DIR holds (written by :mod:`snnkit.deploy.lava.target`):

- ``job.json``: ``{"tag": "fixed_pt" | "floating_pt"}``, or ``{"kind": "netx", "tag": "fixed_pt"}`` to load
  ``model_netx.h5`` with lava-dl's ``netx.hdf5.Network`` instead (:mod:`snnkit.deploy.lava.netx_build`)
- ``graph/``: a saved :class:`~snnkit.deploy.loihi.graph.LoihiGraph` (for a netx job: the file read back,
  for names, sizes and depths)
- ``input.npy``: ``[B, T, *input_shape]`` (int32 input integers for fixed_pt, float64 for floating_pt)

and receives:

- ``rasters.npz``: ``layer<i>`` -> spikes ``[B, T + delay, n]`` (uint8) of ``graph.layers[i]``, or its potential
  for a readout (int32; float64 for floating_pt)
- ``result.json``: ``{"ok": true, "build_s", "run_s", "steps", "processes"}`` (netx jobs add ``imports``:
  ``"stand-in"`` or ``"torch"``) or ``{"ok": false, "error": one line}`` (with ``"worker_failure": true`` when a
  runtime process died rather than Lava reporting an error)

Several job directories run one after the other in the same process (Lava is imported once). The Lava
runtime is stopped in every case; the exit code is 0 when every job succeeded and 3 otherwise. The worker ends
its whole process group when the host dies or a runtime process dies (:mod:`snnkit.deploy.lava.watchdog`).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from snnkit.deploy.lava import watchdog


def _write_json(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def run_job(job_dir: Path, running: list[Path]) -> dict:
    """Run one job directory; ``running`` holds ``job_dir`` while Lava's runtime runs (for the watcher)."""
    import numpy as np

    from snnkit.deploy.lava.build import LavaNetwork
    from snnkit.deploy.loihi.graph import LoihiGraph

    job = json.loads((job_dir / "job.json").read_text())
    lg = LoihiGraph.load(job_dir / "graph")
    x = np.load(job_dir / "input.npy")
    t0 = time.perf_counter()
    if job.get("kind") == "netx":
        from snnkit.deploy.lava.netx_build import NetxNetwork

        net = NetxNetwork(lg, x, job_dir / "model_netx.h5", job_dir)
    else:
        net = LavaNetwork(lg, x, job["tag"], job_dir)
    try:
        t1 = time.perf_counter()
        running[:] = [job_dir]
        net.run()
        t2 = time.perf_counter()
    finally:
        running.clear()  # stopping ends the runtime's processes (the shared-memory manager by SIGTERM)
        net.stop()
    rasters = net.rasters()
    fd, tmp = tempfile.mkstemp(dir=job_dir, prefix="rasters.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **{f"layer{i}": rasters[layer.name] for i, layer in enumerate(lg.layers)})
    os.replace(tmp, job_dir / "rasters.npz")
    for path in net.scratch_files():
        path.unlink(missing_ok=True)
    n_proc = len(net.sources) + len(net.neurons) + len(net.synapses) + len(net.recorders)
    result = {"ok": True, "build_s": t1 - t0, "run_s": t2 - t1, "steps": net.total, "processes": n_proc,
              "pauses": len(net.stops()) - 1}
    if job.get("kind") == "netx":
        result["imports"] = net.imports
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m snnkit.deploy.lava.worker JOB_DIR [JOB_DIR...]", file=sys.stderr)
        return 2
    running: list[Path] = []  # the job directory being run, for the runtime watcher
    watchdog.watch_parent()
    watchdog.watch_runtime(lambda: running[0] if running else None,
                           lambda job_dir, line: _write_json(job_dir / "result.json",
                                                             {"ok": False, "error": line, "worker_failure": True}))
    rc = 0
    for arg in argv:
        job_dir = Path(arg)
        try:
            result = run_job(job_dir, running)
        except Exception as e:  # report every failure as one line; the traceback goes to the log
            traceback.print_exc()
            msg = " ".join(f"{type(e).__name__}: {e or repr(e)}".split())
            _write_json(job_dir / "result.json", {"ok": False, "error": msg[:500]})
            rc = 3
            continue
        _write_json(job_dir / "result.json", result)
    return rc


if __name__ == "__main__":
    sys.exit(main())

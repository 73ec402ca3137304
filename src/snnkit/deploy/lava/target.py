"""``--target lava``: run a graph on Lava's Loihi 2 models in a separate Python 3.10 worker process.

The host (any Python, torch allowed) quantises the graph, writes it and the input integers into a temporary
job directory, starts ``python -m snnkit.deploy.lava.worker JOB_DIR`` with the Lava environment's
interpreter in its own process group, waits with a timeout and reads the spike rasters back. A hung worker
is killed with its whole process group (Lava's runtime processes included); a crash or a Lava error becomes
one ``DeployError`` line; the job directory is always removed. The worker ends its group by itself when this
process dies, however it dies, and within a second when one of Lava's runtime processes dies
(:mod:`snnkit.deploy.lava.watchdog`); job folders of hosts that died before cleaning up (``snnkit-lava-PID-*``)
are removed on the next start. ``retries`` re-runs a worker that failed.

The Lava interpreter is found by :func:`snnkit.deploy.lava.env.find_python` (``$SNNKIT_LAVA_ENV``, a
``.venv-lava`` in the current folder, or the per-user environment that ``snn-lava-env`` creates). The worker
sees snnkit's own package through a folder in the job directory that holds only a link to it, so the Lava
interpreter never sees the caller's site-packages (torch, numpy 2), whether snnkit is installed or checked out.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import snnkit
from snnkit.graph import DeployError
from snnkit.deploy.lava import env as lava_env
from snnkit.deploy.loihi.graph import LoihiGraph
from snnkit.deploy.loihi.prepare import QuantisedTarget

def find_lava_python() -> Path:
    """The Lava environment's interpreter, or a one-line DeployError saying how to make one."""
    try:
        return lava_env.find_python()
    except lava_env.LavaEnvError as e:
        raise DeployError(f"lava: {e}") from None


def default_timeout(steps: int, processes: int) -> float:
    """Generous wall-clock limit for a worker: start-up plus 10 ms per process and step."""
    return 120.0 + 0.01 * steps * processes


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class WorkerFailure(DeployError):
    """The worker process failed (crashed, timed out, a runtime process died): worth a retry, unlike an error
    Lava reported about the graph."""


def run_worker(job_dirs: list[Path], *, python: Path, timeout_s: float, log_dir: Path) -> list[dict]:
    """Run the worker on ``job_dirs``; their result dicts, or a one-line DeployError (WorkerFailure when the
    worker itself failed)."""
    path_dir = log_dir / "pythonpath"  # snnkit alone, not the folder it is installed in
    path_dir.mkdir(exist_ok=True)
    link = path_dir / "snnkit"
    if not link.is_symlink():
        link.symlink_to(Path(snnkit.__file__).resolve().parent, target_is_directory=True)
    alive_r, alive_w = os.pipe()  # the worker sees end-of-file on alive_r once this process is gone
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONPATH=str(path_dir), PYTHONDONTWRITEBYTECODE="1", SNNKIT_LAVA_PARENT_FD=str(alive_r))
    log_path = log_dir / "worker.log"
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(python), "-m", "snnkit.deploy.lava.worker", *map(str, job_dirs)], env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=str(log_dir), pass_fds=(alive_r,))
            os.close(alive_r)
            alive_r = -1
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
                raise WorkerFailure(f"lava: worker did not finish within {timeout_s:.0f} s and was killed") from None
            except BaseException:
                _kill_group(proc.pid)
                proc.wait()
                raise
            finally:
                _kill_group(proc.pid)  # nothing of the worker's process group outlives it
    finally:
        for fd in (alive_r, alive_w):
            if fd >= 0:
                os.close(fd)
    results = []
    for d in job_dirs:
        result_file = d / "result.json"
        if not result_file.exists():
            tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
            last = tail[-1].strip() if tail else "no output"
            how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
            raise WorkerFailure(f"lava: worker crashed ({how}): {last[:300]}")
        result = json.loads(result_file.read_text())
        if not result.get("ok"):
            error = f"lava: {result.get('error', 'worker failed')}"
            raise WorkerFailure(error) if result.get("worker_failure") else DeployError(error)
        results.append(result)
    return results


def run_lava(jobs: list[tuple[LoihiGraph, np.ndarray]], *, tag: str = "fixed_pt", timeout_s: float | None = None,
             python: str | os.PathLike | None = None, retries: int = 0) -> list[tuple[dict[str, np.ndarray], dict]]:
    """Run quantised graphs on Lava in one worker process.

    jobs: ``(graph, x)`` pairs; ``x [B, T, *input_shape]`` holds the input integers (``graph.input.encode``)
        for fixed_pt, the float input for floating_pt.
    Returns, per job, ``(rasters, info)``: layer name -> spikes ``[B, T + delay, n]`` (uint8) and the
    worker's timings (``run_s`` is the Lava run proper) and ``attempts``.
    retries: run a worker that failed (crash, timeout, a dead runtime process) again, up to this many times.
    """
    return _run_jobs([(lg, x, {"tag": tag}, None) for lg, x in jobs], tag, timeout_s, python, retries)


def run_netx(netx_file: str | os.PathLike, lg: LoihiGraph, x: np.ndarray, *, timeout_s: float | None = None,
             python: str | os.PathLike | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Load ``netx_file`` with lava-dl's ``netx.hdf5.Network`` in the Lava worker and run it on
    ``Loihi2SimCfg(select_tag="fixed_pt")`` (:mod:`snnkit.deploy.lava.netx_build`).

    lg: the same file read back (:func:`snnkit.deploy.loihi.netx_read.read_netx`), for layer names and sizes.
    x: input integers ``[B, T, *input_shape]`` (``lg.input.encode``).
    Returns ``(rasters, info)`` as :func:`run_lava` does; ``info["imports"]`` says whether netx's torch imports
    were met by torch or by snnkit's stand-ins.
    """
    [out] = _run_jobs([(lg, x, {"kind": "netx", "tag": "fixed_pt"}, Path(netx_file))], "fixed_pt", timeout_s,
                      python)
    return out


JOB_PREFIX = "snnkit-lava-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_jobs() -> None:
    """Remove job folders whose host process is gone (``snnkit-lava-PID-*`` in the temp folder): what a host
    killed before its cleanup ran left behind."""
    for d in Path(tempfile.gettempdir()).glob(f"{JOB_PREFIX}*-*"):
        pid = d.name[len(JOB_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _run_jobs(jobs: list[tuple[LoihiGraph, np.ndarray, dict, Path | None]], tag: str, timeout_s: float | None,
              python: str | os.PathLike | None, retries: int = 0) -> list[tuple[dict[str, np.ndarray], dict]]:
    python = Path(python) if python else find_lava_python()
    remove_stale_jobs()
    root = Path(tempfile.mkdtemp(prefix=f"{JOB_PREFIX}{os.getpid()}-"))
    try:
        dirs = []
        steps = procs = 0
        for i, (lg, x, meta, netx_file) in enumerate(jobs):
            d = root / f"job{i}"
            d.mkdir()
            lg.save(d / "graph")
            np.save(d / "input.npy", np.asarray(x, dtype=np.int32 if tag == "fixed_pt" else np.float64))
            (d / "job.json").write_text(json.dumps(meta))
            if netx_file is not None:
                shutil.copyfile(netx_file, d / "model_netx.h5")
            dirs.append(d)
            steps += x.shape[0] * lg.steps_out(x.shape[1])
            procs = max(procs, lg.lava_processes())
        timeout = timeout_s if timeout_s is not None else default_timeout(steps, procs)
        for attempt in range(retries + 1):
            for d in dirs:
                (d / "result.json").unlink(missing_ok=True)
            try:
                results = run_worker(dirs, python=python, timeout_s=timeout, log_dir=root)
                break
            except WorkerFailure:
                if attempt == retries:
                    raise
        for res in results:
            res["attempts"] = attempt + 1
        out = []
        for (lg, *_), d, res in zip(jobs, dirs, results):
            with np.load(d / "rasters.npz") as z:
                out.append(({layer.name: z[f"layer{i}"] for i, layer in enumerate(lg.layers)}, res))
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


class LavaTarget(QuantisedTarget):
    """Lava's ``Loihi2SimCfg`` in a worker process.

    tag: ``"fixed_pt"`` (bit-accurate Loihi 2 models, the default) or ``"floating_pt"``.
    timeout_s: wall-clock limit for the worker (default: :func:`default_timeout`).
    retries: how many times a worker that failed is run again (:func:`run_lava`).
    python: the Lava interpreter (default: :func:`find_lava_python`).
    The other options are the quantisation options of :func:`snnkit.deploy.loihi.quantize` (None: its
    default). Quantised graphs are cached per graph object (``snnkit.deploy.cache``).
    """

    name = "lava"
    summed_info = ("lava_steps", "pauses", "worker_total_s")

    def __init__(self, tag: str = "fixed_pt", timeout_s: float | None = None, python: str | None = None,
                 retries: int = 0, **quantisation):
        if tag not in ("fixed_pt", "floating_pt"):
            raise DeployError(f"lava: unknown tag {tag!r} (fixed_pt, floating_pt)")
        if retries < 0:
            raise DeployError(f"lava: retries must be >= 0 (got {retries})")
        self.retries = retries
        super().__init__(**quantisation)
        self.tag = tag
        self.timeout_s = timeout_s
        self.python = python

    def check_available(self) -> None:
        if self.python is None:
            find_lava_python()

    def _lava_python(self):
        return self.python

    def query_proxy(self, *, device: str = "cpu") -> QuantisedTarget:
        """``loihi-emu`` with this target's quantisation: bit-identical outputs, many times faster."""
        from snnkit.deploy.loihi.emulator import LoihiEmulatorTarget

        return LoihiEmulatorTarget(device=device, **self.quant_options)

    def execute(self, lg: LoihiGraph, x: np.ndarray, xi: np.ndarray):
        t0 = time.perf_counter()
        feed = xi if self.tag == "fixed_pt" else x
        [(rasters, result)] = run_lava([(lg, feed)], tag=self.tag, timeout_s=self.timeout_s, python=self.python,
                                       retries=self.retries)
        total = time.perf_counter() - t0
        info = {"tag": self.tag, "processes": result["processes"], "lava_steps": result["steps"],
                "pauses": result["pauses"], "worker_total_s": total, "attempts": result["attempts"]}
        return rasters, result["run_s"], total - result["run_s"], info

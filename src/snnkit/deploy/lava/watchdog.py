"""Two watchers in the Lava worker, so that a failure ends the whole worker within a second.

The worker leads its own process group (the host starts it with ``start_new_session``); Lava's runtime
processes are its children in that group. Both watchers end the group with SIGKILL:

- **parent death**: the host passes the read end of a pipe whose write end only it holds
  (``SNNKIT_LAVA_PARENT_FD``). Reading it returns end-of-file once the host is gone, however it died (SIGKILL
  included), and the worker ends its group instead of running on as orphans.
- **a dead runtime process**: Lava waits forever for a process that has died. While a job runs, the worker's
  child processes are polled; one that ended with a signal or a non-zero exit code is reported in that job's
  ``result.json``, in one line, and the group is ended at once.

Runs in the Lava environment (stdlib only).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

PARENT_FD = "SNNKIT_LAVA_PARENT_FD"
POLL_S = 0.2


def end_group() -> None:
    """SIGKILL the worker's process group: the worker and every Lava runtime process."""
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _start(target: Callable[[], None], name: str) -> None:
    threading.Thread(target=target, name=name, daemon=True).start()


def watch_parent() -> None:
    """End the group when the host process is gone (no-op when the host gave no pipe)."""
    fd = os.environ.get(PARENT_FD)
    if fd is None:
        return

    def wait() -> None:
        while os.read(int(fd), 1):
            pass
        end_group()

    _start(wait, "snnkit-parent-watch")


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """``(pid, fields)`` of every process (Linux ``/proc/PID/stat``; ``fields`` start after the command name:
    ``[0]`` state, ``[1]`` parent pid, ``[3]`` process group, ``[49]`` exit code)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                yield int(entry.name), f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue


def dead_children() -> list[tuple[int, str]]:
    """``(pid, how)`` of this process's children that ended abnormally and are not yet reaped (a zombie's
    ``exit_code`` field is read without reaping it, so Lava's own bookkeeping is left alone)."""
    me, out = os.getpid(), []
    for pid, fields in proc_stats():
        if int(fields[1]) != me or fields[0] != "Z" or len(fields) < 50:
            continue
        status = int(fields[49])  # as waitpid reports it
        if status & 0x7F:
            out.append((pid, f"killed by signal {status & 0x7F}"))
        elif status >> 8:
            out.append((pid, f"exit code {status >> 8}"))
    return out


def watch_runtime(running: Callable[[], "Path | None"], report: Callable[[Path, str], None]) -> None:
    """While ``running()`` names a job directory, poll the worker's children; when one has died abnormally,
    call ``report(job_dir, line)`` and end the group. Only on Linux (``/proc``)."""
    if not os.path.isdir("/proc/self"):
        return

    def poll() -> None:
        while True:
            job = running()
            dead = dead_children() if job is not None else []
            if dead and running() is job:
                pid, how = dead[0]
                report(job, f"a Lava runtime process (pid {pid}) died ({how}); the run was stopped")
                end_group()
            time.sleep(POLL_S)

    _start(poll, "snnkit-runtime-watch")

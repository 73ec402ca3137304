"""An output folder is written by one snnkit command at a time.

A command that writes a folder (``snn-train --out``, ``snn-export -o``, ...) holds an exclusive ``flock`` on
``FOLDER/.snnkit-lock`` while it runs; a second command on the same folder refuses in one line instead of mixing
its files with the first one's. The operating system drops the lock when its holder dies, whatever killed it
(SIGKILL included), so a stale lock file never blocks anyone. Re-entering the same folder from the same process
(the conversion pipeline trains into its own folder) is allowed. A folder the command created and left empty
because it failed is removed again.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no locking
    fcntl = None

LOCK_NAME = ".snnkit-lock"
_held: dict[Path, int] = {}  # folders this process holds -> nesting depth


class FolderBusy(ValueError):
    """Another process is writing the folder."""


def _acquire(lock: Path) -> int:
    """An open descriptor of ``lock`` holding its exclusive lock, or FolderBusy."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {owner})" if owner.isdigit() else ""
            raise FolderBusy(f"{lock.parent}: another snnkit command{who} is writing this folder; wait for it to "
                             "finish or choose another output folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its previous holder unlinked between our open and our lock
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)


@contextmanager
def writing(folder: "str | Path") -> Iterator[Path]:
    """Hold ``folder`` (created if missing) for writing; yields its path. Raises FolderBusy when another process
    holds it, and a one-line ValueError when the path exists and is not a folder."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a folder")
    key = path.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield path
        finally:
            _held[key] -= 1
        return
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path / LOCK_NAME) if fcntl is not None else None
    _held[key] = 1
    failed = False
    try:
        yield path
    except BaseException:
        failed = True
        raise
    finally:
        del _held[key]
        if fd is not None:
            (path / LOCK_NAME).unlink(missing_ok=True)
            os.close(fd)
        if failed and created and not any(path.iterdir()):
            path.rmdir()

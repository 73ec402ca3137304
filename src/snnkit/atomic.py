"""Writing a file so that it is either complete or absent: never half-written (stdlib; numpy for ``.npz``, torch for
``.pt``). A write the system refuses (a full disk, a file size limit, no permission) removes what it began and
raises :class:`OutputNotWritten`, one line naming the file."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path


class OutputNotWritten(OSError):
    """An output file could not be written (nothing of it is left); the message names it and says why."""


def atomic_write(path: "str | Path", write) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` only once it is complete."""
    path = Path(path)
    created = []  # the folders made for this file, innermost first
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f"{path}: {folder} exists and is not a folder")
            break
        created.append(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the result gets the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        for folder in created:  # removed again when nothing else came into them
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError) and not isinstance(exc, OutputNotWritten):
            raise OutputNotWritten(f"{path}: cannot be written ({exc.strerror or exc})") from None
        raise


def write_bytes(path: "str | Path", data: bytes) -> None:
    """``data`` to ``path``, atomically. Files serialised in memory first (torch, HDF5, ``.npz``) are written with
    this: a full disk then fails a plain write, reported as what it is, instead of inside a library's writer."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def save_torch(path: "str | Path", obj) -> None:
    """``torch.save(obj)`` to ``path``, atomically (torch's own file writer reports a full disk as an internal
    RuntimeError)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def save_npz(path: "str | Path", arrays: dict) -> None:
    """``numpy.savez`` of ``arrays`` (name -> array) to ``path``, atomically."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())

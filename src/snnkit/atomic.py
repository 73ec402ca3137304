"""Writing a file so that it is either complete or absent: never half-written (stdlib; numpy for ``.npz``)."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path


def atomic_write(path: "str | Path", write) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` only once it is complete."""
    path = Path(path)
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f"{path}: {folder} exists and is not a folder")
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the result gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npz(path: "str | Path", arrays: dict) -> None:
    """``numpy.savez`` of ``arrays`` (name -> array) to ``path``, atomically."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))

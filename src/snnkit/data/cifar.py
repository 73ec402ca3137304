"""Readers for CIFAR-10's and CIFAR-100's "python version" files (``cifar-10-batches-py``, ``cifar-100-python``).

Each file is a pickle of a dict with ``data`` (``uint8 [N, 3072]``, rows of 1024 red, 1024 green, 1024 blue
values of a 32x32 image) and its labels: ``labels`` (``N`` ints 0..9) in CIFAR-10's ``data_batch_1..5`` and
``test_batch``; ``fine_labels`` (0..99, the 100 classes) beside ``coarse_labels`` (0..19, the superclasses) in
CIFAR-100's ``train`` and ``test``. A pickle can name any importable function and run it while loading, so
these files are never given to :func:`pickle.load`: they are read with :class:`SafeUnpickler`, which resolves
only the few globals needed to rebuild a numpy array (and bytes written by protocol 2) from its own table and
imports nothing. Anything else -- ``os.system``, ``builtins.eval``, any class -- is refused with a
:class:`DataError`.
"""
from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from snnkit.data.errors import DataError


@dataclass(frozen=True)
class Layout:
    """How one CIFAR release stores its splits: its folder, the files of each split, the label key and range."""

    title: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    labels_key: str
    num_classes: int


CIFAR10 = Layout("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                 "labels", 10)
CIFAR100 = Layout("CIFAR-100", "cifar-100-python", ("train",), ("test",), "fine_labels", 100)


def _numpy_core(submodule: str) -> Any:
    """``numpy._core.<submodule>`` (numpy >= 2), else ``numpy.core.<submodule>``."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Protocol 2 stores ``bytes`` as ``_codecs.encode(text, "latin1")``; any other codec is refused."""
    if encoding.lower().replace("-", "") != "latin1":
        raise ForbiddenGlobal(f"forbidden codec {encoding!r} in pickle's _codecs.encode")
    return text.encode("latin1")


@functools.lru_cache(maxsize=1)
def _allowed() -> dict[tuple[str, str], Callable[..., Any]]:
    reconstruct = _numpy_core("multiarray")._reconstruct
    frombuffer = _numpy_core("numeric")._frombuffer
    return {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("_codecs", "encode"): _latin1_bytes,
    }


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle named a global outside the allowed table; nothing it named was imported or called."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds plain Python values and numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed()[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(
                f"forbidden global {module}.{name} in pickle (only numpy arrays and plain values are allowed)"
            ) from None


def read_batch(path: Path, layout: Layout = CIFAR10) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3, 32, 32]`` (0..255) and labels ``int64 [N]`` (``0 .. layout.num_classes - 1``,
    from ``layout.labels_key``) of one file."""
    try:
        with path.open("rb") as handle:
            batch = SafeUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"data: {path}: missing") from None
    except OSError as exc:
        raise DataError(f"data: {path}: cannot read ({exc})") from None
    except ForbiddenGlobal as exc:
        raise DataError(f"data: {path}: {exc}") from None
    except Exception as exc:  # a malformed pickle can raise almost anything; all of it means "bad file"
        raise DataError(f"data: {path}: not a valid {layout.title} batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"data: {path}: expected a dict, found {type(batch).__name__}")
    key = layout.labels_key
    data = batch.get("data", batch.get(b"data"))
    labels = batch.get(key, batch.get(key.encode()))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"data: {path}: 'data' must be a uint8 array [N, 3072], found {found}")
    if labels is None:
        raise DataError(f"data: {path}: no {key!r} entry (a {layout.title} file has 'data' and {key!r})")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"data: {path}: {key!r} must be a list of ints") from None
    if labels.shape != (len(data),):
        raise DataError(f"data: {path}: {labels.size} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(f"data: {path}: labels out of range 0..{layout.num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def load_split(directory: Path, split: str, layout: Layout = CIFAR10) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3, 32, 32]`` and labels ``int64 [N]`` of one split, files in the release's order.

    ``directory`` is the release's folder (``layout.folder``) or the folder that holds it. CIFAR-10: ``"train"``
    is ``data_batch_1`` .. ``data_batch_5`` (50,000 images), ``"test"`` is ``test_batch`` (10,000). CIFAR-100:
    ``train`` (50,000) and ``test`` (10,000), labelled by their 100 fine classes.
    """
    if (directory / layout.folder).is_dir():
        directory = directory / layout.folder
    names = layout.train if split == "train" else layout.test
    parts = [read_batch(directory / name, layout) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

"""Readers for the IDX format of MNIST and Fashion-MNIST (plain files or their ``.gz`` versions).

An IDX file is a big-endian header -- two zero bytes, a type code (``0x08`` = unsigned byte), the number
of dimensions ``d`` -- then ``d`` 32-bit sizes, then the values. Image files have magic number 2051
(``0x00000803``, ``[N, rows, cols]``), label files 2049 (``0x00000801``, ``[N]``).
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from snnkit.data.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find(directory: Path, name: str) -> Path:
    """The path of ``name`` in ``directory``, or of ``name.gz`` when only that exists."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"data: {directory / name}: missing (also looked for {name}.gz)")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"data: {path}: cannot read ({exc})") from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The unsigned-byte array stored in the IDX file ``path``, whose magic number must be ``magic``.

    Returns a ``uint8`` array of the shape the header gives. Raises :class:`DataError` for a wrong magic
    number, a short header, or a data section whose length does not match the header.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"data: {path}: truncated header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"data: {path}: bad magic number {found} (expected {magic})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"data: {path}: truncated header ({len(raw)} bytes, expected {header})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"data: {path}: {'truncated' if len(raw) - header < expected else 'trailing bytes'}: header "
            f"{list(shape)} needs {expected} data bytes, file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_split(directory: Path, split: str, rows: int = 28, cols: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, rows, cols]`` (``uint8``, 0..255) and labels ``[N]`` (``uint8``, 0..9) of one split.

    ``split`` is ``"train"`` (``train-*``) or ``"test"`` (``t10k-*``); both files must agree on ``N``.
    """
    images_name, labels_name = _FILES[split]
    images_path, labels_path = find(directory, images_name), find(directory, labels_name)
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[1:] != (rows, cols):
        size = "x".join(str(s) for s in images.shape[1:])
        raise DataError(f"data: {images_path}: images are {size}, expected {rows}x{cols}")
    if len(labels) != len(images):
        raise DataError(
            f"data: {labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"data: {labels_path}: label {int(labels.max())} out of range 0..9")
    return images, labels

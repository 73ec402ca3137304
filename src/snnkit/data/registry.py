"""The named data sets, what each looks like, and :func:`load`.

Every set is split into ``"train"`` and ``"test"`` in a fixed order, so ``limit=N`` (a CLI's ``--limit N``)
always means the same first ``N`` samples of that split.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from snnkit.data import cifar, embedded, idx
from snnkit.data.errors import DataError

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set looks like to a model builder.

    input_shape: one sample's shape without batch or time (``(C, H, W)`` images, ``(C, L)`` signals,
    ``(F,)`` tabular features). num_classes: labels are ``0 .. num_classes - 1``. needs_data_dir: the files
    must be given by the user (``data_dir`` / ``--data-dir``); otherwise the set ships inside a package.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    needs_data_dir: bool
    description: str


_INFO = {
    i.name: i
    for i in (
        DatasetInfo("digits", (1, 8, 8), 10, False,
                    "scikit-learn handwritten digits, 8x8, 1,437 train / 360 test (stratified)"),
        DatasetInfo("breast_cancer", (30,), 2, False,
                    "scikit-learn Wisconsin breast cancer, 30 features, 455 train / 114 test (stratified)"),
        DatasetInfo("wine", (13,), 3, False,
                    "scikit-learn wine, 13 features, 142 train / 36 test (stratified)"),
        DatasetInfo("mnist1d", (1, embedded.MNIST1D_LENGTH), 10, False,
                    "MNIST-1D from the mnist1d generator (default args, seed 42), 4,000 train / 1,000 test"),
        DatasetInfo("mnist", (1, 28, 28), 10, True,
                    "MNIST from IDX files (train-*-ubyte, t10k-*-ubyte, or .gz) in data_dir"),
        DatasetInfo("fashion-mnist", (1, 28, 28), 10, True,
                    "Fashion-MNIST from IDX files (train-*-ubyte, t10k-*-ubyte, or .gz) in data_dir"),
        DatasetInfo("cifar10", (3, 32, 32), 10, True,
                    "CIFAR-10 python batches (cifar-10-batches-py/data_batch_1..5, test_batch) in data_dir"),
    )
}
DATASETS: tuple[str, ...] = tuple(_INFO)


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (one of :data:`DATASETS`); :class:`DataError` if unknown."""
    try:
        return _INFO[name]
    except KeyError:
        raise DataError(f"data: unknown data set {name!r} (known: {', '.join(DATASETS)})") from None


def _embedded(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    loader: Callable[[], embedded.Split4] = {
        "digits": embedded.digits,
        "breast_cancer": lambda: embedded.tabular("breast_cancer"),
        "wine": lambda: embedded.tabular("wine"),
        "mnist1d": embedded.mnist1d,
    }[name]
    x_train, y_train, x_test, y_test = loader()
    return (x_train, y_train) if split == "train" else (x_test, y_test)


def _from_files(name: str, split: str, data_dir: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    if data_dir is None:
        raise DataError(
            f"data: {name} is read from local files: give data_dir (--data-dir); {info(name).description}"
        )
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise DataError(f"data: {directory}: no such directory")
    if name == "cifar10":
        return cifar.load_split(directory, split)
    images, labels = idx.load_split(directory, split)
    return images[:, None], labels


def load(
    name: str, split: str = "train", limit: int | None = None, data_dir: str | Path | None = None
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The samples of one split of a named data set, in a fixed, deterministic order.

    Returns ``x`` (``float32``, ``[N, *info(name).input_shape]``, values in ``[0, 1]``) and ``y``
    (``int64 [N]``, ``0 .. num_classes - 1``). ``split`` is ``"train"`` or ``"test"``. ``limit=N`` keeps
    the first ``N`` samples of that split (all of them when the split is smaller). ``data_dir`` is required
    by the sets with ``needs_data_dir`` and ignored by the others. Image files are scaled by 1/255.

    Raises :class:`DataError` (a ``ValueError``) with one line naming the set, argument or file at fault.
    """
    import torch

    meta = info(name)
    if split not in SPLITS:
        raise DataError(f"data: split must be 'train' or 'test', not {split!r}")
    whole = isinstance(limit, (int, np.integer)) and not isinstance(limit, bool)
    if limit is not None and (not whole or limit < 1):
        raise DataError(f"data: limit must be a positive integer or None, not {limit!r}")
    if meta.needs_data_dir:
        x, y = _from_files(name, split, data_dir)
        x = x[:limit].astype(np.float32) / np.float32(255.0)
    else:
        x, y = _embedded(name, split)
        x = x[:limit].copy()
    return torch.from_numpy(x), torch.from_numpy(y[:limit].astype(np.int64))

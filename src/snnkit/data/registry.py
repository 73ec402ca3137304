"""The named data sets, what each looks like, and :func:`load`.

Every set is split into ``"train"`` and ``"test"`` in a fixed order, so ``limit=N`` (a CLI's ``--limit N``)
always means the same first ``N`` samples of that split.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from snnkit.data import cifar, embedded, events, idx, tiny_imagenet
from snnkit.data.errors import DataError

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set looks like to a model builder.

    input_shape: one sample's shape without batch or time (``(C, H, W)`` images, ``(C, L)`` signals,
    ``(F,)`` tabular features; for event frames the shape of one frame). num_classes: labels are
    ``0 .. num_classes - 1``. needs_data_dir: the files must be given by the user (``data_dir`` /
    ``--data-dir``); otherwise the set ships inside a package. event_frames: the samples are event frames with
    their own time axis, ``[T, *input_shape]`` with ``T`` the model's time steps (given to :func:`load` as
    ``timesteps``); models take them with the ``frames`` encoder instead of repeating one input over time.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    needs_data_dir: bool
    description: str
    event_frames: bool = False


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
        DatasetInfo("cifar100", (3, 32, 32), 100, True,
                    "CIFAR-100 python version (cifar-100-python/train, test; the 100 fine labels) in data_dir"),
        DatasetInfo("tiny-imagenet", (3, tiny_imagenet.SIZE, tiny_imagenet.SIZE), tiny_imagenet.NUM_CLASSES, True,
                    "Tiny-ImageNet-200 folders (tiny-imagenet-200/wnids.txt, train/<wnid>/images/*.JPEG, "
                    "val/images/*.JPEG with val/val_annotations.txt as the test split) in data_dir"),
        *(DatasetInfo(name, spec.input_shape, spec.num_classes, True,
                      f"{title} events from {spec.expected}, binned into T binary frames (tonic)", event_frames=True)
          for (name, spec), title in zip(events.SETS.items(), ("N-MNIST", "DVS128 Gesture", "CIFAR10-DVS"))),
    )
}
DATASETS: tuple[str, ...] = tuple(_INFO)


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (one of :data:`DATASETS`); :class:`DataError` if unknown."""
    try:
        return _INFO[name]
    except KeyError:
        raise DataError(f"data: unknown data set {name!r} (known: {', '.join(DATASETS)})") from None


def input_steps(name: str, model_config: dict) -> int:
    """The number of frames ``T`` to bin event set ``name`` into for a model of ``model_config`` (its
    ``timesteps``, default 8 as in ``snnkit.models.build``). DataError when the model's encoder does not fit the
    set: event frames carry their own time axis and need the ``frames`` encoder, which other sets cannot use."""
    from snnkit.models.build import DEFAULTS

    encoder = model_config.get("encoder", DEFAULTS["encoder"])
    encoder = encoder.get("name") if isinstance(encoder, dict) else str(encoder).partition(":")[0]
    if info(name).event_frames and encoder != "frames":
        raise DataError(f"data: {name} holds event frames with their own time axis: the model needs the frames "
                        f"encoder (--encoder frames), not {encoder!r}")
    if not info(name).event_frames and encoder == "frames":
        raise DataError(f"data: the frames encoder takes event frames [B, T, ...]; {name} has none (use direct, "
                        "poisson or latency)")
    return int(model_config.get("timesteps", DEFAULTS["timesteps"]))


def _embedded(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    loader: Callable[[], embedded.Split4] = {
        "digits": embedded.digits,
        "breast_cancer": lambda: embedded.tabular("breast_cancer"),
        "wine": lambda: embedded.tabular("wine"),
        "mnist1d": embedded.mnist1d,
    }[name]
    x_train, y_train, x_test, y_test = loader()
    return (x_train, y_train) if split == "train" else (x_test, y_test)


def _from_files(name: str, split: str, data_dir: str | Path | None, limit: int | None, timesteps: int | None
                ) -> tuple[np.ndarray, np.ndarray]:
    if data_dir is None:
        raise DataError(
            f"data: {name} is read from local files: give data_dir (--data-dir); {info(name).description}"
        )
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise DataError(f"data: {directory}: no such directory (expected {info(name).description})")
    if name in events.SETS:
        return events.load_split(name, directory, split, timesteps, limit)
    if name == "tiny-imagenet":
        return tiny_imagenet.load_split(directory, split, limit)
    if name in ("cifar10", "cifar100"):
        return cifar.load_split(directory, split, cifar.CIFAR100 if name == "cifar100" else cifar.CIFAR10)
    images, labels = idx.load_split(directory, split)
    return images[:, None], labels


def load(
    name: str, split: str = "train", limit: int | None = None, data_dir: str | Path | None = None,
    timesteps: int | None = None,
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The samples of one split of a named data set, in a fixed, deterministic order.

    Returns ``x`` (``float32``, ``[N, *info(name).input_shape]``, values in ``[0, 1]``; event sets
    ``[N, T, *input_shape]`` of 0/1 frames) and ``y`` (``int64 [N]``, ``0 .. num_classes - 1``). ``split`` is
    ``"train"`` or ``"test"``. ``limit=N`` keeps the first ``N`` samples of that split (all of them when the
    split is smaller). ``data_dir`` is required by the sets with ``needs_data_dir`` and ignored by the others.
    Image files are scaled by 1/255. ``timesteps``: the number of frames ``T`` the events of each sample are
    binned into, required by the sets with ``event_frames`` and ignored by the others.

    Raises :class:`DataError` (a ``ValueError``) with one line naming the set, argument or file at fault.
    """
    import torch

    meta = info(name)
    if split not in SPLITS:
        raise DataError(f"data: split must be 'train' or 'test', not {split!r}")
    whole = isinstance(limit, (int, np.integer)) and not isinstance(limit, bool)
    if limit is not None and (not whole or limit < 1):
        raise DataError(f"data: limit must be a positive integer or None, not {limit!r}")
    if meta.event_frames and (isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer))
                              or timesteps < 1):
        raise DataError(f"data: {name} is binned into the model's time steps: give timesteps >= 1, not {timesteps!r}")
    if meta.needs_data_dir:
        x, y = _from_files(name, split, data_dir, limit, timesteps)
        x = x[:limit].astype(np.float32)
        if not meta.event_frames:
            x /= np.float32(255.0)
    else:
        x, y = _embedded(name, split)
        x = x[:limit].copy()
    return torch.from_numpy(x), torch.from_numpy(y[:limit].astype(np.int64))

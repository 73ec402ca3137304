"""Data sets for snnkit: ``load(name, split, limit, data_dir) -> (x, y)`` and their shapes via ``info``.

Shipped with installed packages (no download, no files written): ``digits``, ``breast_cancer``, ``wine``
(scikit-learn) and ``mnist1d`` (generated). Read from a local ``data_dir``, never downloaded: ``mnist``,
``fashion-mnist`` (IDX files, plain or ``.gz``), ``cifar10`` and ``cifar100`` (python batches, read with a
restricted unpickler), ``tiny-imagenet`` (its JPEG folders, decoded with Pillow), and the event sets ``nmnist``,
``dvs-gesture`` and ``cifar10-dvs`` (their released files read with tonic, binned into ``T`` frames).
``x`` is ``float32`` in ``[0, 1]`` shaped ``[N, *input_shape]`` (event sets: ``[N, T, *input_shape]``); ``y`` is
``int64 [N]``. Training augmentation of the image sets: :mod:`snnkit.data.augment`. Importing this package does
not import torch; :func:`load` does.
"""
from __future__ import annotations

from snnkit.data.errors import DataError
from snnkit.data.registry import DATASETS, DatasetInfo, info, input_steps, load

__all__ = ["DATASETS", "DataError", "DatasetInfo", "info", "input_steps", "load"]

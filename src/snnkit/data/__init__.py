"""Data sets for snnkit: ``load(name, split, limit, data_dir) -> (x, y)`` and their shapes via ``info``.

Shipped with installed packages (no download, no files written): ``digits``, ``breast_cancer``, ``wine``
(scikit-learn) and ``mnist1d`` (generated). Read from a local ``data_dir``: ``mnist``, ``fashion-mnist``
(IDX files, plain or ``.gz``) and ``cifar10`` (python batches, read with a restricted unpickler).
``x`` is ``float32`` in ``[0, 1]`` shaped ``[N, *input_shape]``; ``y`` is ``int64 [N]``. Importing this
package does not import torch; :func:`load` does.
"""
from __future__ import annotations

from snnkit.data.errors import DataError
from snnkit.data.registry import DATASETS, DatasetInfo, info, load

__all__ = ["DATASETS", "DataError", "DatasetInfo", "info", "load"]

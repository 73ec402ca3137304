"""How one target's run compares with the reference run (pure functions on result records)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Agreement:
    """Agreement of a target's outputs with the reference's, on the reference time axis.

    predictions: fraction of samples with the same predicted class.
    output_spikes: fraction of output entries ``[B, T, C]`` that are equal.
    identical_samples: fraction of samples whose whole output spike train is equal.
    count_mae: mean over samples and classes of |output spike count - reference count|.
    steps_compared: steps compared (the reference's T, or fewer when the target returned fewer).
    """

    predictions: float
    output_spikes: float
    identical_samples: float
    count_mae: float
    steps_compared: int


def accuracy(predictions: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Fraction of correct predictions, or None without labels."""
    if labels is None:
        return None
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def agreement(outputs: np.ndarray, reference: np.ndarray) -> Agreement:
    """Compare aligned outputs ``[B, T', C]`` with reference outputs ``[B, T, C]``."""
    t = min(outputs.shape[1], reference.shape[1])
    a, r = np.asarray(outputs[:, :t], dtype=np.float64), np.asarray(reference[:, :t], dtype=np.float64)
    if a.shape != r.shape:
        raise ValueError(f"outputs of shape {list(a.shape)} cannot be compared with the reference's {list(r.shape)}")
    pa = a.sum(axis=1).argmax(axis=1)
    pr = r.sum(axis=1).argmax(axis=1)
    return Agreement(predictions=float(np.mean(pa == pr)), output_spikes=float(np.mean(a == r)),
                     identical_samples=float(np.mean(np.all(a == r, axis=(1, 2)))),
                     count_mae=float(np.mean(np.abs(a.sum(axis=1) - r.sum(axis=1)))), steps_compared=int(t))


def ratio(value: float, reference: float) -> float | None:
    """``value / reference`` (None when the reference is zero)."""
    return float(value) / float(reference) if reference else None

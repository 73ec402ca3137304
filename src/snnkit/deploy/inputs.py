"""Target inputs ``[B, T, ...]``: a data set encoded as the graph's metadata says, or an array from a file.

Every target (and ``snn-deploy``) gets its input from here, so all of them see the same spikes:

- :func:`encode` runs the encoder recorded in the graph (``metadata["encoder"]``: ``direct`` repeats the analog
  values over ``T``; ``poisson`` draws with its seed; ``latency`` one spike per value) on ``x [B, ...]``.
- :func:`dataset_input` loads a named data set's test split and encodes it.
- :func:`load_array` reads an ``.npy`` file holding ``[T, ...]`` or ``[B, T, ...]`` and checks it.

Graphs without an encoder in their metadata (third-party files) are fed ``direct``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snnkit.graph import DeployError
from snnkit import limits


@dataclass
class TargetInput:
    """What a target runs on: ``x [B, T, ...]`` float32 and, for data sets, the labels ``y [B]``."""

    x: np.ndarray
    y: np.ndarray | None = None
    source: str = ""
    encoder: dict | None = None

    @property
    def timesteps(self) -> int:
        return int(self.x.shape[1])


def encoder_spec(metadata: dict) -> dict:
    """The encoder recorded in the graph's metadata (``{"name": "direct"}`` when there is none)."""
    spec = metadata.get("encoder") or {"name": "direct"}
    if isinstance(spec, str):
        spec = {"name": spec}
    return dict(spec)


def graph_timesteps(metadata: dict, timesteps: int | None) -> int:
    """``timesteps`` if given, else the metadata's; DeployError when neither says."""
    t = timesteps if timesteps is not None else metadata.get("timesteps")
    if t is None:
        raise DeployError("the graph has no 'timesteps' in its metadata: give the number of steps (--timesteps)")
    t = int(t)
    if t < 1:
        raise DeployError(f"timesteps must be >= 1, not {t}")
    return t


def encode(x, metadata: dict, timesteps: int | None = None) -> np.ndarray:
    """Encode ``x [B, ...]`` (values in [0, 1]) into ``[B, T, ...]`` float32 with the graph's encoder."""
    import torch

    from snnkit.nn.encoders import build_encoder

    t = graph_timesteps(metadata, timesteps)
    x = np.asarray(x)
    limits.check(f"the encoded input [{x.shape[0]}, {t}, {', '.join(map(str, x.shape[1:]))}]",
                 2 * 4 * t * x.size)  # float32, the encoder's tensor and its numpy copy
    try:
        enc = build_encoder(encoder_spec(metadata), t)
    except (KeyError, TypeError, ValueError) as exc:
        raise DeployError(f"cannot build the graph's encoder {encoder_spec(metadata)} ({exc})") from None
    with torch.no_grad():
        return enc(torch.as_tensor(np.asarray(x), dtype=torch.float32)).numpy().astype(np.float32)


def dataset_input(name: str, metadata: dict, input_shape: tuple[int, ...], *, limit: int | None = None,
                  timesteps: int | None = None, data_dir: str | None = None, classes: int | None = None
                  ) -> TargetInput:
    """The test split of data set ``name`` encoded for a graph with the given metadata and input shape.

    classes: the graph's output size (``snnkit.graph.output_size``); a data set whose labels reach beyond it is
    refused (its accuracy would be meaningless)."""
    from snnkit import data

    info = data.info(name)
    if tuple(info.input_shape) != tuple(input_shape):
        raise DeployError(f"data set {name} has samples of shape {list(info.input_shape)}; the graph expects "
                          f"{list(input_shape)}")
    steps = graph_timesteps(metadata, timesteps) if info.event_frames else None  # event frames: binned into T
    x, y = data.load(name, "test", limit=limit, data_dir=data_dir, timesteps=steps)
    if classes is not None and y.numel() and int(y.max()) >= classes:
        raise DeployError(f"data set {name} has labels up to {int(y.max())}, but the graph's output has {classes} "
                          f"value{'s' * (classes != 1)} per step (one per class)")
    spec = encoder_spec(metadata)
    return TargetInput(encode(x, metadata, timesteps), y.numpy(), source=f"dataset {name} (test split)", encoder=spec)


def load_array(path: "str | Path", input_shape: tuple[int, ...], timesteps: int | None = None) -> TargetInput:
    """An ``.npy`` input of shape ``[T, *input_shape]`` or ``[B, T, *input_shape]`` (float, int or bool).

    DeployError naming the file for anything else (unreadable, wrong shape or dtype, NaN, a ``T`` that
    contradicts ``timesteps``).
    """
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"{path}: no such input file")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError/UnpicklingError
        raise DeployError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
    if not isinstance(x, np.ndarray):
        raise DeployError(f"{path}: holds several arrays (an .npz); give one .npy array")
    want = ", ".join(str(s) for s in input_shape)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
        raise DeployError(f"{path}: dtype {x.dtype} is not a real number type (float, int or bool)")
    n = len(input_shape)
    if x.ndim < n or tuple(x.shape[x.ndim - n:]) != tuple(input_shape):
        raise DeployError(f"{path}: shape {list(x.shape)} does not end with the graph's input shape [{want}]; "
                          f"expected [T, {want}] or [B, T, {want}]")
    if x.ndim == n + 1:
        x = x[None]
    elif x.ndim != n + 2:
        raise DeployError(f"{path}: shape {list(x.shape)}; expected [T, {want}] or [B, T, {want}]")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DeployError(f"{path}: shape {list(x.shape)} has no samples or no steps")
    if timesteps is not None and x.shape[1] != timesteps:
        raise DeployError(f"{path}: has {x.shape[1]} steps but --timesteps says {timesteps}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DeployError(f"{path}: holds NaN or infinite values")
    return TargetInput(x, None, source=str(path))

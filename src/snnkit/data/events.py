"""Event-camera data sets read from their files with ``tonic``'s readers, binned into ``T`` frames.

Every sample is a stream of events ``(x, y, t, p)``; ``tonic.transforms.ToFrame(n_time_bins=T)`` cuts the
sample's time span into ``T`` equal bins and counts the events of each polarity and pixel per bin, giving
``[T, 2, H, W]``. The counts are clipped to 1 (a pixel that saw at least one event of that polarity in that
bin spikes): frames are binary spike inputs with their own time axis, which the model takes as they are
(the ``frames`` encoder) instead of repeating one image over time. ``T`` must be the model's time steps.

Layouts read (``data_dir`` is the folder named below or the folder holding it; nothing is ever downloaded or
extracted: tonic's dataset constructors, which download when their check fails, are never called):

- ``nmnist`` (N-MNIST, 34x34, 10 classes, 60,000 / 10,000): the released ``Train/<digit>/*.bin`` and
  ``Test/<digit>/*.bin`` (40-bit events: 8-bit x, 8-bit y, 1-bit polarity, 23-bit time in microseconds), in
  ``NMNIST/`` as tonic stores them, or still zipped as tonic's ``train.zip`` / ``test.zip``; read by
  ``tonic.io.read_mnist_file``.
- ``dvs-gesture`` (DVS128 Gesture, 128x128, 11 classes, 1,077 / 264): tonic's preprocessed release,
  ``DVSGesture/ibmGestureTrain/user<NN>_<lighting>/<label>.npy`` (and ``ibmGestureTest``), read as
  ``tonic.datasets.DVSGesture`` reads a sample (columns x, y, p, t in ms).
- ``cifar10-dvs`` (CIFAR10-DVS, 128x128, 10 classes, 10,000 recordings): tonic's release extracted,
  ``CIFAR10DVS/<class>/*.aedat4`` with the ten class names, read as ``tonic.datasets.CIFAR10DVS`` reads a
  sample (needs the ``aedat`` package). It has no official split: the first 90 % of each class (in file-name
  order) is ``train``, the rest ``test`` (9,000 / 1,000): the usual 9:1 split of this set, made per class.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from snnkit.data.errors import DataError
from snnkit.graph.errors import first_line

TRAIN_FRACTION = 0.9
"""CIFAR10-DVS: the share of each class's recordings (first in file-name order) in the train split."""
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class EventSet:
    """One event data set: tonic's class (its name is tonic's folder), sensor ``(W, H, P)``, classes, layout."""

    tonic_class: str
    sensor_size: tuple[int, int, int]
    num_classes: int
    expected: str  # what the files look like, for error messages

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One frame's shape ``(P, H, W)``."""
        w, h, p = self.sensor_size
        return (p, h, w)


SETS = {
    "nmnist": EventSet("NMNIST", (34, 34, 2), 10, "Train/<digit>/*.bin and Test/<digit>/*.bin (or tonic's train.zip, "
                       "test.zip) in NMNIST/ or in data_dir"),
    "dvs-gesture": EventSet("DVSGesture", (128, 128, 2), 11, "ibmGestureTrain/ and ibmGestureTest/ of "
                            "user*_*/<label>.npy (tonic's DVSGesture release) in DVSGesture/ or in data_dir"),
    "cifar10-dvs": EventSet("CIFAR10DVS", (128, 128, 2), 10, f"{'/, '.join(CIFAR10_CLASSES)}/ of *.aedat4 (tonic's "
                            "CIFAR10DVS release, extracted) in CIFAR10DVS/ or in data_dir"),
}


def tonic():
    """The ``tonic`` package; DataError saying how to install it when it is absent."""
    try:
        import tonic as module
        import tonic.transforms  # noqa: F401
    except ImportError as exc:
        raise DataError(f"data: event data sets are read with the tonic package, which cannot be imported ({exc}); "
                        "install it: pip install --no-deps tonic importRosbag") from None
    return module


Source = tuple[Path, str | None]
"""Where one sample is: a file, or a zip archive and its member."""


def _root(directory: Path, spec: EventSet, marker: Callable[[Path], bool]) -> Path:
    for root in (directory / spec.tonic_class, directory):
        if marker(root):
            return root
    raise DataError(f"data: {directory}: no {spec.tonic_class} files (expected {spec.expected})")


def _nmnist_sources(directory: Path, split: str) -> tuple[list[Source], list[int]]:
    spec = SETS["nmnist"]
    folder, archive = ("Train", "train.zip") if split == "train" else ("Test", "test.zip")
    root = _root(directory, spec, lambda r: (r / folder).is_dir() or (r / archive).is_file())
    sources: list[Source] = []
    labels: list[int] = []
    if (root / folder).is_dir():
        for sub in sorted(p for p in (root / folder).iterdir() if p.is_dir()):
            if sub.name not in "0123456789" or len(sub.name) != 1:
                raise DataError(f"data: {sub}: not a digit folder (expected {folder}/0 .. {folder}/9)")
            found = sorted(sub.glob("*.bin"))
            sources += [(f, None) for f in found]
            labels += [int(sub.name)] * len(found)
    else:
        try:
            with zipfile.ZipFile(root / archive) as zf:
                names = sorted(n for n in zf.namelist() if n.endswith(".bin"))
        except (OSError, zipfile.BadZipFile) as exc:
            raise DataError(f"data: {root / archive}: not a readable zip file ({exc})") from None
        for name in names:
            parts = name.split("/")
            if len(parts) < 3 or parts[-3] != folder or parts[-2] not in list("0123456789"):
                raise DataError(f"data: {root / archive}: member {name} is not {folder}/<digit>/<file>.bin")
            sources.append((root / archive, name))
            labels.append(int(parts[-2]))
    if not sources:
        raise DataError(f"data: {root}: no .bin files in {folder}/<digit>/ (expected {spec.expected})")
    return sources, labels


def _gesture_sources(directory: Path, split: str) -> tuple[list[Source], list[int]]:
    spec = SETS["dvs-gesture"]
    folder = "ibmGestureTrain" if split == "train" else "ibmGestureTest"
    root = _root(directory, spec, lambda r: (r / folder).is_dir())
    sources: list[Source] = []
    labels: list[int] = []
    for sub in sorted(p for p in (root / folder).iterdir() if p.is_dir()):
        if not sub.name.startswith("user") or "_" not in sub.name:
            raise DataError(f"data: {sub}: not a user<NN>_<lighting> folder (expected {spec.expected})")
        for f in sorted(sub.glob("*.npy"), key=lambda p: (len(p.stem), p.stem)):
            if not f.stem.isdigit() or int(f.stem) >= spec.num_classes:
                raise DataError(f"data: {f}: the file name must be the label 0..{spec.num_classes - 1}")
            sources.append((f, None))
            labels.append(int(f.stem))
    if not sources:
        raise DataError(f"data: {root / folder}: no user*_*/<label>.npy files (expected {spec.expected})")
    return sources, labels


def _cifar10dvs_sources(directory: Path, split: str) -> tuple[list[Source], list[int]]:
    spec = SETS["cifar10-dvs"]
    root = _root(directory, spec,
                 lambda r: any((r / c).is_dir() or (r / f"{c}.zip").is_file() for c in CIFAR10_CLASSES))
    sources: list[Source] = []
    labels: list[int] = []
    for label, name in enumerate(CIFAR10_CLASSES):
        if not (root / name).is_dir():
            zipped = f" ({name}.zip is there: extract it)" if (root / f"{name}.zip").is_file() else ""
            raise DataError(f"data: {root / name}: missing{zipped} (expected {spec.expected})")
        found = sorted((root / name).glob("*.aedat4"))
        if len(found) < 2:
            raise DataError(f"data: {root / name}: {len(found)} .aedat4 files; a train and a test split need 2 or more")
        cut = min(max(1, int(len(found) * TRAIN_FRACTION)), len(found) - 1)
        chosen = found[:cut] if split == "train" else found[cut:]
        sources += [(f, None) for f in chosen]
        labels += [label] * len(chosen)
    return sources, labels


def _tonic_item(class_name: str, path: Path) -> np.ndarray:
    """The events of one file as the tonic data set class reads a sample (its ``__getitem__``), on an instance
    made without ``__init__`` (the constructor is where tonic decides to download)."""
    cls = getattr(tonic().datasets, class_name)
    dataset = cls.__new__(cls)
    dataset.data, dataset.targets = [str(path)], [0]
    dataset.transform = dataset.target_transform = dataset.transforms = None
    events, _ = dataset[0]
    return events


def read_events(name: str, source: Source, archives: dict[Path, zipfile.ZipFile] | None = None) -> np.ndarray:
    """The events of one sample of set ``name`` (a structured array with fields x, y, t, p).

    archives: zip files already open, by path (a member's archive is opened once and kept there)."""
    path, member = source
    if name == "nmnist":
        from tonic.io import read_mnist_file

        if member:
            archives = {} if archives is None else archives
            archive = archives.get(path) or archives.setdefault(path, zipfile.ZipFile(path))
            raw = archive.read(member)
        else:
            raw = path.read_bytes()
        if len(raw) % 5:
            raise ValueError(f"{len(raw)} bytes is not a whole number of 40-bit (5-byte) events")
        return read_mnist_file(io.BytesIO(raw), dtype=tonic().datasets.NMNIST.dtype, is_stream=True)
    if name == "cifar10-dvs":
        try:
            import aedat  # noqa: F401
        except ImportError:
            raise DataError(f"data: {path}: reading .aedat4 files needs the aedat package (pip install aedat)"
                            ) from None
    return _tonic_item(SETS[name].tonic_class, path)


def frames(name: str, events: np.ndarray, timesteps: int) -> np.ndarray:
    """``uint8 [T, P, H, W]`` binary frames of one sample: ``ToFrame(n_time_bins=T)`` counts clipped to 1."""
    spec = SETS[name]
    w, h, _ = spec.sensor_size
    if len(events) and (events["x"].max() >= w or events["y"].max() >= h or events["x"].min() < 0
                        or events["y"].min() < 0):
        raise ValueError(f"events at pixels outside the {w}x{h} sensor")
    counts = tonic().transforms.ToFrame(sensor_size=spec.sensor_size, n_time_bins=timesteps)(events)
    out = np.minimum(np.asarray(counts), 1).astype(np.uint8)
    if out.shape != (timesteps, *spec.input_shape):
        raise ValueError(f"binned into {list(out.shape)} frames, expected {[timesteps, *spec.input_shape]} (a "
                         f"recording too short for {timesteps} time bins?)")
    return out


def load_split(name: str, directory: Path, split: str, timesteps: int, limit: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``uint8 [N, T, P, H, W]`` (0/1) and labels ``int64 [N]`` of one split of event set ``name``.

    ``limit`` reads only the first ``limit`` samples of the split's fixed order (folders and files sorted).
    DataError naming the file for a file that cannot be read or binned.
    """
    from tqdm.auto import tqdm

    tonic()
    find = {"nmnist": _nmnist_sources, "dvs-gesture": _gesture_sources, "cifar10-dvs": _cifar10dvs_sources}[name]
    sources, labels = find(directory, split)
    sources, labels = sources[:limit], labels[:limit]
    out = np.empty((len(sources), timesteps, *SETS[name].input_shape), dtype=np.uint8)
    archives: dict[Path, zipfile.ZipFile] = {}
    try:
        for i, source in enumerate(tqdm(sources, desc=f"bin {name} {split} events", unit="sample", disable=None,
                                        leave=False)):
            where = f"{source[0]}:{source[1]}" if source[1] else str(source[0])
            try:
                out[i] = frames(name, read_events(name, source, archives), timesteps)
            except DataError:
                raise
            except Exception as exc:  # tonic's readers raise many types for a bad file; each means "bad file"
                raise DataError(f"data: {where}: not a readable {name} sample ({first_line(exc)})") from None
    finally:
        for archive in archives.values():
            archive.close()
    return out, np.asarray(labels, dtype=np.int64)

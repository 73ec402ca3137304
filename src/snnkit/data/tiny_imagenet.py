"""Reader for Tiny-ImageNet-200 in its released folder layout (``tiny-imagenet-200``).

```
tiny-imagenet-200/wnids.txt                      200 WordNet ids, one a line: label i is line i
tiny-imagenet-200/train/<wnid>/images/*.JPEG     500 images per class (100,000)
tiny-imagenet-200/val/images/*.JPEG              10,000 images
tiny-imagenet-200/val/val_annotations.txt        <file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1> per image
```
The labelled ``val`` split serves as ``"test"`` (the released ``test`` folder has no labels). Images are 64x64
JPEGs, a few of them greyscale; they are decoded with Pillow into RGB, ``uint8 [N, 3, 64, 64]``. Samples come
in a fixed order: train by class (wnids.txt order), then file name; val by file name. Decoding the 100,000
training images takes minutes, so a progress bar is shown on a terminal.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from snnkit.data.errors import DataError
from snnkit.graph.errors import first_line

FOLDER = "tiny-imagenet-200"
SIZE = 64
NUM_CLASSES = 200
_EXPECTED = (f"{FOLDER}/wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt")


def _root(directory: Path) -> Path:
    root = directory / FOLDER if (directory / FOLDER).is_dir() else directory
    if not (root / "wnids.txt").is_file():
        raise DataError(f"data: {root / 'wnids.txt'}: missing (expected {_EXPECTED} in {directory})")
    return root


def read_wnids(path: Path) -> list[str]:
    """The class ids of ``wnids.txt`` in file order (label ``i`` is line ``i``); DataError if not 200 distinct."""
    try:
        wnids = [line.strip() for line in path.read_text(encoding="ascii").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"data: {path}: cannot read ({exc})") from None
    if len(wnids) != NUM_CLASSES or len(set(wnids)) != len(wnids):
        raise DataError(f"data: {path}: expected {NUM_CLASSES} distinct class ids, found {len(set(wnids))} distinct "
                        f"in {len(wnids)} lines")
    return wnids


def _val_annotations(path: Path, labels: dict[str, int]) -> dict[str, int]:
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        raise DataError(f"data: {path}: missing (the val split's labels: <file> <wnid> <box> per line)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"data: {path}: cannot read ({exc})") from None
    out = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in labels:
            raise DataError(f"data: {path}: line {number}: expected <file>\\t<wnid>... with a wnid of wnids.txt")
        out[fields[0]] = labels[fields[1]]
    return out


def _files(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    wnids = read_wnids(root / "wnids.txt")
    labels = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        files, targets = [], []
        for i, wnid in enumerate(wnids):
            folder = root / "train" / wnid / "images"
            found = sorted(folder.glob("*.JPEG"))
            if not found:
                raise DataError(f"data: {folder}: no *.JPEG images of class {wnid} (expected {_EXPECTED})")
            files += found
            targets += [i] * len(found)
        return files, np.asarray(targets, dtype=np.int64)
    folder = root / "val" / "images"
    annotations = _val_annotations(root / "val" / "val_annotations.txt", labels)
    files = sorted(folder.glob("*.JPEG"))
    if not files:
        raise DataError(f"data: {folder}: no *.JPEG images (expected {_EXPECTED})")
    unlabelled = [f.name for f in files if f.name not in annotations]
    if unlabelled:
        raise DataError(f"data: {root / 'val' / 'val_annotations.txt'}: no label for {unlabelled[0]}"
                        f"{f' and {len(unlabelled) - 1} more images' if len(unlabelled) > 1 else ''}")
    return files, np.asarray([annotations[f.name] for f in files], dtype=np.int64)


def decode(path: Path) -> np.ndarray:
    """One image as ``uint8 [3, 64, 64]`` (greyscale converted to RGB); DataError for anything else."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"data: {path}: missing") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"data: {path}: not a readable image ({first_line(exc)})") from None
    if rgb.size != (SIZE, SIZE):
        raise DataError(f"data: {path}: image is {rgb.size[0]}x{rgb.size[1]}, expected {SIZE}x{SIZE}")
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def load_split(directory: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3, 64, 64]`` and labels ``int64 [N]`` (0..199) of ``"train"`` or ``"test"`` (= val).

    ``directory`` is ``tiny-imagenet-200`` or the folder that holds it; ``limit`` decodes only the first
    ``limit`` images of the split's fixed order.
    """
    from tqdm.auto import tqdm

    root = _root(directory)
    files, labels = _files(root, split)
    files, labels = files[:limit], labels[:limit]
    images = np.empty((len(files), 3, SIZE, SIZE), dtype=np.uint8)
    for i, path in enumerate(tqdm(files, desc=f"decode tiny-imagenet {split}", unit="img", disable=None,
                                  leave=False)):
        images[i] = decode(path)
    return images, labels

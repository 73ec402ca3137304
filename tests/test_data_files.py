"""snnkit.data from files in each set's released format, written here a few samples at a time: CIFAR-100 pickles,
Tiny-ImageNet JPEG folders, N-MNIST 40-bit .bin events (folders and tonic's zip), DVS-Gesture .npy events as
tonic's release stores them, CIFAR10-DVS .aedat4 files; the event frames, the training augmentation, and one
``snn-train`` run on each."""
from __future__ import annotations

import json
import pickle
import struct
import zipfile
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from snnkit.data import DataError, info, input_steps, load
from snnkit.data.augment import RECIPES, Augmentation, crop_flip

RNG = np.random.default_rng(2026)
TONIC = find_spec("tonic") is not None
AEDAT = find_spec("aedat") is not None
needs_tonic = pytest.mark.skipif(not TONIC, reason="the tonic package is not installed (pip install --no-deps tonic "
                                 "importRosbag)")
needs_aedat = pytest.mark.skipif(not (TONIC and AEDAT), reason="tonic or aedat (the .aedat4 reader tonic uses for "
                                 "CIFAR10-DVS) is not installed")


def _one_line(err: pytest.ExceptionInfo, *words: str) -> str:
    message = str(err.value)
    assert message.startswith("data: ") and "\n" not in message, message
    for w in words:
        assert w in message, message
    return message


# ---------------------------------------------------------------- CIFAR-100


def _cifar100_dir(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``cifar-100-python/train`` and ``test`` pickled as the release: protocol 2, str keys, numpy arrays."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", 6), ("test", 4)):
        images = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in RNG.integers(0, 100, n)]
        fine[0] = 99  # the top class is a valid label
        batch = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{split}ing batch 1 of 1",
                 "fine_labels": fine, "coarse_labels": [v // 5 for v in fine], "data": images}
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
        out[split] = (images, np.asarray(fine))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}, protocol=2))
    return out


def test_cifar100_loads_fine_labels(tmp_path):
    arrays = _cifar100_dir(tmp_path)
    for split, (images, fine) in arrays.items():
        for where in (tmp_path, tmp_path / "cifar-100-python"):
            x, y = load("cifar100", split, data_dir=where)
            assert x.dtype == torch.float32 and tuple(x.shape) == (len(fine), 3, 32, 32)
            assert np.array_equal(x.numpy(), images.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
            assert np.array_equal(y.numpy(), fine)
    assert info("cifar100").num_classes == 100 and info("cifar100").input_shape == (3, 32, 32)


@pytest.mark.nonnumeric
@pytest.mark.parametrize("content, words", [
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, "no 'fine_labels' entry"),
    ({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 100]}, "labels out of range 0..99"),
    (None, "not a valid CIFAR-100 batch"),
])
def test_cifar100_bad_file_is_one_line(tmp_path, content, words):
    _cifar100_dir(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    path.write_bytes(path.read_bytes()[:50] if content is None else pickle.dumps(content, protocol=2))
    with pytest.raises(DataError) as err:
        load("cifar100", "test", data_dir=tmp_path)
    assert _one_line(err, words).startswith(f"data: {path}: ")


@pytest.mark.nonnumeric
def test_cifar100_uses_the_restricted_unpickler(tmp_path):
    import os

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    _cifar100_dir(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(pickle.dumps({"data": Hostile()}, protocol=2))
    with pytest.raises(DataError) as err:
        load("cifar100", "train", data_dir=tmp_path)
    _one_line(err, "forbidden global")
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- Tiny-ImageNet


def _smooth_image(seed: int) -> np.ndarray:
    """A 64x64 RGB image of gradients (JPEG keeps it within a few levels)."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    channels = [(a * xx + b * yy + c) % 256 for a, b, c in r.integers(0, 3, (3, 3))]
    return np.stack(channels, -1).astype(np.uint8)


def _tiny_imagenet_dir(root: Path, per_class: int = 1) -> dict[str, tuple[list[np.ndarray], list[int]]]:
    """The released layout: wnids.txt, train/<wnid>/images/<wnid>_<i>.JPEG, val/images + val_annotations.txt."""
    from PIL import Image

    base = root / "tiny-imagenet-200"
    wnids = [f"n{10_000_000 + 7 * i:08d}" for i in range(200)]
    order = RNG.permutation(200)  # wnids.txt order is not sorted order: labels follow the file
    (base / "train").mkdir(parents=True)
    (base / "wnids.txt").write_text("".join(f"{wnids[i]}\n" for i in order))
    (base / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in wnids))
    out: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    for label, i in enumerate(order):
        folder = base / "train" / wnids[i] / "images"
        folder.mkdir(parents=True)
        (base / "train" / wnids[i] / f"{wnids[i]}_boxes.txt").write_text("")
        for k in range(per_class):
            pixels = _smooth_image(1000 * label + k)
            Image.fromarray(pixels).save(folder / f"{wnids[i]}_{k}.JPEG", quality=95)
            out["train"][0].append(pixels)
            out["train"][1].append(label)
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for k, label in enumerate([5, 0, 199, 42]):
        name = f"val_{k}.JPEG"
        pixels = _smooth_image(99_000 + k)
        if k == 1:  # a few released images are greyscale
            pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
            Image.fromarray(pixels[:, :, 0], mode="L").save(base / "val" / "images" / name, quality=95)
        else:
            Image.fromarray(pixels).save(base / "val" / "images" / name, quality=95)
        lines.append(f"{name}\t{wnids[order[label]]}\t0\t0\t63\t63\n")
        out["test"][0].append(pixels)
        out["test"][1].append(label)
    (base / "val" / "val_annotations.txt").write_text("".join(reversed(lines)))
    return out


def test_tiny_imagenet_loads_folders(tmp_path):
    arrays = _tiny_imagenet_dir(tmp_path)
    for split, (images, labels) in arrays.items():
        x, y = load("tiny-imagenet", split, data_dir=tmp_path)
        assert x.dtype == torch.float32 and tuple(x.shape) == (len(labels), 3, 64, 64)
        assert y.tolist() == labels
        want = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255
        assert float(np.abs(x.numpy() - want).mean()) < 3 / 255  # JPEG at quality 95
        assert float(x.min()) >= 0 and float(x.max()) <= 1
    x, y = load("tiny-imagenet", "train", limit=3, data_dir=tmp_path / "tiny-imagenet-200")
    assert len(x) == 3 and y.tolist() == [0, 1, 2]


@pytest.mark.nonnumeric
@pytest.mark.parametrize("fault, words", [
    ("no wnids", "wnids.txt: missing (expected tiny-imagenet-200/wnids.txt, train/<wnid>/images/*.JPEG"),
    ("short wnids", "expected 200 distinct class ids"),
    ("corrupt jpeg", "not a readable image"),
    ("wrong size", "image is 32x32, expected 64x64"),
    ("unlabelled val", "no label for val_0.JPEG"),
    ("bad annotation", "line 1: expected <file>"),
])
def test_tiny_imagenet_faults_are_one_line(tmp_path, fault, words):
    from PIL import Image

    _tiny_imagenet_dir(tmp_path)
    base = tmp_path / "tiny-imagenet-200"
    split = "test"
    if fault == "no wnids":
        (base / "wnids.txt").unlink()
    elif fault == "short wnids":
        (base / "wnids.txt").write_text("n1\nn2\n")
    elif fault == "corrupt jpeg":
        (base / "val" / "images" / "val_2.JPEG").write_bytes(b"\xff\xd8\xff garbage")
    elif fault == "wrong size":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(base / "val" / "images" / "val_3.JPEG")
    elif fault == "unlabelled val":
        annotations = base / "val" / "val_annotations.txt"
        annotations.write_text("".join(line + "\n" for line in annotations.read_text().splitlines()
                                       if not line.startswith("val_0")))
    elif fault == "bad annotation":
        (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn_unknown\t0\t0\t1\t1\n")
    with pytest.raises(DataError) as err:
        load("tiny-imagenet", split, data_dir=tmp_path)
    _one_line(err, words)


# ---------------------------------------------------------------- event data


def _binned(events: list[tuple[int, int, int, int]], steps: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Expected 0/1 frames ``[T, P, H, W]`` of events ``(x, y, p, t)``: tonic's n_time_bins cut of the span
    ``t_max - t_min`` into ``T`` windows of ``(t_max - t_min) // T``, each ``[start, end)``."""
    t0 = min(e[3] for e in events)
    window = (max(e[3] for e in events) - t0) // steps
    out = np.zeros((steps, *shape), np.float32)
    for x, y, p, t in events:
        k = (t - t0) // window
        if k < steps:
            out[k, p, y, x] = 1
    return out


def _random_events(n: int, size: int, span: int, seed: int) -> list[tuple[int, int, int, int]]:
    r = np.random.default_rng(seed)
    times = np.sort(r.integers(0, span, n))
    times[0], times[-1] = 0, span  # a fixed span: bins of span // T
    events = [(int(r.integers(size)), int(r.integers(size)), int(r.integers(2)), int(t)) for t in times]
    return events[:2] + [events[2][:3] + (events[1][3],)] * 3 + events[2:]  # 3 events at one pixel in one bin


def _nmnist_bytes(events) -> bytes:
    """The released 40-bit format: x, y, then polarity (bit 7) and a 23-bit microsecond time, big-endian."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def _nmnist_dir(root: Path, zipped: bool = False) -> dict[str, tuple[list, list[int]]]:
    base = root / "NMNIST"
    base.mkdir(parents=True)
    out: dict[str, tuple[list, list[int]]] = {}
    for split, folder, digits in (("train", "Train", [3, 0, 9, 3, 7, 1]), ("test", "Test", [8, 2, 5])):
        files: dict[str, bytes] = {}
        for k, digit in enumerate(digits):
            events = _random_events(40, 34, 300_000, seed=100 * len(folder) + k)
            files[f"{folder}/{digit}/{k:05d}.bin"] = _nmnist_bytes(events)
        if zipped:
            with zipfile.ZipFile(base / f"{split}.zip", "w") as zf:
                for name, raw in files.items():
                    zf.writestr(name, raw)
        else:
            for name, raw in files.items():
                (base / name).parent.mkdir(parents=True, exist_ok=True)
                (base / name).write_bytes(raw)
        ordered = sorted(files)  # folders by digit, then files by name
        out[split] = ([_nmnist_events(files[n]) for n in ordered], [int(n.split("/")[1]) for n in ordered])
    return out


def _nmnist_events(raw: bytes) -> list[tuple[int, int, int, int]]:
    b = np.frombuffer(raw, np.uint8).astype(int).reshape(-1, 5)
    return [(r[0], r[1], r[2] >> 7, ((r[2] & 0x7F) << 16) | (r[3] << 8) | r[4]) for r in b]


def _assert_binned(name: str, root: Path, expected: dict, steps: int, frame: tuple[int, ...]) -> None:
    """Each split of event set ``name`` in ``root`` loads as ``expected`` (split -> (events, labels)) says: one
    float32 sample ``[steps, *frame]`` per recording, binned exactly as :func:`_binned` bins its events."""
    for split, (events, labels) in expected.items():
        x, y = load(name, split, data_dir=root, timesteps=steps)
        assert tuple(x.shape) == (len(labels), steps, *frame) and x.dtype == torch.float32
        assert y.tolist() == labels
        for i, ev in enumerate(events):
            assert np.array_equal(x[i].numpy(), _binned(ev, steps, frame)), (split, i)


@needs_tonic
@pytest.mark.parametrize("zipped", [False, True], ids=["folders", "tonic-zip"])
def test_nmnist_bins_events_into_frames(tmp_path, zipped):
    _assert_binned("nmnist", tmp_path, _nmnist_dir(tmp_path, zipped), 5, (2, 34, 34))
    x3, _ = load("nmnist", "train", limit=2, data_dir=tmp_path / "NMNIST", timesteps=3)
    assert tuple(x3.shape) == (2, 3, 2, 34, 34) and set(np.unique(x3.numpy())) <= {0.0, 1.0}


def _gesture_dir(root: Path) -> dict[str, tuple[list, list[int]]]:
    """tonic's DVSGesture release: ibmGesture{Train,Test}/user<NN>_<lighting>/<label>.npy, columns x, y, p, t (ms)."""
    out = {}
    for split, folder, users in (("train", "ibmGestureTrain", {"user01_fluorescent": [0, 4, 10], "user02_led": [2]}),
                                 ("test", "ibmGestureTest", {"user24_lab": [1, 7]})):
        events_of, labels = [], []
        for user, gestures in users.items():
            (root / "DVSGesture" / folder / user).mkdir(parents=True)
            for label in gestures:
                ev = _random_events(60, 128, 6_000, seed=label + 50 * len(user))
                array = np.asarray([(x, y, p, t) for x, y, p, t in ev], dtype=np.int64)
                np.save(root / "DVSGesture" / folder / user / f"{label}.npy", array)
                events_of.append([(x, y, p, t * 1000) for x, y, p, t in ev])
                labels.append(label)
        out[split] = (events_of, labels)
    return out


@needs_tonic
def test_dvs_gesture_bins_events_into_frames(tmp_path):
    _assert_binned("dvs-gesture", tmp_path, _gesture_dir(tmp_path), 4, (2, 128, 128))


def _flatbuffer_events(events) -> bytes:
    """An AEDAT 4 events packet: a size-prefixed flatbuffer ``EventPacket`` (identifier "EVTS") holding a vector
    of 16-byte ``Event`` structs (int64 t, int16 x, int16 y, bool on, 3 bytes padding), laid out by hand. Byte
    positions counted from the size prefix: root offset at 4 (-> table at 20), identifier at 8, vtable at 12
    (its size, the table's size, field 0 at +4), table at 20 (back 8 to the vtable; forward 4 to the vector at
    28), the vector's length at 28 and its elements from 32 (8-byte aligned)."""
    body = struct.pack("<I", 16) + b"EVTS" + struct.pack("<HHH", 6, 8, 4) + b"\0\0" + struct.pack("<iI", 8, 4)
    body += struct.pack("<I", len(events))
    for x, y, p, t in events:
        body += struct.pack("<qhh?3x", t, x, y, bool(p))
    return struct.pack("<I", len(body)) + body


def _aedat4(events, size: int = 128) -> bytes:
    """A whole .aedat4 file: magic, the IOHeader flatbuffer (no compression, the XML description of one
    128x128 events stream), then one packet (stream id 0, byte count, the events flatbuffer)."""
    description = ('<dv version="2.0"><node name="outInfo" path="/mainloop/output/outInfo/"><node name="0" '
                   'path="/mainloop/output/outInfo/0/"><attr key="typeIdentifier" type="string">EVTS</attr>'
                   f'<node name="info" path="/mainloop/output/outInfo/0/info/"><attr key="sizeX" type="int">{size}'
                   f'</attr><attr key="sizeY" type="int">{size}</attr></node></node></node></dv>').encode()
    header = struct.pack("<I", 20) + b"IOHE"  # root table at 20
    header += struct.pack("<HHHHH", 10, 8, 0, 0, 4) + b"\0\0"  # vtable at 8: compression, position default
    header += struct.pack("<iI", 20 - 8, 28 - 24)  # table at 20: vtable back at 8; the string at 28
    header += struct.pack("<I", len(description)) + description + b"\0"
    header += b"\0" * (-len(header) % 4)
    packet = _flatbuffer_events(events)
    return b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(header)) + header + struct.pack("<iI", 0, len(packet)) + packet


CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _cifar10dvs_dir(root: Path, per_class: int = 2) -> dict[str, tuple[list, list[int]]]:
    """tonic's CIFAR10DVS release extracted: CIFAR10DVS/<class>/cifar10_<class>_<i>.aedat4."""
    out: dict[str, tuple[list, list[int]]] = {"train": ([], []), "test": ([], [])}
    for label, name in enumerate(CLASSES):
        (root / "CIFAR10DVS" / name).mkdir(parents=True)
        for k in range(per_class):
            ev = _random_events(30, 128, 1_000_000, seed=10 * label + k)
            (root / "CIFAR10DVS" / name / f"cifar10_{name}_{k}.aedat4").write_bytes(_aedat4(ev))
            split = "train" if k < per_class - 1 else "test"  # 90 % of 2 files rounds to 1 train file
            out[split][0].append(ev)
            out[split][1].append(label)
    return out


@needs_aedat
def test_cifar10_dvs_reads_aedat4_and_splits_per_class(tmp_path):
    expected = _cifar10dvs_dir(tmp_path)
    assert all(labels == list(range(10)) for _, labels in expected.values())  # one file per class in each split
    _assert_binned("cifar10-dvs", tmp_path, expected, 4, (2, 128, 128))


@needs_tonic
@pytest.mark.nonnumeric
def test_event_faults_are_one_line_and_never_download(tmp_path, monkeypatch):
    import tonic.download_utils

    def no_download(*args, **kwargs):
        raise AssertionError("tonic was asked to download")

    monkeypatch.setattr(tonic.download_utils, "download_url", no_download)
    monkeypatch.setattr(tonic.Dataset, "download", no_download)
    with pytest.raises(DataError) as err:  # empty folder: what is expected
        load("nmnist", "train", data_dir=tmp_path, timesteps=4)
    _one_line(err, str(tmp_path), "no NMNIST files", "Train/<digit>/*.bin")
    with pytest.raises(DataError) as err:
        load("dvs-gesture", "test", data_dir=tmp_path, timesteps=4)
    _one_line(err, "ibmGestureTrain/ and ibmGestureTest/")
    with pytest.raises(DataError) as err:
        load("cifar10-dvs", "train", data_dir=tmp_path, timesteps=4)
    _one_line(err, "airplane/", ".aedat4")
    with pytest.raises(DataError) as err:
        load("nmnist", "train", data_dir=tmp_path)
    _one_line(err, "give timesteps")

    _nmnist_dir(tmp_path)
    bad = tmp_path / "NMNIST" / "Train" / "3" / "00000.bin"
    bad.write_bytes(bad.read_bytes()[:-2])
    with pytest.raises(DataError) as err:
        load("nmnist", "train", data_dir=tmp_path, timesteps=4)
    _one_line(err, str(bad), "not a whole number of 40-bit (5-byte) events")
    bad.write_bytes(_nmnist_bytes([(40, 1, 0, 0), (1, 1, 0, 100)]))
    with pytest.raises(DataError) as err:
        load("nmnist", "train", data_dir=tmp_path, timesteps=4)
    _one_line(err, str(bad), "outside the 34x34 sensor")
    (tmp_path / "NMNIST" / "Test" / "x").mkdir()
    with pytest.raises(DataError) as err:
        load("nmnist", "test", data_dir=tmp_path, timesteps=4)
    _one_line(err, "not a digit folder")

    _gesture_dir(tmp_path)
    bad = tmp_path / "DVSGesture" / "ibmGestureTest" / "user24_lab" / "7.npy"
    bad.write_bytes(b"not numpy")
    with pytest.raises(DataError) as err:
        load("dvs-gesture", "test", data_dir=tmp_path, timesteps=4)
    _one_line(err, str(bad), "not a readable dvs-gesture sample")

    (tmp_path / "CIFAR10DVS").mkdir()
    (tmp_path / "CIFAR10DVS" / "airplane.zip").write_bytes(b"PK")
    with pytest.raises(DataError) as err:
        load("cifar10-dvs", "train", data_dir=tmp_path, timesteps=4)
    _one_line(err, "airplane.zip is there: extract it")


@needs_aedat
@pytest.mark.nonnumeric
def test_corrupt_aedat4_is_one_line(tmp_path):
    _cifar10dvs_dir(tmp_path)
    bad = tmp_path / "CIFAR10DVS" / "bird" / "cifar10_bird_0.aedat4"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError) as err:
        load("cifar10-dvs", "train", data_dir=tmp_path, timesteps=4)
    _one_line(err, str(bad), "not a readable cifar10-dvs sample")


@pytest.mark.nonnumeric
def test_encoder_must_fit_the_data():
    assert input_steps("nmnist", {"encoder": {"name": "frames"}, "timesteps": 6}) == 6
    assert input_steps("cifar10", {"timesteps": 3}) == 3
    with pytest.raises(DataError, match="needs the frames encoder"):
        input_steps("dvs-gesture", {"encoder": {"name": "direct"}})
    with pytest.raises(DataError, match="cifar100 has none"):
        input_steps("cifar100", {"encoder": "frames"})
    assert info("nmnist").event_frames and not info("cifar10").event_frames


# ---------------------------------------------------------------- augmentation


def test_crop_flip_moves_pixels_as_drawn():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    gen = torch.Generator().manual_seed(5)
    out = crop_flip(x, 2, True, gen)
    gen.manual_seed(5)
    offsets = torch.randint(0, 5, (2, 2), generator=gen).T  # drawn [B, 2]: (row, column) offsets per sample
    flips = torch.rand(2, generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        oy, ox = int(offsets[0, b]), int(offsets[1, b])
        want = padded[b, :, oy:oy + 6, ox:ox + 6]
        assert torch.equal(out[b], want.flip(-1) if flips[b] else want)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_crop_flip_of_a_share_is_that_share_of_the_whole_batch():
    """Under --distributed each rank augments its share of a global batch: its rows must be the rows the whole
    batch would get, and every rank's generator must stay in step (snnkit.distributed.draw)."""
    from snnkit import distributed

    x = torch.rand(5, 3, 6, 6)
    whole = crop_flip(x, 2, True, torch.Generator().manual_seed(3))
    for shares in ([(0, 3), (3, 5)], [(0, 5), (5, 5)]):  # two ranks; one with an empty share
        gens = [torch.Generator().manual_seed(3) for _ in shares]
        parts = []
        for (lo, hi), gen in zip(shares, gens):
            with distributed.batch_slice(5, lo, hi):
                parts.append(crop_flip(x[lo:hi], 2, True, gen))
        assert torch.equal(torch.cat(parts), whole)
        assert torch.equal(gens[0].get_state(), gens[1].get_state())


def test_augmentation_is_seeded_resumable_and_off_where_it_should_be():
    x = torch.rand(16, 3, 32, 32)
    a, b = Augmentation.for_training("cifar10", None, seed=3), Augmentation.for_training("cifar10", True, seed=3)
    first = a(x)
    assert torch.equal(first, b(x)) and not torch.equal(first, x)
    state = a.get_state()
    second = a(x)
    assert not torch.equal(second, first)  # fresh draws per batch
    c = Augmentation.for_training("cifar10", None, seed=3)
    c.set_state(state)
    assert torch.equal(c(x), second)  # a resumed generator continues the same sequence
    assert not torch.equal(Augmentation.for_training("cifar10", None, seed=4)(x), first)
    for off in (Augmentation.for_training("cifar10", False, 3), Augmentation.for_training("digits", None, 3),
                Augmentation.for_training("nmnist", None, 3)):
        assert not off.enabled and off(x) is x
    assert set(RECIPES) == {"cifar10", "cifar100", "tiny-imagenet"}
    with pytest.raises(DataError, match="digits has no standard augmentation"):
        Augmentation.for_training("digits", True, 0)


# ---------------------------------------------------------------- snn-train on the files


def _train(tmp_path: Path, dataset: str, data_dir: Path, *extra: str) -> dict:
    out = tmp_path / "run"
    result = run_cli("snn-train", "--dataset", dataset, "--data-dir", str(data_dir), "--epochs", "1", "--limit", "8",
                     "--batch-size", "4", "--timesteps", "3", "--no-progress", "--json", "--out", str(out), *extra)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == dataset and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert (out / "model.pt").is_file()
    return metrics


@pytest.mark.parametrize("dataset, model", [("cifar10", "convnet"), ("cifar100", "convnet"), ("tiny-imagenet", "mlp")])
def test_snn_train_on_image_files(tmp_path, dataset, model):
    from test_data import _cifar_dir

    (tmp_path / "data").mkdir()
    {"cifar10": lambda d: _cifar_dir(d, nested=True), "cifar100": _cifar100_dir,
     "tiny-imagenet": _tiny_imagenet_dir}[dataset](tmp_path / "data")
    arch = ["--channels", "4", "--fc", "8"] if model == "convnet" else ["--hidden", "8"]
    metrics = _train(tmp_path, dataset, tmp_path / "data", "--model", model, *arch)
    assert metrics["train_config"]["augment"] is None  # the data set's default: on
    assert metrics["augmentation"] == {"padding": 4, "flip": True}
    assert metrics["model"]["num_classes"] == info(dataset).num_classes


PAPER_ON_FILES = [("vgg16", "cifar100", []), ("resnet19", "tiny-imagenet", []),
                  pytest.param("sew-resnet18", "nmnist", [], marks=needs_tonic),
                  pytest.param("sew-resnet34", "dvs-gesture", ["--sew", "add"], marks=needs_tonic),
                  pytest.param("wrn16-4", "cifar10-dvs", [], marks=needs_aedat)]


@pytest.mark.parametrize("arch, dataset, extra", PAPER_ON_FILES)
def test_paper_models_train_on_the_files(tmp_path, arch, dataset, extra):
    """Each seed network (at 1/16 of its width) trains on a data set read from its released file format."""
    make = {"cifar100": _cifar100_dir, "tiny-imagenet": _tiny_imagenet_dir, "nmnist": _nmnist_dir,
            "dvs-gesture": _gesture_dir, "cifar10-dvs": _cifar10dvs_dir}[dataset]
    (tmp_path / "d").mkdir()
    make(tmp_path / "d")
    metrics = _train(tmp_path, dataset, tmp_path / "d", "--model", arch, "--width", "0.0625", *extra)
    assert metrics["model"]["arch"] == arch and metrics["model"]["input_shape"] == list(info(dataset).input_shape)
    assert metrics["model"]["num_classes"] == info(dataset).num_classes


@needs_tonic
@pytest.mark.parametrize("dataset", ["nmnist", "dvs-gesture", pytest.param("cifar10-dvs", marks=needs_aedat)])
def test_snn_train_on_event_files(tmp_path, dataset):
    {"nmnist": _nmnist_dir, "dvs-gesture": _gesture_dir, "cifar10-dvs": _cifar10dvs_dir}[dataset](tmp_path / "d")
    model = ["--model", "convnet", "--channels", "4", "--fc", "8"] if dataset == "nmnist" else ["--hidden", "8"]
    metrics = _train(tmp_path, dataset, tmp_path / "d", *model)
    assert metrics["model"]["encoder"] == {"name": "frames"} and metrics["model"]["timesteps"] == 3
    assert metrics["model"]["input_shape"] == list(info(dataset).input_shape)
    if dataset == "nmnist":  # the trained model deploys on the same frames (binned into the graph's T)
        for target in ("torch", "loihi-emu"):
            result = run_cli("snn-deploy", str(tmp_path / "run" / "model.pt"), "--target", target, "--dataset",
                             dataset, "--data-dir", str(tmp_path / "d"), "--json")
            assert result.returncode == 0, result.stderr
            deployed = json.loads(result.stdout)
            assert deployed["n_samples"] == 3 and deployed["timesteps"] == 3
            if target == "torch":
                assert deployed["accuracy"] == pytest.approx(metrics["test_accuracy"])


@needs_tonic
@pytest.mark.nonnumeric
def test_snn_train_refuses_a_direct_encoder_on_events(tmp_path):
    result = run_cli("snn-train", "--dataset", "nmnist", "--data-dir", str(tmp_path), "--encoder", "direct",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "needs the frames encoder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("snn-train", "--dataset", "digits", "--augment", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "digits has no standard augmentation" in result.stderr
    result = run_cli("snn-train", "--dataset", "nmnist", "--data-dir", str(tmp_path), "--pipeline", "convert",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "nmnist holds event frames" in result.stderr
    assert not (tmp_path / "run" / "model.pt").exists()


def test_training_with_augmentation_resumes_exactly(tmp_path):
    from snnkit.train import TrainConfig, train

    _cifar100_dir(tmp_path / "data")
    cfg = TrainConfig(dataset="cifar100", model={"arch": "mlp", "hidden": [8], "timesteps": 2}, epochs=3,
                      batch_size=4, data_dir=str(tmp_path / "data"), seed=1)
    whole = train(cfg, tmp_path / "whole", progress=False)
    # evaluation sees the test split as it is: the saved model's accuracy on the unaugmented samples
    from snnkit.models import load as load_model
    from snnkit.train.trainer import evaluate

    x_test, y_test = load("cifar100", "test", data_dir=tmp_path / "data")
    assert evaluate(load_model(tmp_path / "whole" / "model.pt"), x_test, y_test) == whole["test_accuracy"]
    train(cfg, tmp_path / "cut", progress=False, stop_after=1)
    resumed = train(cfg, tmp_path / "cut", progress=False, resume=True)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    plain = train(TrainConfig(**{**cfg.__dict__, "augment": False}), tmp_path / "plain", progress=False)
    assert whole["augmentation"] is not None and plain["augmentation"] is None
    assert [h["loss"] for h in plain["history"]] != [h["loss"] for h in whole["history"]]


@pytest.mark.nonnumeric
def test_event_sets_without_tonic_say_how_to_install_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tonic", None)  # what an environment without tonic imports
    with pytest.raises(DataError) as err:
        load("nmnist", "test", data_dir=tmp_path, timesteps=2)
    _one_line(err, "read with the tonic package", "pip install --no-deps tonic importRosbag")

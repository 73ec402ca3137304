"""snnkit.data: embedded sets (shapes, ranges, splits, determinism) and file formats read from fixtures
written here (IDX plain and .gz, CIFAR-10 python batches), including malformed and hostile files."""
from __future__ import annotations

import gzip
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from snnkit import data
from snnkit.data import DATASETS, DataError, embedded, info, load

EMBEDDED = [n for n in DATASETS if not info(n).needs_data_dir]
IDX_SETS = ["mnist", "fashion-mnist"]
RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- embedded sets


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_shapes_ranges_and_labels(name):
    meta = info(name)
    assert not meta.needs_data_dir
    sizes = {}
    for split in ("train", "test"):
        x, y = load(name, split)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape) == (len(y), *meta.input_shape)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert set(y.tolist()) == set(range(meta.num_classes))
        sizes[split] = len(y)
    # the train split spans [0, 1] exactly (scaled by its own statistics or by the pixel range)
    x_train, _ = load(name, "train")
    assert float(x_train.min()) == 0.0 and float(x_train.max()) == 1.0
    assert f"{sizes['train']:,} train" in meta.description and f"{sizes['test']:,} test" in meta.description


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_is_deterministic_and_not_shared(name):
    x1, y1 = load(name, "test")
    x1[:] = -1.0  # a caller mutating its copy must not change later loads
    x2, y2 = load(name, "test")
    assert float(x2.min()) >= 0.0
    assert torch.equal(y1, y2)


def test_embedded_regeneration_is_identical():
    """Rebuilding from scratch (no in-process cache) gives the same arrays, and mnist1d's generator leaves
    the global random state as it found it."""
    before = {n: load(n, "train") for n in EMBEDDED}
    embedded.digits.cache_clear()
    embedded.tabular.cache_clear()
    embedded.mnist1d.cache_clear()
    np.random.seed(7)
    random.seed(7)
    expected_np, expected_py = np.random.rand(3), [random.random() for _ in range(3)]
    np.random.seed(7)
    random.seed(7)
    after = {n: load(n, "train") for n in EMBEDDED}
    assert np.array_equal(np.random.rand(3), expected_np)
    assert [random.random() for _ in range(3)] == expected_py
    for n in EMBEDDED:
        assert torch.equal(before[n][0], after[n][0]) and torch.equal(before[n][1], after[n][1]), n


def test_digits_split_is_a_stratified_partition():
    from sklearn.datasets import load_digits

    x_train, y_train = load("digits", "train")
    x_test, y_test = load("digits", "test")
    assert (len(y_train), len(y_test)) == (1437, 360)
    full = load_digits()
    counts = np.bincount(full.target, minlength=10)
    test_counts = np.bincount(y_test.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1), test_counts
    # train + test is exactly the original set (as a multiset of (image, label) rows): disjoint and complete
    ours = np.concatenate([
        np.concatenate([x_train.reshape(-1, 64).numpy(), x_test.reshape(-1, 64).numpy()]),
        np.concatenate([y_train.numpy(), y_test.numpy()])[:, None].astype(np.float32),
    ], axis=1)
    theirs = np.concatenate([full.data / 16.0, full.target[:, None]], axis=1).astype(np.float32)
    assert np.array_equal(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)])
    assert np.array_equal(np.unique(x_train.numpy() * 16), np.arange(17))


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_tabular_scaled_per_feature_with_train_statistics(name):
    x_train, _ = load(name, "train")
    x_test, _ = load(name, "test")
    assert torch.all(x_train.min(0).values == 0) and torch.all(x_train.max(0).values == 1)
    assert float(x_test.min()) >= 0 and float(x_test.max()) <= 1


def test_mnist1d_shape():
    x, y = load("mnist1d", "train")
    assert tuple(x.shape) == (4000, 1, 40) and len(load("mnist1d", "test")[1]) == 1000


@pytest.mark.parametrize("split", ["train", "test"])
def test_limit_is_the_first_samples_of_the_same_split(split):
    x, y = load("digits", split)
    xl, yl = load("digits", split, limit=17)
    assert torch.equal(xl, x[:17]) and torch.equal(yl, y[:17])
    xa, ya = load("digits", split, limit=10**6)
    assert torch.equal(xa, x) and torch.equal(ya, y)
    assert len(load("digits", split, limit=np.int64(3))[1]) == 3


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"name": "imagenet"}, "unknown data set 'imagenet'"),
        ({"name": "digits", "split": "val"}, "split must be"),
        ({"name": "digits", "limit": 0}, "limit must be"),
        ({"name": "digits", "limit": 2.5}, "limit must be"),
        ({"name": "digits", "limit": True}, "limit must be"),
        ({"name": "mnist"}, "give data_dir"),
        ({"name": "cifar10", "data_dir": "/nonexistent/snnkit"}, "/nonexistent/snnkit: no such directory"),
    ],
)
def test_bad_arguments_are_one_line_data_errors(kwargs, words):
    with pytest.raises(DataError) as err:
        load(**kwargs)
    assert isinstance(err.value, ValueError)
    assert words in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("data: ")


def test_info_of_every_set():
    expected = {"digits", "breast_cancer", "wine", "mnist1d", "mnist", "fashion-mnist", "cifar10", "cifar100",
                "tiny-imagenet", "nmnist", "dvs-gesture", "cifar10-dvs"}
    assert set(DATASETS) == expected
    assert info("mnist").input_shape == (1, 28, 28) and info("mnist").needs_data_dir
    assert info("cifar10").input_shape == (3, 32, 32) and info("cifar10").num_classes == 10
    assert info("wine") == data.DatasetInfo("wine", (13,), 3, False, info("wine").description)


# ---------------------------------------------------------------- IDX fixtures


def _write_idx(path: Path, array: np.ndarray, magic: int, gz: bool) -> Path:
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def _idx_dir(root: Path, gz: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    arrays = {}
    for split, prefix, n in (("train", "train", 7), ("test", "t10k", 4)):
        images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = RNG.integers(0, 10, n, dtype=np.uint8)
        _write_idx(root / f"{prefix}-images-idx3-ubyte", images, 2051, gz)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, 2049, gz)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("name", IDX_SETS)
def test_idx_fixture_loads(tmp_path, name, gz):
    arrays = _idx_dir(tmp_path, gz)
    for split, (images, labels) in arrays.items():
        x, y = load(name, split, data_dir=tmp_path)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape) == (len(labels), *info(name).input_shape)
        assert np.array_equal(x.numpy(), images[:, None].astype(np.float32) / 255)
        assert np.array_equal(y.numpy(), labels)
    x2, y2 = load(name, "test", limit=2, data_dir=str(tmp_path))
    assert np.array_equal(y2.numpy(), arrays["test"][1][:2]) and len(x2) == 2


def _corrupt(path: Path, kind: str) -> None:
    raw = path.read_bytes()
    if kind == "bad magic":
        path.write_bytes(struct.pack(">I", 1234) + raw[4:])
    elif kind == "truncated":
        path.write_bytes(raw[:-5])
    elif kind == "short header":
        path.write_bytes(raw[:6])
    elif kind == "missing":
        path.unlink()


@pytest.mark.parametrize(
    "kind, message",
    [
        ("bad magic", "bad magic number 1234 (expected 2051)"),
        ("truncated", "truncated: header [7, 28, 28] needs 5488 data bytes, file has 5483"),
        ("short header", "truncated header (6 bytes, expected 16)"),
        ("missing", "missing (also looked for train-images-idx3-ubyte.gz)"),
    ],
)
def test_malformed_idx_names_the_file(tmp_path, kind, message):
    _idx_dir(tmp_path, gz=False)
    target = tmp_path / "train-images-idx3-ubyte"
    _corrupt(target, kind)
    with pytest.raises(DataError) as err:
        load("mnist", "train", data_dir=tmp_path)
    assert str(err.value) == f"data: {target}: {message}"
    load("mnist", "test", data_dir=tmp_path)  # the other split's files are untouched and still load


def test_malformed_gz_and_mismatched_idx(tmp_path):
    _idx_dir(tmp_path, gz=True)
    gz_path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    gz_path.write_bytes(gz_path.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"data: {gz_path}: cannot read"):
        load("fashion-mnist", "test", data_dir=tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), 2049, gz=False)  # plain wins
    with pytest.raises(DataError, match="5 labels for 7 images"):
        load("mnist", "train", data_dir=tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(7, 10, np.uint8), 2049, gz=False)
    with pytest.raises(DataError, match="label 10 out of range"):
        load("mnist", "train", data_dir=tmp_path)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((7, 27, 28), np.uint8), 2051, gz=False)
    with pytest.raises(DataError, match="images are 27x28, expected 28x28"):
        load("mnist", "train", data_dir=tmp_path)


# ---------------------------------------------------------------- CIFAR-10 fixtures


def _py2_str(b: bytes) -> bytes:
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def _py2_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled as Python 2's cPickle wrote the released files: protocol 2, str keys and raw data,
    numpy.core names. Written opcode by opcode since Python 3 cannot produce Python 2 str objects."""
    out = b"\x80\x02}(" + _py2_str(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
    out += b"(K\x01M" + struct.pack("<H", len(images)) + b"M\x00\x0c\x86"
    out += b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R(K\x03" + _py2_str(b"|")
    out += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89" + _py2_str(images.tobytes()) + b"tb"
    out += _py2_str(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"eu."
    return out


def _cifar_dir(root: Path, nested: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-10-batches-py" if nested else root
    folder.mkdir(exist_ok=True)
    parts: dict[str, list] = {"train": [], "test": []}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        n = 2 + i % 2
        images = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in RNG.integers(0, 10, n)]
        if i == 0:  # the released files' own encoding
            raw = _py2_batch(images, labels)
        else:  # Python 3 pickles, protocols 2..5, bytes keys (protocol 2: via _codecs.encode) or str keys
            keys = (b"data", b"labels") if i % 2 else ("data", "labels")
            raw = pickle.dumps({keys[0]: images, keys[1]: labels, "batch_label": "x"}, protocol=2 + i % 4)
        (folder / name).write_bytes(raw)
        parts["test" if name == "test_batch" else "train"].append((images, labels))
    return {s: tuple(np.concatenate(column) for column in zip(*v)) for s, v in parts.items()}


@pytest.mark.parametrize("nested", [True, False], ids=["parent-dir", "batches-dir"])
def test_cifar_fixture_loads(tmp_path, nested):
    arrays = _cifar_dir(tmp_path, nested)
    for split, (images, labels) in arrays.items():
        x, y = load("cifar10", split, data_dir=tmp_path)
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and tuple(x.shape[1:]) == (3, 32, 32)
        assert np.array_equal(x.numpy(), images.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
        assert np.array_equal(y.numpy(), labels)
    assert len(arrays["train"][1]) == 12
    x, _ = load("cifar10", "train", limit=3, data_dir=tmp_path)
    # channel-major rows: the first 1024 values are red
    assert np.array_equal(x[2, 0].numpy().ravel() * 255, arrays["train"][0][2, :1024].astype(np.float32))


class _Hostile:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_cifar_pickle_with_forbidden_global_is_refused_unrun(tmp_path):
    _cifar_dir(tmp_path, nested=False)
    marker = tmp_path / "pwned"
    batch = tmp_path / "data_batch_3"
    batch.write_bytes(pickle.dumps({"data": _Hostile(f"touch {marker}"), "labels": []}, protocol=2))
    with pytest.raises(DataError) as err:
        load("cifar10", "train", data_dir=tmp_path)
    message = str(err.value)
    assert message.startswith(f"data: {batch}: forbidden global ")
    assert ("posix.system" in message) or ("os.system" in message) or ("nt.system" in message)
    assert not marker.exists()
    load("cifar10", "test", data_dir=tmp_path)


def test_cifar_pickle_cannot_use_other_codecs_or_builtins(tmp_path):
    _cifar_dir(tmp_path, nested=False)
    batch = tmp_path / "test_batch"
    batch.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(DataError, match=f"data: {batch}: forbidden codec 'rot13'"):
        load("cifar10", "test", data_dir=tmp_path)
    batch.write_bytes(pickle.dumps(eval, protocol=4))
    with pytest.raises(DataError, match=f"data: {batch}: forbidden global builtins.eval in pickle"):
        load("cifar10", "test", data_dir=tmp_path)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "missing"),
        ("truncated", "not a valid CIFAR-10 batch"),
        ("wrong type", "expected a dict, found list"),
        ("wrong data", "'data' must be a uint8 array [N, 3072], found float64 [2, 3072]"),
        ("wrong labels", "1 labels for 2 images"),
        ("bad label", "labels out of range 0..9"),
    ],
)
def test_malformed_cifar_names_the_file(tmp_path, kind, message):
    _cifar_dir(tmp_path, nested=True)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_5"
    good = np.zeros((2, 3072), np.uint8)
    if kind == "missing":
        batch.unlink()
    elif kind == "truncated":
        batch.write_bytes(batch.read_bytes()[:100])
    else:
        content = {
            "wrong type": [1, 2],
            "wrong data": {"data": np.zeros((2, 3072)), "labels": [0, 1]},
            "wrong labels": {"data": good, "labels": [0]},
            "bad label": {"data": good, "labels": [0, 10]},
        }[kind]
        batch.write_bytes(pickle.dumps(content, protocol=3))
    with pytest.raises(DataError) as err:
        load("cifar10", "train", data_dir=tmp_path)
    assert str(err.value).startswith(f"data: {batch}: ") and message in str(err.value)
    assert "\n" not in str(err.value)

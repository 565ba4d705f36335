"""Fashion-MNIST loader: idx parsing (plain and gzipped), grouping by class, resizing, search order, errors.

Runs on tiny idx files the tests write; the real files (Debian's dataset-fashion-mnist) are not needed.
"""

from __future__ import annotations

import gzip
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn_lib.data.paths import DataNotFoundError

# the module, not the function that metalearn_lib.data re-exports under the same name
fm = importlib.import_module("metalearn_lib.data.fashion_mnist")

LABELS = np.array([2, 0, 1, 0, 2, 1, 1, 0], dtype=np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array: 00 00 08 ndim, big-endian dims, values."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def images_for(labels: np.ndarray, side: int = 28) -> np.ndarray:
    """Image i is constant: 10 * label + i (so class and order can be read back)."""
    return np.stack([np.full((side, side), 10 * int(l) + i, dtype=np.uint8) for i, l in enumerate(labels)])


def write_set(folder: Path, subset: str = "test", gz: bool = True, side: int = 28,
              labels: np.ndarray = LABELS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(fm.FILES[subset], (images_for(labels, side), labels)):
        data = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return folder


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No real Fashion-MNIST is found by accident: empty Debian folder, data root, and env var."""
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "debian-empty")
    monkeypatch.setenv("METALEARN_DATA", str(tmp_path / "data-root"))
    monkeypatch.delenv(fm.FASHION_ENV, raising=False)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.gz" if gz else "a")
    path.write_bytes(gzip.compress(idx_bytes(array)) if gz else idx_bytes(array))
    np.testing.assert_array_equal(fm.read_idx(path), array)


def test_classes_grouped_in_file_order(tmp_path):
    classes = fm.fashion_mnist(root=write_set(tmp_path / "fm"))
    assert classes.names == [fm.CLASS_NAMES[c] for c in (0, 1, 2)]
    assert classes.counts.tolist() == [3, 3, 2]
    assert classes.images.dtype == torch.uint8 and classes.image_shape == (1, 28, 28)
    # class 0 holds file images 1, 3, 7 (value 10 * 0 + i), in that order
    assert classes[0][:, 0, 0, 0].tolist() == [1, 3, 7]
    assert classes[2][:, 0, 0, 0].tolist() == [20, 24]
    inverted = fm.fashion_mnist(root=tmp_path / "fm", invert=True)
    torch.testing.assert_close(inverted.images, 255 - classes.images)


def test_resize_and_plain_files(tmp_path):
    classes = fm.fashion_mnist(root=write_set(tmp_path / "fm", gz=False, side=14), image_size=28)
    assert classes.image_shape == (1, 28, 28)
    assert classes[1][:, 0, 5, 5].tolist() == [12, 15, 16]   # constant images stay constant when resized


def test_search_order_env_then_debian_then_torchvision(tmp_path, monkeypatch):
    debian = write_set(tmp_path / "debian", labels=np.array([0, 1], dtype=np.uint8))
    monkeypatch.setattr(fm, "DEBIAN_DIR", debian)
    assert fm.fashion_mnist_folder() == debian
    env = write_set(tmp_path / "env", labels=np.array([0, 1, 1], dtype=np.uint8))
    monkeypatch.setenv(fm.FASHION_ENV, str(env))
    assert fm.fashion_mnist_folder() == env
    assert len(fm.fashion_mnist().images) == 3
    monkeypatch.delenv(fm.FASHION_ENV)
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "nothing")
    raw = write_set(tmp_path / "data-root" / "FashionMNIST" / "raw")
    assert fm.fashion_mnist_folder() == raw


def test_clear_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fm.fashion_mnist()
    with pytest.raises(DataNotFoundError, match="does not hold"):
        fm.fashion_mnist(root=tmp_path)
    with pytest.raises(ValueError, match="subset"):
        fm.fashion_mnist(subset="validation")
    with pytest.raises(ValueError, match="image_size"):
        fm.fashion_mnist(image_size=2)
    bad = tmp_path / "bad"
    write_set(bad)
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"<html>not found</html>"))
    with pytest.raises(ValueError, match="not an idx file"):
        fm.fashion_mnist(root=bad)
    truncated = tmp_path / "truncated"
    write_set(truncated)
    data = idx_bytes(images_for(LABELS))[:-5]
    (truncated / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match="truncated"):
        fm.fashion_mnist(root=truncated)

"""Fashion-MNIST, read from its idx files: a test set from another domain for Omniglot-trained models.

Xiao, H., Rasul, K., & Vollgraf, R. (2017). Fashion-MNIST: a novel image dataset for benchmarking
machine learning algorithms. *arXiv:1708.07747* (70,000 28x28 grey images of 10 kinds of clothing:
60,000 for training, 10,000 for testing, 1,000 of each class).

Few-shot use: every one of the 10 classes is a class of its own, so 5-way episodes draw 5 of the 10
clothing classes and a few images of each (the test file alone has 1,000 per class). A network
meta-trained on Omniglot has never seen anything but pen strokes: Fashion-MNIST measures how far
what it learned carries to another domain (the cross-domain few-shot setting).

Where the files are looked for, in this order (the first folder that holds the four files wins):

1. the ``root`` argument;
2. ``$METALEARN_FASHION_MNIST``;
3. ``/usr/share/datasets/fashion-mnist``, where Debian's package puts them
   (``apt-get install dataset-fashion-mnist``, Debian 12 and later);
4. torchvision's download folder ``<data root>/FashionMNIST/raw`` (``<data root>`` as for Omniglot:
   ``$METALEARN_DATA`` or the per-user cache), filled by ``download=True`` through
   ``torchvision.datasets.FashionMNIST`` when the machine is online.

Each folder may hold the files gzipped (``t10k-images-idx3-ubyte.gz``, as published) or not.

Polarity: Fashion-MNIST stores the object bright on a black background (0), which is already how
:func:`metalearn_lib.data.omniglot` stores characters (strokes 255, paper 0), so images are *not*
inverted by default; ``invert=True`` flips them (255 - x) for experiments on polarity.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metalearn_lib.data.base import ClassImages
from metalearn_lib.data.paths import DataNotFoundError, data_root

FASHION_ENV = "METALEARN_FASHION_MNIST"
#: Where Debian's ``dataset-fashion-mnist`` package installs the four gzipped idx files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SUBSETS = tuple(FILES)

# idx type codes (the third byte of the magic number) -> numpy dtype, big-endian where it matters
_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One idx file (LeCun's MNIST format, optionally gzipped) as a numpy array of its shape.

    The header is two zero bytes, a type code (0x08 for unsigned bytes), the number of dimensions,
    and then each dimension as a big-endian 32-bit integer; the values follow.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an idx file (its first bytes are {data[:4]!r}, expected 00 00 <type> <ndim>); "
                         f"is it a truncated or HTML download?")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path} is truncated or corrupt: its header announces shape {shape} "
                         f"({expected} bytes) but the file has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _holds(folder: Path, subset: str) -> bool:
    return all(_find(folder, stem) is not None for stem in FILES[subset])


def fashion_mnist_folder(root: str | os.PathLike | None = None, subset: str = "test",
                         download: bool = False) -> Path:
    """The folder holding ``subset``'s two idx files (see the module docstring for the search order).

    An explicit ``root`` must hold them (no fallback), so a typo is an error rather than a surprise.
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown Fashion-MNIST subset {subset!r}: choose 'train' or 'test'")
    images, labels = FILES[subset]
    if root is not None:
        folder = Path(root).expanduser()
        if not _holds(folder, subset):
            raise DataNotFoundError(f"{folder} does not hold {images}(.gz) and {labels}(.gz)")
        return folder
    candidates = []
    if os.environ.get(FASHION_ENV):
        candidates.append(Path(os.environ[FASHION_ENV]).expanduser())
    torchvision_raw = data_root() / "FashionMNIST" / "raw"
    candidates += [DEBIAN_DIR, torchvision_raw]
    for folder in candidates:
        if _holds(folder, subset):
            return folder
    if download:
        try:
            from torchvision.datasets import FashionMNIST
        except ImportError as error:
            raise DataNotFoundError("download=True needs torchvision (pip install torchvision)") from error
        try:
            FashionMNIST(str(data_root()), train=(subset == "train"), download=True)
        except Exception as error:  # torchvision raises RuntimeError or URLError when offline
            raise DataNotFoundError(f"could not download Fashion-MNIST: {error}. Are you online?") from error
        if _holds(torchvision_raw, subset):
            return torchvision_raw
    raise DataNotFoundError(
        f"Fashion-MNIST not found (looked in {', '.join(str(c) for c in candidates)}). On Debian or Ubuntu: "
        f"'apt-get install dataset-fashion-mnist' (files in {DEBIAN_DIR}); or set {FASHION_ENV} to a folder "
        f"holding {images}.gz and {labels}.gz; or pass download=True (torchvision, online).")


def fashion_mnist(subset: str = "test", image_size: int = 28, root: str | os.PathLike | None = None,
                  download: bool = False, invert: bool = False) -> ClassImages:
    """The 10 classes of Fashion-MNIST's ``subset`` (``"test"``: 1,000 images each) as ``uint8`` images.

    Args:
        subset: ``"test"`` (the 10,000-image t10k files) or ``"train"`` (60,000).
        image_size: side of the returned square images (28 is the native size; others are resized
            with an antialiased bilinear filter).
        root: a folder holding the idx files; ``None`` searches as the module docstring says.
        download: fetch the files with torchvision when they are nowhere on disk.
        invert: return ``255 - x``. Off by default: Fashion-MNIST is already bright on black, like
            this library's Omniglot.

    Returns a :class:`ClassImages` of ``[N, 1, image_size, image_size]`` images, class ``c`` named
    ``CLASS_NAMES[c]``, images kept in file order within each class.
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown Fashion-MNIST subset {subset!r}: choose 'train' or 'test'")
    if not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"image_size must be an integer of at least 4 pixels, got {image_size!r}")
    folder = fashion_mnist_folder(root, subset, download)
    images = read_idx(_find(folder, FILES[subset][0]))  # type: ignore[arg-type]
    labels = read_idx(_find(folder, FILES[subset][1]))  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or images.dtype != np.uint8:
        raise ValueError(f"{folder}: expected uint8 images [N, H, W] and N labels, got images {images.shape} "
                         f"{images.dtype} and labels {labels.shape}")
    x = torch.from_numpy(images.copy())[:, None]  # [N, 1, H, W]
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True,
                          align_corners=False).round().clamp(0, 255).to(torch.uint8)
    if invert:
        x = 255 - x
    y = torch.from_numpy(labels.astype(np.int64))
    present = sorted(int(c) for c in torch.unique(y))
    if any(c < 0 or c >= len(CLASS_NAMES) for c in present):
        raise ValueError(f"{folder}: labels must be 0..{len(CLASS_NAMES) - 1}, got {present}")
    # stable sort: images grouped by class, file order kept within a class
    per_class = [x[(y == c).nonzero().squeeze(1)] for c in present]
    return ClassImages.from_list(per_class, [CLASS_NAMES[c] for c in present])


__all__ = ["fashion_mnist", "fashion_mnist_folder", "read_idx", "CLASS_NAMES", "DEBIAN_DIR", "FASHION_ENV"]

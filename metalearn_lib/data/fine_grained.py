"""Fine-grained few-shot data: CUB-200-2011 birds, Oxford Flowers-102, and within-group episodes.

Wah, C., Branson, S., Welinder, P., Perona, P., & Belongie, S. (2011). The Caltech-UCSD Birds-200-2011
dataset. Technical report CNS-TR-2011-001, California Institute of Technology.
Nilsback, M.-E., & Zisserman, A. (2008). Automated flower classification over a large number of
classes. *ICVGIP*.
Chen, W.-Y., Liu, Y.-C., Kira, Z., Wang, Y.-C. F., & Huang, J.-B. (2019). A closer look at few-shot
classification. *ICLR* (the CUB few-shot split used here).

*Fine-grained* recognition tells apart classes of one kind (200 bird species, 102 flower species,
the characters of one alphabet): the differences between classes are small next to the variation
within a class (pose, light, background, handwriting). Few-shot episodes whose classes all come from
one group (:class:`GroupedEpisodeSampler`) are fine-grained by construction.

Layouts read (what the official archives unpack to):

- CUB: ``<root>/CUB_200_2011/images/<NNN.Class_name>/<image>.jpg`` with ``bounding_boxes.txt`` and
  ``images.txt`` beside ``images/`` (needed only for ``crop=True``). ``download=True`` fetches the
  official tarball from CaltechDATA (1.1 GB, checked by MD5) and unpacks it under ``<root>``.
- Flowers: ``<root>/flowers-102/jpg/image_NNNNN.jpg`` and ``<root>/flowers-102/imagelabels.mat``
  (labels 1..102, one per image), what ``torchvision.datasets.Flowers102(root, download=True)``
  leaves behind; ``download=True`` here calls exactly that (about 330 MB). Reading the ``.mat`` file
  needs SciPy.

Few-shot class splits (deterministic, by the sorted class index ``i = 0, 1, ...``): ``train`` the
classes with ``i % 2 == 0``, ``val`` those with ``i % 4 == 1``, ``test`` those with ``i % 4 == 3``,
``all`` every class. For CUB this is Chen et al.'s split (100 / 50 / 50 classes); for Flowers it is the
same rule (51 / 26 / 25 classes), this library's choice rather than a published split.
"""

from __future__ import annotations

import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from metalearn_lib.data.base import ClassImages
from metalearn_lib.data.folder import IMAGE_SUFFIXES
from metalearn_lib.data.paths import DATA_ENV, DataNotFoundError, data_root, fetch
from metalearn_lib.episodes import EpisodeSampler

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"
CUB_FOLDER = "CUB_200_2011"
FLOWERS_FOLDER = "flowers-102"
FINE_GRAINED_SUBSETS = ("train", "val", "test", "all")


# ------------------------------------------------------------------------------------------ splits

def split_classes(num_classes: int, subset: str) -> list[int]:
    """Class indices of a few-shot subset: ``train`` i%2==0, ``val`` i%4==1, ``test`` i%4==3, ``all``."""
    if subset not in FINE_GRAINED_SUBSETS:
        raise ValueError(f"unknown subset {subset!r}: choose one of {', '.join(FINE_GRAINED_SUBSETS)}")
    keep = {"train": lambda i: i % 2 == 0, "val": lambda i: i % 4 == 1, "test": lambda i: i % 4 == 3,
            "all": lambda i: True}[subset]
    return [i for i in range(num_classes) if keep(i)]


def cub_family(name: str) -> str:
    """The bird family of a CUB class, read from the last word of its name.

    ``"158.Bay_breasted_Warbler"`` -> ``"Warbler"``. Not a taxonomy, but it groups the look-alike
    species (25 warblers, 21 sparrows, 8 gulls, ...) that make CUB hard.
    """
    return name.rsplit("/", 1)[-1].split(".", 1)[-1].rsplit("_", 1)[-1]


def alphabet_of(name: str) -> str:
    """The alphabet of an Omniglot class name: ``"Tengwar/character03/rot090"`` -> ``"Tengwar"``."""
    return name.split("/", 1)[0]


# ------------------------------------------------------------------------------------ image reading

def _load_rgb(path: Path, image_size: int, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """One image as ``uint8 [3, S, S]``, cropped to ``box = (x, y, width, height)`` first if given."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        if box is not None:
            x, y, w, h = box
            img = img.crop((int(x), int(y), int(round(x + w)), int(round(y + h))))
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _read_classes(groups: Sequence[tuple[str, list[Path]]], image_size: int,
                  boxes: dict[Path, tuple[float, float, float, float]] | None = None) -> ClassImages:
    """Decode ``(class name, image paths)`` groups into a :class:`ClassImages` (threads overlap PIL's work)."""
    def decode(paths: list[Path]) -> Tensor:
        return torch.from_numpy(np.stack([_load_rgb(p, image_size, boxes.get(p) if boxes else None) for p in paths]))

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        per_class = list(pool.map(decode, [paths for _, paths in groups]))
    return ClassImages.from_list(per_class, [name for name, _ in groups])


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"image_size must be an integer of at least 4 pixels, got {image_size!r}")


# --------------------------------------------------------------------------------------------- CUB

def _extract_tgz(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuse links and paths outside dest
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - older Pythons
            for member in tar.getmembers():
                if member.name.startswith(("/", "..")) or ".." in Path(member.name).parts:
                    raise DataNotFoundError(f"{archive} holds an unsafe path {member.name!r}; refusing to extract")
            tar.extractall(dest)


def cub_folder(root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The ``CUB_200_2011`` folder under the data root, downloading and unpacking it first if asked."""
    base = data_root(root)
    folder = base / CUB_FOLDER
    if not (folder / "images").is_dir():
        if not download:
            raise DataNotFoundError(
                f"CUB-200-2011 not found: expected {folder}/images/<NNN.Class_name>/*.jpg. Pass root=... (the folder "
                f"that holds {CUB_FOLDER}), set {DATA_ENV}, or pass download=True to fetch the official tarball "
                f"(1.1 GB) from {CUB_URL}.")
        archive = fetch(CUB_URL, base / "CUB_200_2011.tgz", CUB_MD5)
        _extract_tgz(archive, base)
        if not (folder / "images").is_dir():
            raise DataNotFoundError(f"{archive} did not unpack to {folder}/images; delete it and try again")
    return folder


def _cub_boxes(folder: Path) -> dict[Path, tuple[float, float, float, float]]:
    """``image path -> (x, y, width, height)`` from ``images.txt`` and ``bounding_boxes.txt``."""
    for name in ("images.txt", "bounding_boxes.txt"):
        if not (folder / name).is_file():
            raise DataNotFoundError(f"crop=True needs {folder / name} (part of the official archive)")
    paths = dict(line.split(maxsplit=1) for line in (folder / "images.txt").read_text().splitlines() if line.strip())
    boxes = {}
    for line in (folder / "bounding_boxes.txt").read_text().splitlines():
        if line.strip():
            image_id, *xywh = line.split()
            boxes[folder / "images" / paths[image_id].strip()] = tuple(float(v) for v in xywh)
    return boxes


def cub200(subset: str = "test", image_size: int = 84, root: str | os.PathLike | None = None,
           download: bool = False, crop: bool = False) -> ClassImages:
    """CUB-200-2011 classes of a few-shot subset as ``uint8`` RGB images ``[N, 3, S, S]``.

    Classes are the 200 folders ``NNN.Class_name`` in sorted order; ``subset`` picks Chen et al.'s
    split (see the module docstring). ``crop=True`` cuts each image to its bird's bounding box before
    resizing, as many fine-grained papers do (the few-shot papers usually do not).
    """
    _check_image_size(image_size)
    folder = cub_folder(root, download)
    class_dirs = sorted(p for p in (folder / "images").iterdir() if p.is_dir())
    if not class_dirs:
        raise DataNotFoundError(f"no class folders under {folder / 'images'}")
    picked = [class_dirs[i] for i in split_classes(len(class_dirs), subset)]
    groups = [(d.name, sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)) for d in picked]
    empty = [name for name, paths in groups if not paths]
    if empty:
        raise DataNotFoundError(f"class folders without images under {folder / 'images'}: {', '.join(empty[:3])}")
    return _read_classes(groups, image_size, _cub_boxes(folder) if crop else None)


# ----------------------------------------------------------------------------------------- Flowers

def flowers_folder(root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The ``flowers-102`` folder under the data root; ``download=True`` lets torchvision fetch it."""
    base = data_root(root)
    folder = base / FLOWERS_FOLDER
    if not ((folder / "jpg").is_dir() and (folder / "imagelabels.mat").is_file()):
        if not download:
            raise DataNotFoundError(
                f"Oxford Flowers-102 not found: expected {folder}/jpg/image_NNNNN.jpg and {folder}/imagelabels.mat. "
                f"Pass root=... (the folder that holds {FLOWERS_FOLDER}), set {DATA_ENV}, or pass download=True "
                f"(torchvision.datasets.Flowers102 fetches about 330 MB).")
        from torchvision.datasets import Flowers102

        base.mkdir(parents=True, exist_ok=True)
        Flowers102(str(base), split="train", download=True)  # downloads the images and both .mat files
    return folder


def _flower_labels(folder: Path) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError as error:  # pragma: no cover - SciPy is present wherever torchvision's loader runs
        raise ImportError("reading Flowers-102's imagelabels.mat needs SciPy: pip install scipy") from error
    return np.asarray(loadmat(str(folder / "imagelabels.mat"), squeeze_me=True)["labels"]).reshape(-1).astype(int)


def flowers102(subset: str = "test", image_size: int = 84, root: str | os.PathLike | None = None,
               download: bool = False) -> ClassImages:
    """Oxford Flowers-102 classes of a few-shot subset as ``uint8`` RGB images ``[N, 3, S, S]``.

    Image ``k`` (1-based) is ``jpg/image_{k:05d}.jpg`` with label ``labels[k - 1]`` in 1..102; class
    ``c`` is named ``flower_{c:03d}``. All images of a class are used, whatever the official
    train/val/test image split (few-shot splits divide classes, not images).
    """
    _check_image_size(image_size)
    folder = flowers_folder(root, download)
    labels = _flower_labels(folder)
    if labels.size == 0 or labels.min() < 1:
        raise DataNotFoundError(f"{folder / 'imagelabels.mat'} holds no labels in 1..102")
    classes = sorted(set(labels.tolist()))
    groups = []
    for c in (classes[i] for i in split_classes(len(classes), subset)):
        paths = [folder / "jpg" / f"image_{k + 1:05d}.jpg" for k in np.flatnonzero(labels == c)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataNotFoundError(f"{missing[0]} is listed in imagelabels.mat but missing; re-download Flowers-102")
        groups.append((f"flower_{c:03d}", paths))
    return _read_classes(groups, image_size)


# ------------------------------------------------------------------------------ within-group episodes

class GroupedEpisodeSampler(EpisodeSampler):
    """N-way episodes whose classes all come from one group (alphabet, bird family): fine-grained tasks.

    Each episode first draws a group, uniformly among the groups with at least ``ways`` classes, then
    ``ways`` of its classes; support and query images are drawn as in :class:`EpisodeSampler`.

    Args:
        classes: the images, class by class.
        group: maps a class name to its group, e.g. :func:`alphabet_of` or :func:`cub_family`.
        ways, shots, queries, seed, device, name: as for :class:`EpisodeSampler`.
    """

    def __init__(self, classes: ClassImages, group: Callable[[str], str], ways: int, shots: int, queries: int,
                 seed: int = 0, device: torch.device | str = "cpu", name: str = "this data set") -> None:
        super().__init__(classes, ways, shots, queries, seed=seed, device=device, name=name)
        members: dict[str, list[int]] = {}
        for c, class_name in enumerate(classes.names):
            members.setdefault(group(class_name), []).append(c)
        self.groups = {g: torch.tensor(cs) for g, cs in sorted(members.items()) if len(cs) >= ways}
        if not self.groups:
            largest = max(len(cs) for cs in members.values())
            raise ValueError(f"no group of {name} has {ways} classes (the largest has {largest}); "
                             f"ask for at most {largest} ways")
        self._group_list = list(self.groups.values())

    def _indices(self) -> Tensor:
        g = int(torch.randint(len(self._group_list), (1,), generator=self.generator))
        members = self._group_list[g]
        picked = members[torch.randperm(len(members), generator=self.generator)[:self.ways]]
        k = self.shots + self.queries
        within = torch.stack([torch.randperm(int(self._counts[c]), generator=self.generator)[:k] for c in picked])
        return self._offsets[picked][:, None] + within


__all__ = ["CUB_URL", "CUB_MD5", "FINE_GRAINED_SUBSETS", "split_classes", "cub_family", "alphabet_of", "cub_folder",
           "cub200", "flowers_folder", "flowers102", "GroupedEpisodeSampler"]

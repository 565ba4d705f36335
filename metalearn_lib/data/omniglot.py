"""Omniglot (Lake, Salakhutdinov and Tenenbaum, 2015), read from torchvision's extracted layout.

Lake, B. M., Salakhutdinov, R., & Tenenbaum, J. B. (2015). Human-level concept learning through
probabilistic program induction. *Science*, 350(6266), 1332-1338.

Layout read: ``<root>/omniglot-py/images_{background,evaluation}/<Alphabet>/<characterNN>/*.png``,
which is what ``torchvision.datasets.Omniglot(root, download=True)`` leaves behind, and what
``download=True`` here produces from the same official zips (checked by MD5).

Splits
------
``lake``
    Lake's split: the 30 *background* alphabets (964 characters) to learn from, the 20 *evaluation*
    alphabets (659 characters) to test on. For model selection we hold out, inside the background
    set, the five alphabets of the Vinyals validation set: ``train`` = 792 characters, ``val`` = 172,
    ``trainval`` = all 964, ``test`` = the 659 evaluation characters.
``vinyals``
    The split of Matching Networks and Prototypical Networks: all characters (background then
    evaluation, sorted by alphabet and character folder); the first 1,200 are train+val, the last 423
    test; val is the alphabets Armenian, Bengali, Early_Aramaic, Hebrew and Mkhedruli_(Georgian).
    Each character in 4 rotations (0, 90, 180, 270 degrees), each rotation a class of its own:
    ``train`` 4,112 classes, ``val`` 688, ``trainval`` 4,800, ``test`` 1,692.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from metalearn_lib.data.base import ClassImages
from metalearn_lib.data.paths import (DATA_ENV, DataNotFoundError, atomic_torch_save, cache_dir, data_root,
                                      download_and_extract, fetch)

OFFICIAL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
SETS = {  # set name -> (zip URL, MD5): the files torchvision downloads
    "images_background": (f"{OFFICIAL}/images_background.zip", "68d2efa1b9178cc56df9314c21c6e718"),
    "images_evaluation": (f"{OFFICIAL}/images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811"),
}
SMALL = {  # Lake's two small background sets
    1: (f"{OFFICIAL}/images_background_small1.zip", "e704a628b5459e08445c13499850abc4"),
    2: (f"{OFFICIAL}/images_background_small2.zip", "b75a71a51d3b13f821f212756fe481fd"),
}
VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
SPLITS = ("lake", "vinyals")
SUBSETS = ("train", "val", "trainval", "test")
_CACHE_VERSION = 1


def _missing_data_error(folder: Path) -> DataNotFoundError:
    return DataNotFoundError(
        f"Omniglot not found: expected {folder}/images_background and images_evaluation. "
        f"Set {DATA_ENV} to the folder that contains 'omniglot-py' (for example ../shared/data/omniglot), "
        f"pass root=..., or pass download=True (command line: --download) to fetch it (about 9 MB).")


def omniglot_folder(root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The ``omniglot-py`` folder under the data root, downloading it first if asked and missing."""
    folder = data_root(root) / "omniglot-py"
    for name, (url, md5) in SETS.items():
        if not (folder / name).is_dir():
            if not download:
                raise _missing_data_error(folder)
            download_and_extract(url, folder, md5)
    return folder


def load_png(source, image_size: int) -> np.ndarray:
    """One Omniglot PNG as ``uint8`` [H, W] with strokes high (255) and paper 0, resized."""
    with Image.open(source) as img:
        img = img.convert("L")
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.LANCZOS)
        return 255 - np.asarray(img, dtype=np.uint8)


def _walk(set_folder: Path) -> list[tuple[str, list[Path]]]:
    """(``Alphabet/characterNN``, sorted image paths) for every character, sorted."""
    chars = []
    for alphabet in sorted(p for p in set_folder.iterdir() if p.is_dir()):
        for char in sorted(p for p in alphabet.iterdir() if p.is_dir()):
            chars.append((f"{alphabet.name}/{char.name}", sorted(char.glob("*.png"))))
    return chars


def _decode_set(set_folder: Path, image_size: int) -> ClassImages:
    chars = _walk(set_folder)
    if not chars:
        raise _missing_data_error(set_folder.parent)

    def decode(paths: list[Path]) -> torch.Tensor:
        return torch.from_numpy(np.stack([load_png(p, image_size) for p in paths]))[:, None]

    # PIL releases the GIL while decoding and resizing, so threads overlap the work.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        per_class = list(pool.map(decode, [paths for _, paths in chars]))
    return ClassImages.from_list(per_class, [name for name, _ in chars])


def load_omniglot_sets(root: str | os.PathLike | None = None, image_size: int = 28,
                       download: bool = False, cache: bool = True) -> dict[str, ClassImages]:
    """Lake's two sets, ``{"background": ..., "evaluation": ...}``, as ``uint8`` images.

    Decoding all 32,460 PNGs takes seconds; the result is cached under :func:`cache_dir` keyed by the
    data folder and the image size, so later loads take well under a second.
    """
    if image_size < 4:
        raise ValueError(f"image_size must be at least 4 pixels, got {image_size}")
    folder = omniglot_folder(root, download)
    key = hashlib.sha1(f"{folder.resolve()}|{image_size}|{_CACHE_VERSION}".encode()).hexdigest()[:12]
    path = cache_dir() / f"omniglot-{image_size}px-{key}.pt"
    if cache and path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            return {s: ClassImages(blob[s]["images"], blob[s]["offsets"], blob[s]["names"]) for s in ("background", "evaluation")}
        except Exception:  # a corrupt or foreign cache file is rebuilt, not trusted
            pass
    sets = {s: _decode_set(folder / f"images_{s}", image_size) for s in ("background", "evaluation")}
    if cache:
        atomic_torch_save({s: {"images": c.images, "offsets": c.offsets, "names": c.names} for s, c in sets.items()}, path)
    return sets


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}: choose one of {', '.join(allowed)}")


def split_filter(split: str, subset: str) -> tuple[Callable[[str], bool], Callable[[str], bool]]:
    """Which background and which evaluation characters a split's subset takes, as name predicates."""
    _check(split, SPLITS, "split")
    _check(subset, SUBSETS, "subset")
    in_val = lambda name: name.split("/")[0] in VAL_ALPHABETS  # noqa: E731
    none, every = (lambda name: False), (lambda name: True)  # noqa: E731
    if split == "lake":
        return {"train": (lambda n: not in_val(n), none), "val": (in_val, none),
                "trainval": (every, none), "test": (none, every)}[subset]
    # Vinyals: background then evaluation, sorted; the first 1,200 are train+val.
    first_test = "Gurmukhi/character42"
    before = lambda name: _char_key(name) < _char_key(first_test)  # noqa: E731
    return {"train": (lambda n: not in_val(n), lambda n: before(n) and not in_val(n)),
            "val": (in_val, lambda n: before(n) and in_val(n)),
            "trainval": (every, before),
            "test": (none, lambda n: not before(n))}[subset]


def _char_key(name: str) -> tuple[str, str]:
    alphabet, char = name.split("/")
    return alphabet, char


def omniglot(split: str = "lake", subset: str = "train", image_size: int = 28, root: str | os.PathLike | None = None,
             download: bool = False, rotations: bool | None = None) -> ClassImages:
    """The classes of one subset of an Omniglot split (see the module docstring).

    ``rotations`` adds the 90/180/270-degree rotations as new classes; it defaults to ``True`` for the
    Vinyals split (where it is part of the protocol) and ``False`` for Lake's.
    """
    _check(split, SPLITS, "split")
    _check(subset, SUBSETS, "subset")
    sets = load_omniglot_sets(root, image_size, download)
    keep_bg, keep_ev = split_filter(split, subset)
    picked = [(s, c) for s in ("background", "evaluation") for c, name in enumerate(sets[s].names)
              if (keep_bg if s == "background" else keep_ev)(name)]
    classes = ClassImages.from_list([sets[s][c] for s, c in picked], [sets[s].names[c] for s, c in picked])
    if rotations if rotations is not None else split == "vinyals":
        classes = classes.with_rotations()
    return classes


def omniglot_small(which: int = 1, image_size: int = 28, root: str | os.PathLike | None = None,
                   download: bool = False) -> ClassImages:
    """Lake's small background set 1 or 2 (5 alphabets each: 136 and 156 characters)."""
    if which not in SMALL:
        raise ValueError(f"Lake's small background sets are 1 and 2, got {which}")
    url, md5 = SMALL[which]
    archive = data_root(root) / "lake-small" / url.rsplit("/", 1)[-1]
    if not archive.exists():
        if not download:
            raise DataNotFoundError(f"{archive} not found. Set {DATA_ENV}, pass root=..., or download=True.")
        fetch(url, archive, md5)
    chars: dict[str, list[np.ndarray]] = {}
    with zipfile.ZipFile(archive) as zf:
        for member in sorted(n for n in zf.namelist() if n.endswith(".png")):
            _, alphabet, char, _ = member.split("/")
            chars.setdefault(f"{alphabet}/{char}", []).append(load_png(io.BytesIO(zf.read(member)), image_size))
    names = sorted(chars)
    return ClassImages.from_list([torch.from_numpy(np.stack(chars[n]))[:, None] for n in names], names)

"""A folder-per-class image set (``<root>/<class>/<image>``), as CUB, Flowers or mini-ImageNet come."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metalearn_lib.data.base import ClassImages

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def image_folder(root: str | os.PathLike, image_size: int = 84, channels: int = 3,
                 min_per_class: int = 1) -> ClassImages:
    """Read every class folder under ``root`` into a :class:`ClassImages` (uint8, resized to a square).

    Classes with fewer than ``min_per_class`` images are left out, so that every class can fill an
    episode's support and query sets.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist: expected <root>/<class name>/<images>")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    mode = "L" if channels == 1 else "RGB"
    per_class, names = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < max(min_per_class, 1):
            continue
        arrays = []
        for path in files:
            with Image.open(path) as img:
                img = img.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
            arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
        per_class.append(torch.from_numpy(np.stack(arrays)))
        names.append(folder.name)
    if not per_class:
        raise ValueError(f"no class folder under {root} has at least {max(min_per_class, 1)} images")
    return ClassImages.from_list(per_class, names)

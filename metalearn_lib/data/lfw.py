"""Labeled Faces in the Wild (LFW) verification pairs, read through ``torchvision.datasets.LFWPairs``.

Huang, G. B., Ramesh, M., Berg, T., & Learned-Miller, E. (2007). Labeled Faces in the Wild: a database
for studying face recognition in unconstrained environments. Technical report 07-49, University of
Massachusetts, Amherst.

LFW's benchmark is verification: are two face photos of the same person? ``split="train"``
(``pairsDevTrain.txt``: 1,100 same and 1,100 different pairs) and ``split="test"``
(``pairsDevTest.txt``: 500 + 500) are View 1, for development, with disjoint people; ``"10fold"``
(``pairs.txt``) is View 2, ten folds of 300 + 300 pairs on which results are reported by ten-fold
cross-validation.

Data: torchvision no longer downloads LFW (its ``download=True`` raises); it reads
``<root>/lfw-py/`` holding the image archive it expects (``lfw-funneled.tgz`` for
``image_set="funneled"``, checked by MD5), the unpacked folder (``lfw_funneled/<Name>/<Name>_NNNN.jpg``)
and the pairs file. Put those there by hand (torchvision's docs name a mirror), then call
:func:`lfw_pairs`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from metalearn_lib.data.paths import DATA_ENV, DataNotFoundError, data_root

LFW_SPLITS = ("train", "test", "10fold")
LFW_IMAGE_SETS = ("original", "funneled", "deepfunneled")


def _to_array(img: Any, image_size: int, channels: int, center_crop: float) -> np.ndarray:
    """A PIL image (or ``[C, H, W]`` tensor) as ``uint8 [channels, S, S]``, centre-cropped then resized."""
    if isinstance(img, Tensor):
        array = img.detach().cpu()
        array = (array * 255).round().clamp(0, 255).byte() if array.is_floating_point() else array.byte()
        img = Image.fromarray(array.permute(1, 2, 0).squeeze(-1).numpy())
    if not isinstance(img, Image.Image):
        raise ValueError(f"pair images must be PIL images or [C, H, W] tensors, got {type(img).__name__}")
    img = img.convert("L" if channels == 1 else "RGB")
    if center_crop < 1.0:  # LFW faces fill the middle of a 250x250 photo; the rest is background
        w, h = img.size
        cw, ch = round(w * center_crop), round(h * center_crop)
        left, top = (w - cw) // 2, (h - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def pairs_to_tensors(pairs: Sequence[tuple[Any, Any, int]], image_size: int = 64, channels: int = 1,
                     center_crop: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """``(x1, x2, same)`` float tensors from a sequence of ``(image1, image2, same)`` items.

    Works on ``torchvision.datasets.LFWPairs`` (PIL images) or any list of such triples. Images are
    centre-cropped to the fraction ``center_crop`` of their side, resized to ``image_size`` and scaled
    to [0, 1]; ``same`` is 1.0 for a same-person pair and 0.0 otherwise.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if not 0 < center_crop <= 1:
        raise ValueError(f"center_crop must be a fraction in (0, 1], got {center_crop}")
    if len(pairs) == 0:
        raise ValueError("no pairs to convert")
    first, second, same = [], [], []
    for k in range(len(pairs)):
        a, b, label = pairs[k]
        if int(label) not in (0, 1):
            raise ValueError(f"pair {k} has label {label!r}; expected 0 (different) or 1 (same)")
        first.append(_to_array(a, image_size, channels, center_crop))
        second.append(_to_array(b, image_size, channels, center_crop))
        same.append(float(label))

    def stack(arrays: list[np.ndarray]) -> Tensor:
        return torch.from_numpy(np.stack(arrays)).float().div_(255)

    return stack(first), stack(second), torch.tensor(same)


def lfw_pairs(split: str = "test", image_set: str = "funneled", image_size: int = 64, channels: int = 1,
              center_crop: float = 0.5, root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """LFW verification pairs ``(x1, x2, same)`` via ``torchvision.datasets.LFWPairs`` (files must be present).

    ``root`` (default: the data root) must hold ``lfw-py/`` as torchvision expects (module docstring).
    For ``split="10fold"`` the pairs come fold by fold (each fold: 300 same, then 300 different).
    """
    if split not in LFW_SPLITS:
        raise ValueError(f"unknown LFW split {split!r}: choose one of {', '.join(LFW_SPLITS)}")
    if image_set not in LFW_IMAGE_SETS:
        raise ValueError(f"unknown LFW image_set {image_set!r}: choose one of {', '.join(LFW_IMAGE_SETS)}")
    from torchvision.datasets import LFWPairs

    base = data_root(root)
    try:
        dataset = LFWPairs(str(base), split=split, image_set=image_set, download=False)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise DataNotFoundError(
            f"LFW not found under {base / 'lfw-py'}: torchvision no longer downloads it. Put the image archive, its "
            f"unpacked folder and the pairs file there (see torchvision.datasets.LFWPairs), then pass root=... or "
            f"set {DATA_ENV}. ({error})") from error
    return pairs_to_tensors(dataset, image_size, channels, center_crop)


__all__ = ["LFW_SPLITS", "LFW_IMAGE_SETS", "pairs_to_tensors", "lfw_pairs"]

"""Images grouped by class: what every episode sampler reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


@dataclass
class ClassImages:
    """A labelled image set stored class by class.

    ``images[offsets[c]:offsets[c + 1]]`` are the images of class ``c``, named ``names[c]``.
    Images are ``uint8`` (0..255) or float tensors shaped ``[num_images, channels, height, width]``;
    the sampler turns ``uint8`` into floats in [0, 1]. For Omniglot, strokes are 1 and paper is 0.
    """

    images: Tensor
    offsets: Tensor
    names: list[str]

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if len(self.offsets) != len(self.names) + 1:
            raise ValueError("offsets must have one entry more than names")

    @classmethod
    def from_grouped(cls, grouped: Tensor, names: Sequence[str]) -> "ClassImages":
        """From a ``[classes, per_class, C, H, W]`` tensor (every class the same size)."""
        num_classes, per_class = grouped.shape[:2]
        offsets = torch.arange(num_classes + 1) * per_class
        return cls(grouped.reshape(-1, *grouped.shape[2:]), offsets, list(names))

    @classmethod
    def from_list(cls, per_class: Sequence[Tensor], names: Sequence[str]) -> "ClassImages":
        """From one ``[n_c, C, H, W]`` tensor per class (sizes may differ)."""
        if not per_class:
            raise ValueError("a ClassImages needs at least one class")
        counts = torch.tensor([len(t) for t in per_class])
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        return cls(torch.cat(list(per_class)), offsets, list(names))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def counts(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return self.num_classes

    def __getitem__(self, c: int) -> Tensor:
        return self.images[self.offsets[c]:self.offsets[c + 1]]

    def subset(self, classes: Sequence[int]) -> "ClassImages":
        """The classes at the given indices, in that order."""
        return ClassImages.from_list([self[c] for c in classes], [self.names[c] for c in classes])

    def select(self, keep) -> "ClassImages":
        """The classes whose name satisfies ``keep(name)``."""
        return self.subset([c for c, name in enumerate(self.names) if keep(name)])

    def with_rotations(self, degrees: Sequence[int] = (0, 90, 180, 270)) -> "ClassImages":
        """Each class rotated by each angle, every rotation a class of its own (Vinyals et al.)."""
        for d in degrees:
            if d % 90:
                raise ValueError(f"rotations must be multiples of 90 degrees, got {d}")
        per_class, names = [], []
        for c, name in enumerate(self.names):
            for d in degrees:
                per_class.append(torch.rot90(self[c], k=d // 90, dims=(-2, -1)))
                names.append(f"{name}/rot{d:03d}")
        return ClassImages.from_list(per_class, names)

    def to(self, device: torch.device | str) -> "ClassImages":
        return ClassImages(self.images.to(device), self.offsets, self.names)

    def __repr__(self) -> str:
        return (f"ClassImages({self.num_classes} classes, {len(self.images)} images of shape "
                f"{self.image_shape}, dtype={self.images.dtype})")

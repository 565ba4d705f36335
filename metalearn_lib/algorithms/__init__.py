"""Few-shot algorithms, one per file, all behind :class:`FewShotAlgorithm`.

``ALGORITHMS`` maps the command-line name to the class; :func:`build_algorithm` makes one.
"""

from __future__ import annotations

from typing import Any

from metalearn_lib.algorithms.base import EpisodicLossMixin, FewShotAlgorithm, accuracy
from metalearn_lib.algorithms.pixel_nn import PixelNN

ALGORITHMS: dict[str, type[FewShotAlgorithm]] = {cls.name: cls for cls in (PixelNN,)}


def build_algorithm(name: str, **config: Any) -> FewShotAlgorithm:
    """The algorithm registered as ``name``, built with ``config``."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}: choose one of {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name](**config)


__all__ = ["ALGORITHMS", "build_algorithm", "FewShotAlgorithm", "EpisodicLossMixin", "accuracy", "PixelNN"]

"""Few-shot algorithms, one per file, all behind :class:`FewShotAlgorithm`.

``ALGORITHMS`` maps the command-line name to the class; :func:`build_algorithm` makes one.
"""

from __future__ import annotations

from typing import Any

from metalearn_lib.algorithms.base import EpisodicLossMixin, FewShotAlgorithm, accuracy
from metalearn_lib.algorithms.pixel_nn import PixelNN
from metalearn_lib.algorithms.protonet import ProtoNet
from metalearn_lib.algorithms.matching import MatchingNet
from metalearn_lib.algorithms.siamese import Siamese
from metalearn_lib.algorithms.maml import ANIL, FOMAML, MAML, MetaSGD
from metalearn_lib.algorithms.reptile import Reptile

ALGORITHMS: dict[str, type[FewShotAlgorithm]] = {cls.name: cls for cls in (PixelNN, ProtoNet, MatchingNet, Siamese,
                                                                          MAML, FOMAML, MetaSGD, ANIL, Reptile)}


def build_algorithm(name: str, **config: Any) -> FewShotAlgorithm:
    """The algorithm registered as ``name``, built with ``config``."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}: choose one of {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name](**config)


__all__ = ["ALGORITHMS", "build_algorithm", "FewShotAlgorithm", "EpisodicLossMixin", "accuracy", "PixelNN", "ProtoNet", "MatchingNet", "Siamese",
           "MAML", "FOMAML", "MetaSGD", "ANIL", "Reptile"]

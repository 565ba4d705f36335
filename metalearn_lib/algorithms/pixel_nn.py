"""Nearest neighbour in pixel space: the baseline every few-shot method must beat.

Vinyals, O., Blundell, C., Lillicrap, T., Kavukcuoglu, K., & Wierstra, D. (2016). Matching networks for
one shot learning. *NeurIPS* (Table 1, "Pixels" row: 41.7 / 63.2 / 26.7 / 42.6 on Omniglot
5-way 1-shot / 5-way 5-shot / 20-way 1-shot / 20-way 5-shot).

Each query takes the label of its closest support image in Euclidean distance over raw pixels. There
is nothing to learn: it shows how far "similar pixels, same class" gets on its own.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metalearn_lib.algorithms.base import FewShotAlgorithm
from metalearn_lib.algorithms.metrics import best_per_class


def nearest_neighbour_logits(support: Tensor, y_support: Tensor, query: Tensor, ways: int) -> Tensor:
    """Logits ``[n_query, ways]``: minus the distance to the nearest support example of each class."""
    distances = torch.cdist(query.flatten(1), support.flatten(1))  # [n_query, n_support]
    return best_per_class(-distances, y_support, ways)  # minus the nearest distance per class


class PixelNN(FewShotAlgorithm):
    """1-nearest-neighbour on raw pixels (no parameters, no training)."""

    name = "pixel-nn"
    trainable = False

    def __init__(self, **_: object) -> None:
        super().__init__()
        self.save_config()

    def predict(self, x_support: Tensor, y_support: Tensor, x_query: Tensor, ways: int) -> Tensor:
        return nearest_neighbour_logits(x_support, y_support, x_query, ways)

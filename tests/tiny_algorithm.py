"""A deliberately tiny trainable algorithm, so the trainer and CLI can be tested without the real ones."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metalearn_lib.algorithms.base import EpisodicLossMixin, FewShotAlgorithm
from metalearn_lib.episodes import Episode


class TinyProto(EpisodicLossMixin, FewShotAlgorithm):
    """Prototypes of a linear embedding of the pixels."""

    name = "tiny-proto"
    defaults = {"train_ways": 5, "train_shots": 1, "queries": 5, "lr": 1e-3}

    def __init__(self, in_channels: int = 1, image_size: int = 28, dim: int = 16, **_: object) -> None:
        super().__init__()
        self.save_config(in_channels=in_channels, image_size=image_size, dim=dim)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, dim))

    def predict(self, x_support: Tensor, y_support: Tensor, x_query: Tensor, ways: int) -> Tensor:
        emb_s, emb_q = self.net(x_support), self.net(x_query)
        protos = torch.zeros(ways, emb_s.shape[1], device=emb_s.device).index_add_(0, y_support, emb_s)
        protos = protos / torch.bincount(y_support, minlength=ways)[:, None]
        return -torch.cdist(emb_q, protos) ** 2

    def episode_logits(self, episode: Episode) -> Tensor:
        return self.predict(episode.x_support, episode.y_support, episode.x_query, episode.ways)

"""N-way K-shot episodes: the unit of work of every few-shot algorithm.

An *episode* (or *task*) draws ``ways`` classes at random, then ``shots`` labelled *support* images
and ``queries`` *query* images of each. Labels are re-numbered 0..ways-1 in the order the classes
were drawn, so a model can never rely on a class's global identity. A *meta-batch* stacks several
episodes along a leading task dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from metalearn_lib.data.base import ClassImages


@dataclass
class Episode:
    """One episode, or a meta-batch of them when tensors carry a leading task dimension.

    Support images come grouped by class: ``y_support = [0]*shots + [1]*shots + ...``; the same for queries.
    """

    x_support: Tensor  # [ways*shots, C, H, W]    or [tasks, ways*shots, C, H, W]
    y_support: Tensor  # [ways*shots]             or [tasks, ways*shots]
    x_query: Tensor    # [ways*queries, C, H, W]  or [tasks, ways*queries, C, H, W]
    y_query: Tensor    # [ways*queries]           or [tasks, ways*queries]
    ways: int
    shots: int
    queries: int

    @property
    def is_batch(self) -> bool:
        return self.y_support.dim() == 2

    @property
    def num_tasks(self) -> int:
        return self.y_support.shape[0] if self.is_batch else 1

    def task(self, i: int) -> "Episode":
        """Task ``i`` of a meta-batch."""
        if not self.is_batch:
            raise ValueError("task(i) needs a meta-batch; this is a single episode")
        return Episode(self.x_support[i], self.y_support[i], self.x_query[i], self.y_query[i],
                       self.ways, self.shots, self.queries)

    def tasks(self) -> list["Episode"]:
        return [self.task(i) for i in range(self.num_tasks)] if self.is_batch else [self]

    def to(self, device: torch.device | str) -> "Episode":
        return Episode(*(getattr(self, f.name).to(device) if isinstance(getattr(self, f.name), Tensor)
                         else getattr(self, f.name) for f in fields(self)))

    @staticmethod
    def stack(episodes: list["Episode"]) -> "Episode":
        first = episodes[0]
        return Episode(torch.stack([e.x_support for e in episodes]), torch.stack([e.y_support for e in episodes]),
                       torch.stack([e.x_query for e in episodes]), torch.stack([e.y_query for e in episodes]),
                       first.ways, first.shots, first.queries)


def check_episode_request(num_classes: int, min_per_class: int, ways: int, shots: int, queries: int,
                          what: str = "this data set") -> None:
    """Raise one clear ``ValueError`` when an N-way K-shot Q-query request cannot be met."""
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if ways < 2:
        raise ValueError(f"ways must be at least 2 for a classification episode, got {ways}")
    if ways > num_classes:
        raise ValueError(f"cannot draw {ways}-way episodes: {what} has only {num_classes} classes; "
                         f"ask for at most {num_classes} ways")
    if shots + queries > min_per_class:
        raise ValueError(f"cannot draw {shots} shots + {queries} queries per class: {what} has classes with only "
                         f"{min_per_class} images; keep shots + queries <= {min_per_class}")


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes from a :class:`ClassImages`, reproducibly.

    The stream of episodes is fully determined by ``seed`` (a CPU generator draws the indices, so the
    same seed gives the same episodes on CPU and GPU). Images are moved to ``device`` once and episodes
    are assembled there by indexing, which keeps sampling off the critical path on a GPU.
    """

    def __init__(self, classes: ClassImages, ways: int, shots: int, queries: int, seed: int = 0,
                 device: torch.device | str = "cpu", name: str = "this data set") -> None:
        counts = classes.counts
        check_episode_request(classes.num_classes, int(counts.min()), ways, shots, queries, what=name)
        self.classes, self.ways, self.shots, self.queries = classes, ways, shots, queries
        self.device = torch.device(device)
        self.images = classes.images.to(self.device)
        self._offsets, self._counts = classes.offsets, counts
        self._uniform = bool((counts == counts[0]).all())
        self.generator = torch.Generator().manual_seed(seed)

    def _indices(self) -> Tensor:
        """Image indices ``[ways, shots + queries]`` of one episode."""
        picked = torch.randperm(self.classes.num_classes, generator=self.generator)[:self.ways]
        k = self.shots + self.queries
        if self._uniform:  # one vectorised draw when every class has the same number of images
            within = torch.rand(self.ways, int(self._counts[0]), generator=self.generator).argsort(dim=1)[:, :k]
        else:
            within = torch.stack([torch.randperm(int(self._counts[c]), generator=self.generator)[:k] for c in picked])
        return self._offsets[picked][:, None] + within

    def _assemble(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Support and query tensors for index ``[..., ways, shots + queries]``."""
        x = self.images[index.to(self.device)]
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        lead = index.shape[:-2]
        labels = torch.arange(self.ways, device=self.device)
        x_support = x[..., :self.shots, :, :, :].reshape(*lead, self.ways * self.shots, *x.shape[-3:])
        x_query = x[..., self.shots:, :, :, :].reshape(*lead, self.ways * self.queries, *x.shape[-3:])
        y_support = labels.repeat_interleave(self.shots).expand(*lead, -1)
        y_query = labels.repeat_interleave(self.queries).expand(*lead, -1)
        return x_support, y_support.contiguous(), x_query, y_query.contiguous()

    def sample(self) -> Episode:
        """One episode."""
        return Episode(*self._assemble(self._indices()), self.ways, self.shots, self.queries)

    def sample_batch(self, tasks: int) -> Episode:
        """A meta-batch of ``tasks`` episodes stacked along a leading dimension."""
        if not isinstance(tasks, int) or tasks <= 0:
            raise ValueError(f"a meta-batch needs a positive number of tasks, got {tasks!r}")
        index = torch.stack([self._indices() for _ in range(tasks)])
        return Episode(*self._assemble(index), self.ways, self.shots, self.queries)

    def __iter__(self):
        while True:
            yield self.sample()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

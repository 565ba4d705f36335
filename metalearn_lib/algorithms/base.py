"""The one small interface every algorithm implements, and helpers they share.

An algorithm is an ``nn.Module`` with two methods:

- ``train_step(batch)``: given a meta-batch of episodes (leading task dimension), compute the
  meta-training signal and leave it in the parameters' ``.grad`` (for most algorithms by
  ``loss.backward()``; Reptile writes ``theta - theta'`` there). Returns floats to log.
- ``predict(x_support, y_support, x_query, ways)``: logits ``[n_query, ways]`` for one episode,
  after whatever per-task adaptation the algorithm does.

The trainer (:mod:`metalearn_lib.training`) zeroes gradients, calls ``train_step`` and steps the
optimizer; the evaluator (:mod:`metalearn_lib.evaluation`) calls ``predict``. Nothing else is shared,
so one training loop and one evaluation routine serve every algorithm.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_lib.episodes import Episode


class FewShotAlgorithm(nn.Module):
    """Base class. Subclasses set ``name``, store their constructor arguments with ``save_config``."""

    name: ClassVar[str] = "base"
    #: Does ``predict`` need autograd (MAML-style adaptation) at test time?
    test_needs_grad: ClassVar[bool] = False
    #: Does the algorithm learn anything? (pixel nearest neighbour does not)
    trainable: ClassVar[bool] = True
    #: Can its ``step_tensors`` be recorded as a CUDA graph (:mod:`metalearn_lib.graphs`)? A step whose
    #: sizes depend on the data, or that draws random numbers on the host, cannot.
    graph_safe: ClassVar[bool] = True
    #: Settings the command line uses unless told otherwise (train_ways, train_shots, queries, lr, ...).
    defaults: ClassVar[dict[str, Any]] = {}

    def save_config(self, **config: Any) -> None:
        """Record the constructor arguments so a checkpoint can rebuild the algorithm."""
        self._config = dict(config)

    def config(self) -> dict[str, Any]:
        return dict(getattr(self, "_config", {}))

    def train_step(self, batch: Episode) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} does not train")

    def embed_episode(self, x_support: Tensor, x_query: Tensor) -> tuple[Tensor, Tensor]:
        """Support and query embeddings from one forward pass of ``self.embed`` (so BatchNorm in training
        mode normalises both with the same statistics)."""
        emb = self.embed(torch.cat([x_support, x_query]))  # type: ignore[attr-defined]
        return emb[:len(x_support)], emb[len(x_support):]

    def predict(self, x_support: Tensor, y_support: Tensor, x_query: Tensor, ways: int) -> Tensor:
        raise NotImplementedError

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """The outer-loop optimizer (Adam unless an algorithm says otherwise)."""
        return torch.optim.Adam(self.parameters(), lr=lr)


def correct_fraction(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of correct predictions (0..1), as a tensor on the logits' device (no wait for a GPU)."""
    return (logits.argmax(dim=-1) == labels).float().mean()


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of correct predictions (0..1)."""
    return correct_fraction(logits, labels).item()


class EpisodicLossMixin:
    """``train_step`` for algorithms trained by a per-episode loss, averaged over the meta-batch.

    By default the loss is ``loss_fn`` (cross-entropy) of ``predict``'s query logits; an algorithm with
    another training signal (Siamese pairs) overrides ``episode_loss(task) -> (loss, accuracy)``, both
    tensors (nothing is read back from a GPU until the trainer logs).
    """

    loss_fn: ClassVar = staticmethod(F.cross_entropy)

    def episode_loss(self, task: Episode) -> tuple[Tensor, Tensor]:
        logits = self.predict(task.x_support, task.y_support, task.x_query, task.ways)
        return self.loss_fn(logits, task.y_query), correct_fraction(logits, task.y_query)

    def step_tensors(self, batch: Episode) -> dict[str, Tensor]:
        """:meth:`train_step` with its metrics left on the device (what a CUDA graph records)."""
        losses, accs = zip(*(self.episode_loss(task) for task in batch.tasks()))
        loss = torch.stack(losses).mean()
        loss.backward()
        return {"loss": loss.detach(), "accuracy": torch.stack(accs).mean()}

    def train_step(self, batch: Episode) -> dict[str, float]:
        return {key: value.item() for key, value in self.step_tensors(batch).items()}

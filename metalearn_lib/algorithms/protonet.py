"""Prototypical Networks.

Snell, J., Swersky, K., & Zemel, R. (2017). Prototypical networks for few-shot learning. *NeurIPS*
(Omniglot, Vinyals split, Conv-4: 98.8 / 99.7 / 96.0 / 98.9 on 5-way 1-shot / 5-way 5-shot /
20-way 1-shot / 20-way 5-shot, trained with 60-way episodes, Adam 1e-3 halved every 2000 episodes).

An embedding network ``f`` maps each image to a vector. A class is represented by the mean of the
embeddings of its support examples, its *prototype* ``c_k``; a query ``x`` is classified by a softmax
over minus the squared Euclidean distances ``-||f(x) - c_k||^2``. Training is episodic: the
cross-entropy of the query predictions, back-propagated into ``f``.

With the squared Euclidean distance the classifier is linear in ``f(x)``:
``-||f(x) - c_k||^2 = 2 c_k . f(x) - ||c_k||^2 - ||f(x)||^2``, and the last term is the same for every
class, so the logits equal those of a linear layer with ``w_k = 2 c_k``, ``b_k = -||c_k||^2``
(:func:`linear_classifier`), up to a per-query constant that the softmax ignores.

``symmetric=True`` uses each training episode twice (not in the paper): the queries are classified by
the support prototypes (the paper's loss), and the support images by prototypes made from the
queries, the same episode with the roles swapped; the loss is the mean of the two. Both come from one
forward pass, so the step costs the same, and every image now also acts as a prototype. For 1-shot
1-query episodes the swapped logits are the transpose of the paper's. On this book's 2-core CPU,
240 s of training, two runs at a time on one thread each (``benchmarks/cpu_sweep.sh``, pair
``p_paper240`` / ``p_sym240``): 97.03 / 91.81 against 96.88 / 91.02 on 5-way / 20-way 1-shot test
episodes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from metalearn_lib.algorithms.base import EpisodicLossMixin, FewShotAlgorithm, correct_fraction
from metalearn_lib.algorithms.metrics import cosine_similarity, prototypes, squared_euclidean
from metalearn_lib.episodes import Episode
from metalearn_lib.models.conv4 import Conv4

Distance = Literal["euclidean", "cosine"]


def prototype_logits(query_emb: Tensor, protos: Tensor, distance: Distance = "euclidean",
                     scale: float = 10.0) -> Tensor:
    """Logits ``[n_query, ways]``: ``-||q - c_k||^2``, or ``scale * cos(q, c_k)`` for ``distance="cosine"``.

    Cosine similarities lie in [-1, 1], too flat for a softmax to become confident, hence the ``scale``.
    """
    if distance == "euclidean":
        return -squared_euclidean(query_emb, protos)
    if distance == "cosine":
        return scale * cosine_similarity(query_emb, protos)
    raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")


def linear_classifier(protos: Tensor) -> tuple[Tensor, Tensor]:
    """The linear layer ``(W [ways, d], b [ways])`` equal to the Euclidean ProtoNet up to a per-query constant."""
    return 2 * protos, -protos.pow(2).sum(1)


class ProtoNet(EpisodicLossMixin, FewShotAlgorithm):
    """Prototypical Networks on a Conv-4 embedding (or any ``net`` mapping images to ``[n, d]``).

    Args:
        in_channels, image_size: size the default Conv-4 (ignored when ``net`` is given).
        net: the embedding network; ``None`` builds ``Conv4(in_channels, hidden, image_size=image_size, channels_last=True)``.
        distance: ``"euclidean"`` (squared, as in the paper) or ``"cosine"``.
        scale: multiplies cosine similarities (only with ``distance="cosine"``).
        hidden: Conv-4 filters per block.
        symmetric: train on each episode in both directions (see the module docstring); the paper's
            loss when ``False``. Prediction is the same either way.
    """

    name = "protonet"
    defaults: ClassVar[dict[str, Any]] = {
        # The CPU recipe of benchmarks/cpu_metric.sh (240 s on a 2-core machine): small 20-way 1-shot
        # 1-query episodes (40 images) with Adam 5e-3 decayed by a cosine, rotations as extra classes.
        # At equal time they beat 5-query episodes clearly (20-way 1-shot test: 92.1 against 89.8 in a
        # sweep at equal time): four times as many updates, and a CPU spends less per image on a small
        # batch that stays in its caches. The paper's GPU recipe (60-way, 5 queries, Adam 1e-3 halved
        # every 2,000 episodes) is in benchmarks/gpu_metric.sh.
        # Each episode is used in both directions (symmetric=True): see the module docstring.
        "train_ways": 20, "train_shots": 1, "queries": 1, "lr": 5e-3, "meta_batch": 1,
        "schedule": "cosine", "step_size": 2000, "gamma": 0.5, "image_size": 28, "rotations": True,
        "options": {"symmetric": True},
    }

    def __init__(self, in_channels: int = 1, image_size: int = 28, net: nn.Module | None = None,
                 distance: Distance = "euclidean", scale: float = 10.0, hidden: int = 64, symmetric: bool = False,
                 **_: Any) -> None:
        super().__init__()
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        if not isinstance(symmetric, bool):
            raise ValueError(f"symmetric must be true or false, got {symmetric!r}")
        self.net = net if net is not None else Conv4(in_channels, hidden, image_size=image_size, channels_last=True)
        self.distance, self.scale, self.symmetric = distance, float(scale), symmetric
        self.save_config(in_channels=in_channels, image_size=image_size, distance=distance, scale=scale, hidden=hidden,
                         symmetric=symmetric)

    def embed(self, x: Tensor) -> Tensor:
        """Embeddings ``[n, d]`` of images ``[n, C, H, W]``."""
        return self.net(x).flatten(1)

    def logits_from_embeddings(self, support_emb: Tensor, y_support: Tensor, query_emb: Tensor, ways: int) -> Tensor:
        return prototype_logits(query_emb, prototypes(support_emb, y_support, ways), self.distance, self.scale)

    def predict(self, x_support: Tensor, y_support: Tensor, x_query: Tensor, ways: int) -> Tensor:
        support_emb, query_emb = self.embed_episode(x_support, x_query)
        return self.logits_from_embeddings(support_emb, y_support, query_emb, ways)

    def episode_loss(self, task: Episode) -> tuple[Tensor, Tensor]:
        if not self.symmetric:
            return super().episode_loss(task)
        support_emb, query_emb = self.embed_episode(task.x_support, task.x_query)
        logits = self.logits_from_embeddings(support_emb, task.y_support, query_emb, task.ways)
        swapped = self.logits_from_embeddings(query_emb, task.y_query, support_emb, task.ways)
        loss = 0.5 * (self.loss_fn(logits, task.y_query) + self.loss_fn(swapped, task.y_support))
        return loss, correct_fraction(logits, task.y_query)



__all__ = ["ProtoNet", "prototype_logits", "linear_classifier"]

"""Siamese networks for one-shot learning, and face-verification-style evaluation.

Koch, G., Zemel, R., & Salakhutdinov, R. (2015). Siamese neural networks for one-shot image
recognition. *ICML Deep Learning Workshop* (Lake's 20 one-shot runs: 92.0%, 105x105 images,
trained on 30k-150k pairs with affine distortions).
Hadsell, R., Chopra, S., & LeCun, Y. (2006). Dimensionality reduction by learning an invariant
mapping. *CVPR* (the contrastive loss).

Twin copies of one encoder ``f`` (shared weights) embed two images; the network learns whether
they show the same class, from same/different pairs. Two variants:

- ``variant="koch"``: :class:`KochNet` on 105x105 images; ``p(same) = sigmoid(w . |f(x1) - f(x2)| + b)``
  (a weighted L1 distance), trained by binary cross-entropy.
- ``variant="contrastive"``: the shared Conv-4 at 28x28; ``d = ||f(x1) - f(x2)||_2``, trained by the
  contrastive loss ``same * d^2 + (1 - same) * max(0, margin - d)^2`` (halved).

N-way K-shot classification: a query takes the class of its most similar support example (highest
``p(same)``, or lowest distance). Verification (are these two images the same character?) is scored
with :func:`pair_scores`, :func:`roc_curve`, :func:`auc`, :func:`equal_error_rate` and
:func:`verification_accuracy`, all pure torch.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_lib.algorithms.base import EpisodicLossMixin, FewShotAlgorithm
from metalearn_lib.algorithms.metrics import best_per_class, euclidean
from metalearn_lib.data.base import ClassImages
from metalearn_lib.episodes import Episode
from metalearn_lib.models.conv4 import Conv4

Variant = Literal["koch", "contrastive"]
KOCH_IMAGE_SIZE = 105


class KochNet(nn.Module):
    """Koch et al.'s encoder: 64@10x10, pool, 128@7x7, pool, 128@4x4, pool, 256@4x4, fc 4096 + sigmoid.

    Every convolution is followed by a ReLU, every pooling is 2x2 max-pooling. On a 105x105 image the
    feature maps are 64x96x96 -> 64x48x48 -> 128x42x42 -> 128x21x21 -> 128x18x18 -> 128x9x9 -> 256x6x6,
    flattened to 9,216 and mapped to a 4,096-dimensional embedding in (0, 1).
    """

    def __init__(self, in_channels: int = 1, image_size: int = KOCH_IMAGE_SIZE, embedding_dim: int = 4096) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 10), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 7), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 128, 4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 4), nn.ReLU(), nn.Flatten())
        side = image_size
        for kernel, pool in ((10, 2), (7, 2), (4, 2), (4, 1)):
            side = (side - kernel + 1) // pool
        if side < 1:
            raise ValueError(f"KochNet needs larger images than {image_size}x{image_size}; use "
                             f"--image-size {KOCH_IMAGE_SIZE} (the paper's size), or variant='contrastive'")
        self.embedding_dim = embedding_dim
        self.fc = nn.Sequential(nn.Linear(256 * side * side, embedding_dim), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def balanced_pairs(y: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Index pairs ``(i, j, same)`` over items labelled ``y``: every same-label pair ``i < j``, and as many
    different-label pairs drawn at random without replacement (fewer if there are not enough)."""
    n = len(y)
    i, j = torch.triu_indices(n, n, offset=1, device=y.device)
    same = y[i] == y[j]
    pos, neg = same.nonzero().squeeze(1), (~same).nonzero().squeeze(1)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("pairs need at least two items of one class and two classes: use shots + queries >= 2 "
                         "and ways >= 2")
    perm = torch.randperm(len(neg), generator=generator).to(y.device)
    neg = neg[perm[:len(pos)]]
    keep = torch.cat([pos, neg])
    return i[keep], j[keep], same[keep].float()


def contrastive_loss(distance: Tensor, same: Tensor, margin: float = 1.0) -> Tensor:
    """Hadsell et al.'s loss, mean over pairs: ``(same d^2 + (1 - same) max(0, margin - d)^2) / 2``."""
    return 0.5 * (same * distance.pow(2) + (1 - same) * F.relu(margin - distance).pow(2)).mean()


class Siamese(EpisodicLossMixin, FewShotAlgorithm):
    """A Siamese network (``variant="koch"`` or ``"contrastive"``) trained on pairs drawn from episodes.

    Args:
        in_channels, image_size: size the default encoder (ignored when ``net`` is given).
        net: the twin encoder mapping images to ``[n, d]``; ``None`` builds :class:`KochNet` (koch) or
            Conv-4 (contrastive).
        variant: ``"koch"`` (weighted L1 + sigmoid, binary cross-entropy) or ``"contrastive"``.
        margin: the contrastive loss's margin (contrastive only).
        normalize: L2-normalise embeddings before distances (contrastive only), which makes the margin
            independent of the embedding's scale.
        embedding_dim: size of ``net``'s output, needed for Koch's head when ``net`` is given.
        hidden: Conv-4 filters per block.
    """

    name = "siamese"
    #: its training pairs are chosen with ``nonzero`` and a host-side ``randperm`` each step
    graph_safe: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {
        "train_ways": 20, "train_shots": 1, "queries": 4, "lr": 2e-3, "meta_batch": 1,
        "schedule": "cosine", "step_size": 2000, "gamma": 0.5, "image_size": 28, "rotations": True,
        "options": {"variant": "contrastive"},
    }

    def __init__(self, in_channels: int = 1, image_size: int = 28, net: nn.Module | None = None,
                 variant: Variant = "contrastive", margin: float = 1.0, normalize: bool = True,
                 embedding_dim: int | None = None, hidden: int = 64, **_: Any) -> None:
        super().__init__()
        if variant not in ("koch", "contrastive"):
            raise ValueError(f"variant must be 'koch' or 'contrastive', got {variant!r}")
        if net is None:
            net = (KochNet(in_channels, image_size) if variant == "koch"
                   else Conv4(in_channels, hidden, image_size=image_size, channels_last=True))
            embedding_dim = net.embedding_dim
        self.net, self.variant = net, variant
        self.margin, self.normalize = float(margin), bool(normalize)
        if variant == "koch":
            if embedding_dim is None:
                raise ValueError("variant='koch' with a custom net needs embedding_dim (the size of net's output)")
            self.head = nn.Linear(embedding_dim, 1)  # the weights alpha_j of the weighted L1 distance
        self.save_config(in_channels=in_channels, image_size=image_size, variant=variant, margin=margin,
                         normalize=normalize, embedding_dim=embedding_dim, hidden=hidden)

    def embed(self, x: Tensor) -> Tensor:
        emb = self.net(x).flatten(1)
        if self.variant == "contrastive" and self.normalize:
            emb = F.normalize(emb, dim=1)
        return emb

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """Similarity of embedding pairs ``a[i], b[i]`` (``[n]``): Koch's logit of p(same), or ``-distance``."""
        if self.variant == "koch":
            return self.head((a - b).abs()).squeeze(-1)
        return -(a - b).pow(2).sum(-1).add(1e-12).sqrt()

    def similarity_matrix(self, query_emb: Tensor, support_emb: Tensor) -> Tensor:
        """``[n_query, n_support]`` similarities of every query to every support example."""
        if self.variant == "koch":
            return self.head((query_emb[:, None, :] - support_emb[None, :, :]).abs()).squeeze(-1)
        return -euclidean(query_emb, support_emb)

    def pair_scores(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Similarity scores ``[n]`` of image pairs ``(x1[i], x2[i])``; higher means more likely the same class."""
        if x1.shape != x2.shape:
            raise ValueError(f"x1 and x2 must hold the same number of same-sized images, got {tuple(x1.shape)} "
                             f"and {tuple(x2.shape)}")
        emb = self.embed(torch.cat([x1, x2]))
        return self.similarity(emb[:len(x1)], emb[len(x1):])

    def pair_loss(self, score: Tensor, same: Tensor) -> Tensor:
        if self.variant == "koch":
            return F.binary_cross_entropy_with_logits(score, same)
        return contrastive_loss(-score, same, self.margin)

    def predict(self, x_support: Tensor, y_support: Tensor, x_query: Tensor, ways: int) -> Tensor:
        support_emb, query_emb = self.embed_episode(x_support, x_query)
        sim = self.similarity_matrix(query_emb, support_emb)  # [q, s]
        # a class scores its most similar support example (1-nearest neighbour for K shots)
        return best_per_class(sim, y_support, ways)

    def episode_loss(self, task: Episode) -> tuple[Tensor, Tensor]:
        """The pair loss on balanced same/different pairs of the episode's images; pair accuracy."""
        i, j, same = balanced_pairs(torch.cat([task.y_support, task.y_query]))
        emb = self.embed(torch.cat([task.x_support, task.x_query]))
        score = self.similarity(emb[i], emb[j])
        threshold = 0.0 if self.variant == "koch" else -self.margin / 2
        return self.pair_loss(score, same), ((score > threshold).float() == same).float().mean()


# ----------------------------------------------------------------------------------------- verification

def verification_pairs(classes: ClassImages, pairs: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``pairs`` image pairs from ``classes``, half same-class and half different-class, as float images.

    Returns ``(x1, x2, same)`` with ``same`` 1.0 for a same-class pair and 0.0 otherwise.
    """
    if pairs < 2:
        raise ValueError(f"need at least 2 pairs (one same, one different), got {pairs}")
    counts = classes.counts
    if classes.num_classes < 2 or int(counts.max()) < 2:
        raise ValueError("verification pairs need at least two classes and a class with two images")
    g = torch.Generator().manual_seed(seed)
    eligible = (counts >= 2).nonzero().squeeze(1)
    n_same = pairs // 2
    first, second = [], []
    for c in eligible[torch.randint(len(eligible), (n_same,), generator=g)].tolist():
        a, b = torch.randperm(int(counts[c]), generator=g)[:2].tolist()
        first.append(int(classes.offsets[c]) + a)
        second.append(int(classes.offsets[c]) + b)
    for _ in range(pairs - n_same):
        c1, c2 = torch.randperm(classes.num_classes, generator=g)[:2].tolist()
        first.append(int(classes.offsets[c1]) + int(torch.randint(int(counts[c1]), (1,), generator=g)))
        second.append(int(classes.offsets[c2]) + int(torch.randint(int(counts[c2]), (1,), generator=g)))

    def images(index: list[int]) -> Tensor:
        x = classes.images[torch.tensor(index)]
        return x.float().div(255) if x.dtype == torch.uint8 else x.float()

    same = torch.cat([torch.ones(n_same), torch.zeros(pairs - n_same)])
    return images(first), images(second), same


@torch.no_grad()
def pair_scores(model: Siamese, x1: Tensor, x2: Tensor, batch_size: int = 512) -> Tensor:
    """``model``'s similarity scores for the pairs ``(x1[i], x2[i])``, in eval mode, in batches."""
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), x1.device)  # a parameter-free net stays put
        return torch.cat([model.pair_scores(x1[k:k + batch_size].to(device), x2[k:k + batch_size].to(device)).cpu()
                          for k in range(0, len(x1), batch_size)])
    finally:
        model.train(was_training)


def check_scores(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Flattened float64 ``(scores, labels)`` of verification pairs, or one clear ``ValueError``
    (shapes differ, labels not 0/1, or only one kind of pair). Shared by every ROC-based measure."""
    scores, labels = scores.detach().flatten().double(), labels.detach().flatten().double()
    if scores.shape != labels.shape:
        raise ValueError(f"need one label per score, got {scores.numel()} scores and {labels.numel()} labels")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be 0 (different) or 1 (same)")
    positives = labels.sum()
    if positives == 0 or positives == len(labels):
        raise ValueError("an ROC curve needs both same (1) and different (0) pairs")
    return scores, labels


def roc_curve(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(fpr, tpr, thresholds)``: predicting "same" when ``score >= threshold``, for every distinct score.

    Thresholds decrease from ``+inf`` (nothing predicted same: the point (0, 0)) to the lowest score
    (everything predicted same: (1, 1)). Tied scores move the curve in one diagonal step.
    """
    scores, labels = check_scores(scores, labels)
    order = torch.argsort(scores, descending=True, stable=True)
    s, l = scores[order], labels[order]
    tps, fps = l.cumsum(0), (1 - l).cumsum(0)
    last_of_tie = torch.cat([(s[1:] != s[:-1]).nonzero().squeeze(1), torch.tensor([len(s) - 1])])
    zero = torch.zeros(1, dtype=torch.float64)
    tpr = torch.cat([zero, tps[last_of_tie] / tps[-1]])
    fpr = torch.cat([zero, fps[last_of_tie] / fps[-1]])
    thresholds = torch.cat([torch.tensor([float("inf")], dtype=torch.float64), s[last_of_tie]])
    return fpr, tpr, thresholds


def auc(fpr: Tensor, tpr: Tensor) -> float:
    """Area under the ROC curve (trapezoidal rule)."""
    return float(torch.trapezoid(tpr, fpr))


def equal_error_rate(fpr: Tensor, tpr: Tensor, thresholds: Tensor) -> tuple[float, float]:
    """``(eer, threshold)``: where the false-positive rate equals the false-negative rate ``1 - tpr``.

    Interpolated linearly between the two ROC points around the crossing; ``threshold`` is the first
    threshold at which the false-negative rate no longer exceeds the false-positive rate.
    """
    diff = fpr - (1 - tpr)            # rises from -1 at (0, 0) to +1 at (1, 1)
    diff = torch.where(diff.abs() < 1e-9, torch.zeros_like(diff), diff)  # 1/3 - (1 - 2/3) is not 0 in floats
    k = int((diff >= 0).nonzero()[0])
    if diff[k] == 0 or k == 0:
        return float(fpr[k]), float(thresholds[k])
    t = -diff[k - 1] / (diff[k] - diff[k - 1])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1])), float(thresholds[k])


def verification_accuracy(scores: Tensor, labels: Tensor, threshold: float | None = None) -> tuple[float, float]:
    """``(accuracy, threshold)`` of predicting "same" when ``score >= threshold``.

    With ``threshold=None`` the best threshold on these pairs is chosen (an optimistic figure: pick it
    on validation pairs and pass it in for an honest one).
    """
    s, l = check_scores(scores, labels)
    if threshold is not None:
        return float(((s >= threshold).double() == l).double().mean()), float(threshold)
    fpr, tpr, thresholds = roc_curve(s, l)
    p = l.sum()
    accs = (tpr * p + (1 - fpr) * (len(l) - p)) / len(l)
    best = int(accs.argmax())
    return float(accs[best]), float(thresholds[best])


__all__ = ["Siamese", "KochNet", "balanced_pairs", "contrastive_loss", "verification_pairs", "pair_scores",
           "check_scores", "roc_curve", "auc", "equal_error_rate", "verification_accuracy"]

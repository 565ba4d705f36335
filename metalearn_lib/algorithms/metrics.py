"""Distances, similarities and class prototypes shared by the metric-based algorithms.

Snell, J., Swersky, K., & Zemel, R. (2017). Prototypical networks for few-shot learning. *NeurIPS*.
Vinyals, O., Blundell, C., Lillicrap, T., Kavukcuoglu, K., & Wierstra, D. (2016). Matching networks for
one shot learning. *NeurIPS*.

Embeddings are ``[n, d]`` tensors; every function is differentiable and works on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_2d(name: str, t: Tensor) -> None:
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D [n, d] tensor of embeddings, got shape {tuple(t.shape)}; "
                         f"flatten it first (t.flatten(1))")


def squared_euclidean(a: Tensor, b: Tensor) -> Tensor:
    """``[n, m]`` matrix of squared Euclidean distances ``||a_i - b_j||^2`` between rows of ``a`` and ``b``.

    Computed by broadcasting rather than ``||a||^2 - 2ab + ||b||^2``, which can go slightly negative
    through cancellation; at few-shot sizes the memory is no concern.
    """
    _check_2d("a", a)
    _check_2d("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same embedding size, got {a.shape[1]} and {b.shape[1]}")
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)


def euclidean(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """``[n, m]`` Euclidean distances; ``eps`` keeps the gradient of the square root finite at 0."""
    return (squared_euclidean(a, b) + eps).sqrt()


def cosine_similarity(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """``[n, m]`` cosine similarities between rows of ``a`` and rows of ``b`` (in [-1, 1])."""
    _check_2d("a", a)
    _check_2d("b", b)
    return F.normalize(a, dim=1, eps=eps) @ F.normalize(b, dim=1, eps=eps).T


def one_hot(y: Tensor, ways: int) -> Tensor:
    """Float one-hot ``[n, ways]`` of integer labels ``y`` in ``0..ways-1``."""
    # the check reads the labels back to the host, which a CUDA graph being recorded cannot do
    capturing = y.is_cuda and torch.cuda.is_current_stream_capturing()
    if y.numel() and not capturing and (int(y.min()) < 0 or int(y.max()) >= ways):
        raise ValueError(f"labels must lie in 0..{ways - 1} for a {ways}-way task, "
                         f"got {y.min().item()}..{y.max().item()}")
    return F.one_hot(y.long(), ways).float()


def prototypes(emb: Tensor, y: Tensor, ways: int) -> Tensor:
    """Class means ``[ways, d]`` of the embeddings ``emb [n, d]`` with labels ``y [n]`` (Snell et al., eq. 1).

    A class with no example gets a zero prototype (it cannot be told apart, and nothing divides by 0).
    """
    _check_2d("emb", emb)
    if y.shape != emb.shape[:1]:
        raise ValueError(f"need one label per embedding: emb has {emb.shape[0]} rows, y has shape {tuple(y.shape)}")
    onehot = one_hot(y, ways).to(emb.dtype)                 # [n, ways]
    counts = onehot.sum(0).clamp_min(1)                     # [ways]
    return (onehot.T @ emb) / counts[:, None]


__all__ = ["squared_euclidean", "euclidean", "cosine_similarity", "one_hot", "prototypes"]


def best_per_class(scores: Tensor, y_support: Tensor, ways: int) -> Tensor:
    """``[n_query, ways]``: for each class, the highest score among its support examples (nearest neighbour)."""
    out = torch.full((len(scores), ways), float("-inf"), device=scores.device, dtype=scores.dtype)
    return out.scatter_reduce(1, y_support.expand(len(scores), -1), scores, reduce="amax")

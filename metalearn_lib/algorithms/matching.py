"""Matching Networks.

Vinyals, O., Blundell, C., Lillicrap, T., Kavukcuoglu, K., & Wierstra, D. (2016). Matching networks for
one shot learning. *NeurIPS* (Omniglot, Vinyals split, Conv-4: 98.1 / 98.9 / 93.8 / 98.5 on 5-way
1-shot / 5-way 5-shot / 20-way 1-shot / 20-way 5-shot; 97.9 / 98.7 / 93.5 / 98.7 with full context
embeddings).

A query ``x`` is labelled by attention over the support set:
``P(y | x, S) = sum_i a(x, x_i) y_i``, where ``y_i`` is the one-hot label of support example ``x_i`` and
``a`` is a softmax over the cosine similarities ``c(f(x), g(x_i))`` between embeddings. With
``fce=True`` the embeddings depend on the whole support set (*full context embeddings*, paper
appendix): ``g`` runs a bidirectional LSTM over the support embeddings, and ``f`` refines the query
embedding with ``steps`` rounds of an LSTM that attends over ``g(S)``.

The logits are ``log P(y | x, S)``, computed as a log-sum-exp of log-attention weights over each class's
support examples, so they are finite whenever a class has a support example (no ``log(0)`` of a
rounded-down probability), and ``-inf`` for a class with none.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_lib.algorithms.base import EpisodicLossMixin, FewShotAlgorithm
from metalearn_lib.algorithms.metrics import cosine_similarity, one_hot
from metalearn_lib.models.conv4 import Conv4


def attention_log_probs(similarities: Tensor, y_support: Tensor, ways: int) -> Tensor:
    """``log P(y=k | x) = log sum_{i: y_i = k} softmax_i(similarities)``, shape ``[n_query, ways]``.

    ``similarities`` is ``[n_query, n_support]``. Summing probabilities in log space (log-sum-exp of the
    log-softmax) is exact and never takes the log of an underflowed 0.
    """
    log_attention = similarities.log_softmax(dim=1)                          # [q, s]
    mask = one_hot(y_support, ways).T.bool()                                 # [ways, s]
    masked = log_attention[:, None, :].masked_fill(~mask[None], float("-inf"))  # [q, ways, s]
    return masked.logsumexp(dim=-1)


class SupportContext(nn.Module):
    """``g``: a bidirectional LSTM over the support embeddings, ``g(x_i) = h_fwd_i + h_bwd_i + g'(x_i)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, bidirectional=True, batch_first=True)

    def forward(self, support_emb: Tensor) -> Tensor:
        out, _ = self.lstm(support_emb[None])               # [1, s, 2*dim]
        forward, backward = out[0].chunk(2, dim=-1)
        return support_emb + forward + backward


class AttentionLSTM(nn.Module):
    """``f``: ``steps`` read-attend rounds refining each query embedding against ``g(S)`` (paper, appendix A.1).

    ``h_hat, c = LSTM(f'(x), [h, r], c)``; ``h = h_hat + f'(x)``; ``r = sum_i softmax(h . g(x_i)) g(x_i)``.
    The LSTM's recurrent input is the concatenation ``[h, r]``, as in the paper.
    """

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"the attention LSTM needs at least one processing step, got steps={steps}")
        self.steps = steps
        self.input_gates = nn.Linear(dim, 4 * dim)
        self.recurrent_gates = nn.Linear(2 * dim, 4 * dim, bias=False)

    def forward(self, query_emb: Tensor, support_ctx: Tensor) -> Tensor:
        h = torch.zeros_like(query_emb)
        c = torch.zeros_like(query_emb)
        r = torch.zeros_like(query_emb)
        x_gates = self.input_gates(query_emb)  # the input f'(x) is the same every step
        for _ in range(self.steps):
            i, f, g, o = (x_gates + self.recurrent_gates(torch.cat([h, r], dim=1))).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c) + query_emb   # skip connection: h = h_hat + f'(x)
            r = (h @ support_ctx.T).softmax(dim=1) @ support_ctx
        return h


class MatchingNet(EpisodicLossMixin, FewShotAlgorithm):
    """Matching Networks on a Conv-4 embedding (or any ``net`` mapping images to ``[n, d]``).

    Args:
        in_channels, image_size: size the default Conv-4 (ignored when ``net`` is given).
        net: the embedding network ``f' = g'`` (shared); ``None`` builds a Conv-4.
        fce: full context embeddings (bidirectional LSTM ``g``, attention LSTM ``f``).
        steps: processing steps ``K`` of the attention LSTM (only with ``fce``).
        scale: multiplies the cosine similarities before the softmax; 1 is the paper's plain cosine.
        hidden: Conv-4 filters per block.
        embedding_dim: size of ``net``'s output, needed for the FCE LSTMs when ``net`` is given.
    """

    name = "matching"
    loss_fn = staticmethod(F.nll_loss)  # predict returns log-probabilities already
    defaults: ClassVar[dict[str, Any]] = {
        # The CPU recipe of benchmarks/cpu_metric.sh, as for ProtoNet: small 20-way 1-shot 1-query
        # episodes, Adam 5e-3 with a cosine decay, rotations as extra classes.
        "train_ways": 20, "train_shots": 1, "queries": 1, "lr": 5e-3, "meta_batch": 1,
        "schedule": "cosine", "step_size": 2000, "gamma": 0.5, "image_size": 28, "rotations": True,
        # cosine similarities in [-1, 1] make a flat softmax: scaled, the network trains far faster on a
        # CPU budget (5-way 1-shot after 100 10-way episodes: 81% with 10 against 62% with the paper's
        # 1; benchmarks/cpu_sweep.sh: 96.9 with 20 against 95.6 with 10 at equal time)
        "options": {"scale": 20.0},
    }

    def __init__(self, in_channels: int = 1, image_size: int = 28, net: nn.Module | None = None,
                 fce: bool = False, steps: int = 5, scale: float = 1.0, hidden: int = 64,
                 embedding_dim: int | None = None, **_: Any) -> None:
        super().__init__()
        if net is None:
            net = Conv4(in_channels, hidden, image_size=image_size, channels_last=True)
            embedding_dim = net.embedding_dim
        self.net = net
        self.fce, self.scale = bool(fce), float(scale)
        if self.fce:
            if embedding_dim is None:
                raise ValueError("fce=True with a custom net needs embedding_dim (the size of net's output)")
            self.support_context = SupportContext(embedding_dim)
            self.query_context = AttentionLSTM(embedding_dim, steps)
        self.save_config(in_channels=in_channels, image_size=image_size, fce=self.fce, steps=steps, scale=scale,
                         hidden=hidden, embedding_dim=embedding_dim)

    def embed(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)

    def logits_from_embeddings(self, support_emb: Tensor, y_support: Tensor, query_emb: Tensor, ways: int) -> Tensor:
        if self.fce:
            support_emb = self.support_context(support_emb)
            query_emb = self.query_context(query_emb, support_emb)
        similarities = self.scale * cosine_similarity(query_emb, support_emb)
        return attention_log_probs(similarities, y_support, ways)

    def predict(self, x_support: Tensor, y_support: Tensor, x_query: Tensor, ways: int) -> Tensor:
        support_emb, query_emb = self.embed_episode(x_support, x_query)
        return self.logits_from_embeddings(support_emb, y_support, query_emb, ways)



__all__ = ["MatchingNet", "attention_log_probs", "SupportContext", "AttentionLSTM"]

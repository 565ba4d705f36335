"""Metric-based meta-learning: Prototypical Networks, Matching Networks, Siamese networks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalearn_lib.algorithms import ALGORITHMS, build_algorithm
from metalearn_lib.algorithms.matching import MatchingNet, attention_log_probs
from metalearn_lib.algorithms.metrics import cosine_similarity, prototypes, squared_euclidean
from metalearn_lib.algorithms.protonet import ProtoNet, linear_classifier
from metalearn_lib.algorithms.siamese import (KochNet, Siamese, auc, balanced_pairs, contrastive_loss,
                                              equal_error_rate, pair_scores, roc_curve, verification_accuracy,
                                              verification_pairs)
from metalearn_lib.data import omniglot
from metalearn_lib.data.base import ClassImages
from metalearn_lib.episodes import Episode, EpisodeSampler
from metalearn_lib.evaluation import evaluate
from metalearn_lib.training import TrainConfig, train


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ------------------------------------------------------------------------------------------ shared metrics

def test_metrics_by_hand():
    a, b = t([0, 0], [1, 1]), t([1, 0], [0, 2], [3, 4])
    torch.testing.assert_close(squared_euclidean(a, b), t([1, 4, 25], [1, 2, 13]))
    torch.testing.assert_close(cosine_similarity(t([1, 0]), t([2, 0], [0, 3], [1, 1])), t([1, 0, 1 / math.sqrt(2)]))
    torch.testing.assert_close(prototypes(t([0, 0], [2, 0], [0, 2]), torch.tensor([0, 0, 1]), 2), t([1, 0], [0, 2]))
    with pytest.raises(ValueError, match="labels must lie"):
        prototypes(t([0, 0]), torch.tensor([2]), 2)
    with pytest.raises(ValueError, match="2-D"):
        squared_euclidean(torch.zeros(3), torch.zeros(3, 1))


# ---------------------------------------------------------------------------------------------- ProtoNet

def test_protonet_logits_and_loss_by_hand():
    model = ProtoNet(net=nn.Identity())
    xs, ys, xq = t([0, 0], [2, 0], [0, 2]), torch.tensor([0, 0, 1]), t([1, 1])
    logits = model.predict(xs, ys, xq, 2)              # prototypes (1, 0), (0, 2): distances 1 and 2
    torch.testing.assert_close(logits, t([-1, -2]))
    torch.testing.assert_close(F.cross_entropy(logits, torch.tensor([0])), torch.tensor(math.log(1 + math.exp(-1))))
    cosine = ProtoNet(net=nn.Identity(), distance="cosine", scale=10.0)
    torch.testing.assert_close(cosine.predict(xs, ys, t([1, 0]), 2), t([10, 0]))
    with pytest.raises(ValueError, match="distance"):
        ProtoNet(net=nn.Identity(), distance="manhattan")


def test_protonet_is_a_linear_classifier():
    g = torch.Generator().manual_seed(0)
    support, query, y = torch.randn(15, 8, generator=g), torch.randn(7, 8, generator=g), torch.arange(5).repeat(3)
    model = ProtoNet(net=nn.Identity())
    logits = model.predict(support, y, query, 5)
    w, b = linear_classifier(prototypes(support, y, 5))
    linear = query @ w.T + b
    # equal up to the per-query constant -||f(x)||^2 ...
    torch.testing.assert_close(logits + query.pow(2).sum(1, keepdim=True), linear)
    # ... which the softmax ignores
    torch.testing.assert_close(logits.softmax(1), linear.softmax(1))


def test_protonet_symmetric_loss_by_hand():
    # Two classes, 1 shot and 1 query each, identity embedding: the swapped logits are the transpose.
    xs, ys, xq, yq = t([0, 0], [3, 0]), torch.tensor([0, 1]), t([1, 0], [3, 1]), torch.tensor([0, 1])
    task = Episode(xs, ys, xq, yq, ways=2, shots=1, queries=1)
    forward = t([-1, -4], [-10, -1])    # -||q_i - s_k||^2
    paper, _ = ProtoNet(net=nn.Identity()).episode_loss(task)
    torch.testing.assert_close(paper, F.cross_entropy(forward, yq))
    both, accuracy = ProtoNet(net=nn.Identity(), symmetric=True).episode_loss(task)
    torch.testing.assert_close(both, 0.5 * (F.cross_entropy(forward, yq) + F.cross_entropy(forward.T, ys)))
    assert accuracy == 1.0
    # 2 shots, 1 query: swapped, the queries are the (single-shot) prototypes and the 4 support images are classified
    xs2, ys2 = t([0, 0], [2, 0], [3, 0], [3, 2]), torch.tensor([0, 0, 1, 1])
    task2 = Episode(xs2, ys2, xq, yq, ways=2, shots=2, queries=1)
    swapped = -squared_euclidean(xs2, xq)
    forward2 = -squared_euclidean(xq, t([1, 0], [3, 1]))
    both2, _ = ProtoNet(net=nn.Identity(), symmetric=True).episode_loss(task2)
    torch.testing.assert_close(both2, 0.5 * (F.cross_entropy(forward2, yq) + F.cross_entropy(swapped, ys2)))
    with pytest.raises(ValueError, match="symmetric"):
        ProtoNet(net=nn.Identity(), symmetric="yes")


# ---------------------------------------------------------------------------------------- Matching Nets

def test_matching_logits_by_hand():
    model = MatchingNet(net=nn.Identity())
    xs, ys, xq = t([1, 0], [0, 1], [1, 1]), torch.tensor([0, 1, 1]), t([1, 0])
    e = [math.exp(1), math.exp(0), math.exp(1 / math.sqrt(2))]  # exp of the cosine similarities
    expected = t([math.log(e[0] / sum(e)), math.log((e[1] + e[2]) / sum(e))])
    logits = model.predict(xs, ys, xq, 2)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(F.nll_loss(logits, torch.tensor([1])), -expected[0, 1])
    # log-sum-exp keeps the log-probabilities finite where the probabilities underflow to 0
    far = attention_log_probs(t([0, -200, -200]) * 10, torch.tensor([0, 1, 1]), 2)
    assert torch.isfinite(far).all() and far[0, 1] < -1000
    # a class without support examples gets -inf, not NaN
    assert attention_log_probs(t([0.0, 0.0]), torch.tensor([0, 0]), 3)[0, 1:].eq(float("-inf")).all()


def test_matching_fce_shapes_and_needs_embedding_dim():
    model = MatchingNet(net=nn.Identity(), fce=True, steps=3, embedding_dim=2)
    logits = model.predict(t([1, 0], [0, 1], [1, 1]), torch.tensor([0, 1, 1]), t([1, 0], [0, 1]), 2)
    assert logits.shape == (2, 2)
    torch.testing.assert_close(logits.exp().sum(1), torch.ones(2))  # log-probabilities
    with pytest.raises(ValueError, match="embedding_dim"):
        MatchingNet(net=nn.Identity(), fce=True)


# ---------------------------------------------------------------------------------------------- Siamese

def test_siamese_contrastive_by_hand():
    model = Siamese(net=nn.Identity(), variant="contrastive", normalize=False, margin=3.0)
    xs, ys, xq = t([0, 0], [3, 4]), torch.tensor([0, 1]), t([0, 1])
    torch.testing.assert_close(model.predict(xs, ys, xq, 2), t([-1, -math.sqrt(18)]))
    # same pair at distance 1: 1^2; different pair at 2 < margin 3: (3 - 2)^2; halved, averaged
    torch.testing.assert_close(contrastive_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0]), margin=3.0),
                               torch.tensor(0.5))
    # K-shot: a class scores its nearest support example
    logits = model.predict(t([0, 0], [9, 9], [3, 4]), torch.tensor([0, 0, 1]), t([8, 8]), 2)
    torch.testing.assert_close(logits, t([-math.sqrt(2), -math.sqrt(41)]))


def test_siamese_koch_head_by_hand():
    model = Siamese(net=nn.Identity(), variant="koch", embedding_dim=2)
    with torch.no_grad():
        model.head.weight.copy_(t([1, 2]))
        model.head.bias.fill_(-1.0)
    # |(0,0) - (1,1)| = (1,1): 1 + 2 - 1 = 2;  |(0,0) - (0,0)| = 0: -1
    torch.testing.assert_close(model.pair_scores(t([0, 0], [0, 0]), t([1, 1], [0, 0])), torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(model.predict(t([1, 1], [0, 0]), torch.tensor([0, 1]), t([0, 0]), 2), t([2, -1]))
    torch.testing.assert_close(model.pair_loss(torch.tensor([2.0]), torch.tensor([1.0])),
                               torch.tensor(math.log(1 + math.exp(-2))))


def test_koch_layer_shapes():
    net = KochNet()
    x = torch.zeros(2, 1, 105, 105)
    shapes = []
    for layer in net.features:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 96, 96), (64, 48, 48), (128, 42, 42), (128, 21, 21), (128, 18, 18), (128, 9, 9),
                      (256, 6, 6)]
    assert x.shape == (2, 9216)
    out = net.fc(x)
    assert out.shape == (2, 4096) and bool(((out > 0) & (out < 1)).all())
    with pytest.raises(ValueError, match="image-size 105"):
        KochNet(image_size=28)


def test_balanced_pairs():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    i, j, same = balanced_pairs(y, torch.Generator().manual_seed(0))
    assert same.sum() == 4 and (1 - same).sum() == 4          # 3 + 1 same pairs, as many different
    assert bool(((y[i] == y[j]).float() == same).all()) and bool((i < j).all())
    with pytest.raises(ValueError, match="two items"):
        balanced_pairs(torch.tensor([0, 1, 2]))


# ----------------------------------------------------------------------------------------- verification

def test_roc_auc_eer_by_hand():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = torch.tensor([1, 1, 0, 1, 0, 0])
    fpr, tpr, thresholds = roc_curve(scores, labels)
    third = 1 / 3
    torch.testing.assert_close(fpr.float(), torch.tensor([0, 0, 0, third, third, 2 * third, 1]))
    torch.testing.assert_close(tpr.float(), torch.tensor([0, third, 2 * third, 2 * third, 1, 1, 1]))
    assert thresholds[0] == float("inf")
    torch.testing.assert_close(thresholds[1:].float(), scores)
    assert auc(fpr, tpr) == pytest.approx(8 / 9)      # 8 of the 9 (same, different) pairs ranked right
    eer, threshold = equal_error_rate(fpr, tpr, thresholds)
    assert eer == pytest.approx(1 / 3) and threshold == pytest.approx(0.7)
    assert verification_accuracy(scores, labels, threshold=0.65) == (pytest.approx(4 / 6), 0.65)
    best, best_threshold = verification_accuracy(scores, labels)
    assert best == pytest.approx(5 / 6) and best_threshold == pytest.approx(0.8)
    # ties move diagonally; an interpolated EER
    fpr, tpr, _ = roc_curve(torch.tensor([1.0, 1.0]), torch.tensor([1, 0]))
    assert fpr.tolist() == [0, 1] and tpr.tolist() == [0, 1] and auc(fpr, tpr) == pytest.approx(0.5)
    fpr, tpr, thr = roc_curve(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1, 0, 1]))
    assert equal_error_rate(fpr, tpr, thr)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both"):
        roc_curve(torch.tensor([1.0, 2.0]), torch.tensor([1, 1]))


def test_verification_pairs_and_scores():
    classes = ClassImages.from_grouped(torch.arange(4 * 3 * 4, dtype=torch.uint8).reshape(4, 3, 1, 2, 2), list("abcd"))
    x1, x2, same = verification_pairs(classes, 10, seed=0)
    assert x1.shape == x2.shape == (10, 1, 2, 2) and same.sum() == 5
    cls1, cls2 = (x1 * 255).round().long().flatten(1)[:, 0] // 12, (x2 * 255).round().long().flatten(1)[:, 0] // 12
    assert bool(((cls1 == cls2).float() == same).all())
    model = Siamese(net=nn.Flatten(), normalize=False)
    scores = pair_scores(model, x1, x2)
    assert scores.shape == (10,) and bool((scores <= 0).all())


# ------------------------------------------------------------------------------------ training contract

def tiny_batch(image_size: int, ways: int = 3, shots: int = 1, queries: int = 2, tasks: int = 2) -> Episode:
    g = torch.Generator().manual_seed(0)
    return Episode.stack([Episode(torch.rand(ways * shots, 1, image_size, image_size, generator=g),
                                  torch.arange(ways).repeat_interleave(shots),
                                  torch.rand(ways * queries, 1, image_size, image_size, generator=g),
                                  torch.arange(ways).repeat_interleave(queries), ways, shots, queries)
                          for _ in range(tasks)])


@pytest.mark.parametrize("name, options, image_size", [
    ("protonet", {}, 28), ("protonet", {"distance": "cosine"}, 28), ("protonet", {"symmetric": True}, 28),
    ("matching", {}, 28),
    ("matching", {"fce": True, "steps": 2}, 28), ("siamese", {"variant": "contrastive"}, 28),
    ("siamese", {"variant": "koch"}, 105)])
def test_gradients_reach_every_parameter(name, options, image_size):
    torch.manual_seed(0)
    model = build_algorithm(name, in_channels=1, image_size=image_size, ways=3, **options)
    model.train()
    metrics = model.train_step(tiny_batch(image_size, tasks=1 if image_size > 28 else 2))
    assert math.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    # rebuildable from its config, as checkpoints need
    rebuilt = build_algorithm(name, **model.config())
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    ep = tiny_batch(image_size, tasks=1).task(0)
    with torch.no_grad():
        logits = model.predict(ep.x_support, ep.y_support, ep.x_query, ep.ways)
        torch.testing.assert_close(logits, rebuilt.predict(ep.x_support, ep.y_support, ep.x_query, ep.ways))
    assert logits.shape == (6, 3)


def test_registered_with_defaults():
    for name in ("protonet", "matching", "siamese"):
        cls = ALGORITHMS[name]
        assert cls.__module__ == f"metalearn_lib.algorithms.{name}" and cls.__doc__
        assert set(cls.defaults) >= {"train_ways", "train_shots", "queries", "lr", "schedule", "image_size",
                                     "rotations", "options"}


# -------------------------------------------------------------------------------- real Omniglot, short runs

@pytest.fixture(scope="module")
def lake_trainval(data_root):
    return omniglot("lake", "trainval", rotations=True)


@pytest.mark.parametrize("name, options, ways, queries, steps, threshold", [
    ("protonet", {}, 10, 5, 80, 0.60),                      # measured 76% (seeded)
    ("protonet", {"symmetric": True}, 10, 5, 80, 0.60),     # measured 73%
    ("matching", {"scale": 10.0}, 10, 5, 80, 0.60),         # measured 80%
    ("siamese", {"variant": "contrastive"}, 10, 4, 80, 0.55),  # measured 75%
])
def test_short_training_beats_chance(lake_trainval, lake_test, one_thread, name, options, ways, queries, steps,
                                     threshold):
    train_classes, test_classes = lake_trainval, lake_test
    torch.manual_seed(0)
    model = build_algorithm(name, in_channels=1, image_size=28, ways=ways, **options)
    sampler = EpisodeSampler(train_classes, ways, 1, queries, seed=0)
    train(model, sampler, TrainConfig(steps=steps, lr=2e-3, schedule="cosine", progress=False))
    result = evaluate(model, test_classes, ways=5, shots=1, queries=5, episodes=100, seed=7)
    # chance is 20%; a few hundred seeded episodes already give a good embedding
    assert result.accuracy > 100 * threshold, str(result)

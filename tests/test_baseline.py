"""Baseline and Baseline++ (Chen et al., 2019): pretraining by classification, a new head per episode."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalearn_lib.algorithms.baseline import (Baseline, ClassBatch, ClassBatchSampler, CosineClassifier, chen_scale,
                                               head_gradients, make_head, pretrain)
from metalearn_lib.data.base import ClassImages
from metalearn_lib.episodes import EpisodeSampler
from metalearn_lib.evaluation import evaluate
from metalearn_lib.training import TrainConfig, train


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def tiny_classes(num_classes: int = 6, per_class: int = 4) -> ClassImages:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num_classes * per_class, 1, 28, 28), generator=g, dtype=torch.uint8)
    return ClassImages(images, torch.arange(num_classes + 1) * per_class, [f"c{i}" for i in range(num_classes)])


# ------------------------------------------------------------------------------------------------- shapes

def test_shapes_of_pretraining_and_prediction():
    torch.manual_seed(0)
    model = Baseline(num_classes=7, head="linear")
    x = torch.rand(10, 1, 28, 28)
    assert model.embed(x).shape == (10, 64)
    assert model.classifier(model.embed(x)).shape == (10, 7)
    metrics = model.train_step(ClassBatch(x, torch.arange(10) % 7))
    assert set(metrics) == {"loss", "accuracy"} and metrics["loss"] > 0
    assert all(p.grad is not None for p in model.parameters())   # backbone and classifier both learn
    model.eval()
    for head in ("linear", "cosine"):
        model.head = head
        logits = model.predict(torch.rand(15, 1, 28, 28), torch.arange(5).repeat_interleave(3),
                               torch.rand(20, 1, 28, 28), 5)
        assert logits.shape == (20, 5) and not logits.requires_grad
    # a checkpoint's config rebuilds the same model
    rebuilt = Baseline(**model.config())
    rebuilt.load_state_dict(model.state_dict())


# ------------------------------------------------------------------------------------------- cosine head

def test_cosine_head_by_hand():
    head = CosineClassifier(2, 2, scale=2.0)
    with torch.no_grad():
        head.weight.copy_(t([1, 0], [0, 2]))   # directions (1, 0) and (0, 1)
        head.norm.copy_(t(1, 3))               # class-wise lengths g
    z = t([3, 4])                               # cosines 0.6 and 0.8
    torch.testing.assert_close(head(z), t([2 * 1 * 0.6, 2 * 3 * 0.8]))
    plain = CosineClassifier(2, 2, scale=10.0, learnable_norm=False)
    with torch.no_grad():
        plain.weight.copy_(t([1, 0], [-1, -1]))
    torch.testing.assert_close(plain(z), t([6.0, -10 * 7 / (5 * math.sqrt(2))]))
    # a scaled embedding has the same logits: only directions count
    torch.testing.assert_close(head(5 * z), head(z))
    assert chen_scale(5) == 2.0 and chen_scale(200) == 2.0 and chen_scale(964) == 10.0
    # the learnable length starts at the norm of the initial direction, as weight normalisation does
    fresh = CosineClassifier(8, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fresh.norm.detach(), fresh.weight.detach().norm(dim=1))


@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_hand_gradients_equal_autograd(head):
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(12, 6, generator=g), torch.arange(4).repeat(3)
    layer = make_head(head, 6, 4, scale=3.0, generator=g)
    F.cross_entropy(layer(z), y).backward()
    z_in = F.normalize(z, dim=1, eps=1e-5) if head == "cosine" else z
    grads = head_gradients(head, [p.detach() for p in layer.parameters()], z_in, F.one_hot(y, 4).float(),
                           scale=getattr(layer, "scale", 1.0), normalized=True)
    for mine, param in zip(grads, layer.parameters()):
        torch.testing.assert_close(mine, param.grad)


@pytest.mark.parametrize("head,batch", [("linear", None), ("cosine", None), ("linear", 4), ("cosine", 4)])
def test_finetune_equals_torch_sgd(head, batch):
    g = torch.Generator().manual_seed(0)
    z, y = torch.rand(15, 64, generator=g) * 3, torch.arange(5).repeat_interleave(3)
    model = Baseline(num_classes=10, head=head, finetune_steps=20, finetune_batch=batch)
    fast = model.finetune(z, y, 5)
    ref = model.new_head(5)
    optimizer = torch.optim.SGD(ref.parameters(), lr=model.finetune_lr, momentum=0.9, dampening=0.9,
                                weight_decay=1e-3)
    order_gen, position, order = torch.Generator().manual_seed(model.seed), 0, None
    for _ in range(20):
        if batch is None:
            zb, yb = z, y
        else:
            if position >= len(y):
                position = 0
            if position == 0:
                order = torch.randperm(len(y), generator=order_gen)
            pick, position = order[position:position + batch], position + batch
            zb, yb = z[pick], y[pick]
        optimizer.zero_grad()
        F.cross_entropy(ref(zb), yb).backward()
        optimizer.step()
    for a, b in zip(fast.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)
    # deterministic: the same support set gives the same head
    for a, b in zip(model.finetune(z, y, 5).parameters(), fast.parameters()):
        torch.testing.assert_close(a, b)


# -------------------------------------------------------------------------------------- learning signal

def test_finetuning_separates_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 3
    xs = centres.repeat_interleave(2, 0) + 0.3 * torch.randn(10, 16, generator=g)
    xq = centres.repeat_interleave(4, 0) + 0.3 * torch.randn(20, 16, generator=g)
    ys, yq = torch.arange(5).repeat_interleave(2), torch.arange(5).repeat_interleave(4)
    for head in ("linear", "cosine"):
        model = Baseline(num_classes=5, head=head, net=nn.Identity(), embedding_dim=16)
        assert (model.predict(xs, ys, xq, 5).argmax(1) == yq).all(), head


def test_pretraining_then_finetuning_beats_chance(lake_train, lake_test):
    torch.manual_seed(0)
    classes = lake_train.subset(range(40))
    model = Baseline(num_classes=40, head="cosine")
    result = pretrain(model, classes, TrainConfig(steps=12, lr=2e-3, progress=False, log_every=4), batch_size=32)
    assert result.steps == 12 and len(result.history["loss"]) == 3
    accuracy = evaluate(model, lake_test, ways=5, shots=5, queries=5, episodes=8, seed=3)
    assert accuracy.accuracy > 45, accuracy   # chance is 20%


# ------------------------------------------------------------------------------------ the batch sampler

def test_class_batch_sampler_epochs_labels_and_resume():
    classes = tiny_classes(6, 4)
    sampler = ClassBatchSampler(classes, batch_size=8, seed=1)
    seen = torch.cat([sampler.sample_batch().y for _ in range(3)])   # one epoch of 24 images
    assert sorted(seen.tolist()) == sorted(torch.arange(6).repeat_interleave(4).tolist())
    batch = sampler.sample_batch(2)
    assert batch.x.shape == (16, 1, 28, 28) and batch.x.dtype == torch.float32 and float(batch.x.max()) <= 1
    for i in range(16):   # each image carries the global label of its class
        label = int(batch.y[i])
        assert any(torch.equal((classes[label][j].float() / 255), batch.x[i]) for j in range(4))
    state = sampler.state_dict()
    ahead = [sampler.sample_batch().y for _ in range(4)]
    sampler.load_state_dict(state)
    assert all(torch.equal(a, sampler.sample_batch().y) for a in ahead)


def test_shared_trainer_pretrains_with_validation_episodes():
    torch.manual_seed(0)
    classes = tiny_classes(6, 4)
    model = Baseline(num_classes=6, finetune_steps=5)
    val = EpisodeSampler(tiny_classes(3, 4), ways=3, shots=1, queries=1, seed=0)
    result = train(model, ClassBatchSampler(classes, 8), TrainConfig(steps=2, val_every=1, val_episodes=2,
                                                                      progress=False, log_every=1), val_sampler=val)
    assert result.steps == 2 and len(result.validation["accuracy"]) == 2


# -------------------------------------------------------------------------------------------- bad input

def test_bad_input_errors():
    with pytest.raises(ValueError, match="num_classes"):
        Baseline()
    with pytest.raises(ValueError, match="head must be"):
        Baseline(num_classes=5, head="euclidean")
    with pytest.raises(ValueError, match="finetune_steps"):
        Baseline(num_classes=5, finetune_steps=-1)
    with pytest.raises(ValueError, match="finetune_batch"):
        Baseline(num_classes=5, finetune_batch=0)
    with pytest.raises(ValueError, match="embedding_dim"):
        Baseline(num_classes=5, net=nn.Identity())
    model = Baseline(num_classes=5)
    episode = EpisodeSampler(tiny_classes(6, 4), ways=2, shots=1, queries=1).sample()
    with pytest.raises(ValueError, match="ClassBatchSampler"):
        model.train_step(episode)
    with pytest.raises(ValueError, match="0..4"):
        model.train_step(ClassBatch(torch.rand(2, 1, 28, 28), torch.tensor([0, 5])))
    with pytest.raises(ValueError, match="support labels"):
        model.finetune(torch.rand(4, 64), torch.tensor([0, 1, 2, 3]), 3)
    with pytest.raises(ValueError, match=r"\[n, 64\]"):
        model.finetune(torch.rand(4, 32), torch.tensor([0, 1, 0, 1]), 2)
    with pytest.raises(ValueError, match="one label per"):
        model.finetune(torch.rand(4, 64), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="num_classes=classes.num_classes"):
        pretrain(model, tiny_classes(6, 4), TrainConfig(steps=1, progress=False))
    with pytest.raises(ValueError, match="batch_size"):
        ClassBatchSampler(tiny_classes(), batch_size=0)
    with pytest.raises(ValueError, match="at most 24"):
        ClassBatchSampler(tiny_classes(6, 4), batch_size=25)
    with pytest.raises(ValueError, match="head must be"):
        make_head("rbf", 4, 2)
    with pytest.raises(ValueError, match="scale must be positive"):
        CosineClassifier(4, 2, scale=0)

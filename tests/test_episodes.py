"""Episodes: shapes, labels, seeded determinism, devices, and every bad request."""

from __future__ import annotations

import pytest
import torch

from metalearn_lib.data import ClassImages
from metalearn_lib.episodes import Episode, EpisodeSampler


def toy_classes(num_classes: int = 10, per_class: int = 6) -> ClassImages:
    # image value = class * 100 + index, so every drawn image can be traced back to its source
    images = (torch.arange(num_classes * per_class, dtype=torch.float32) + 0).reshape(num_classes, per_class, 1, 1, 1)
    images = images.expand(-1, -1, 1, 2, 2).clone()
    return ClassImages.from_grouped(images, [f"c{i}" for i in range(num_classes)])


def source(x):
    """Which (class, image) each image in x came from (toy_classes encodes it in the pixel value)."""
    flat = x[..., 0, 0, 0].long()
    return flat // 6, flat % 6


def test_shapes_and_labels(lake_test):
    sampler = EpisodeSampler(lake_test, ways=5, shots=2, queries=3, seed=0)
    ep = sampler.sample()
    assert ep.x_support.shape == (10, 1, 28, 28) and ep.x_query.shape == (15, 1, 28, 28)
    assert ep.y_support.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert ep.y_query.tolist() == [i for i in range(5) for _ in range(3)]
    assert ep.x_support.dtype == torch.float32 and 0 <= ep.x_support.min() and ep.x_support.max() <= 1


def test_support_and_query_come_from_the_right_distinct_classes():
    sampler = EpisodeSampler(toy_classes(), ways=4, shots=2, queries=3, seed=1)
    for _ in range(20):
        ep = sampler.sample()
        cls_s, img_s = source(ep.x_support)
        cls_q, img_q = source(ep.x_query)
        assert len(set(cls_s.tolist())) == 4  # four different classes
        for label in range(4):
            klass = cls_s[ep.y_support == label]
            assert (klass == klass[0]).all() and (cls_q[ep.y_query == label] == klass[0]).all()
            used = img_s[ep.y_support == label].tolist() + img_q[ep.y_query == label].tolist()
            assert len(set(used)) == 5  # support and query never share an image


def test_same_seed_same_episodes_and_other_seed_others(lake_test):
    a = EpisodeSampler(lake_test, 5, 1, 5, seed=7)
    b = EpisodeSampler(lake_test, 5, 1, 5, seed=7)
    c = EpisodeSampler(lake_test, 5, 1, 5, seed=8)
    for _ in range(3):
        ea, eb, ec = a.sample(), b.sample(), c.sample()
        assert torch.equal(ea.x_support, eb.x_support) and torch.equal(ea.x_query, eb.x_query)
    assert not torch.equal(ea.x_query, ec.x_query)


def test_state_dict_resumes_the_stream(lake_test):
    a = EpisodeSampler(lake_test, 5, 1, 5, seed=7)
    a.sample()
    state = a.state_dict()
    expected = a.sample()
    b = EpisodeSampler(lake_test, 5, 1, 5, seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.sample().x_query, expected.x_query)


def test_meta_batches_stack_tasks():
    sampler = EpisodeSampler(toy_classes(), ways=3, shots=1, queries=2, seed=0)
    batch = sampler.sample_batch(4)
    assert batch.is_batch and batch.num_tasks == 4
    assert batch.x_support.shape == (4, 3, 1, 2, 2) and batch.y_query.shape == (4, 6)
    assert batch.task(2).x_query.shape == (6, 1, 2, 2)
    assert len(batch.tasks()) == 4
    # a meta-batch is a deterministic function of the seed as well
    again = EpisodeSampler(toy_classes(), ways=3, shots=1, queries=2, seed=0).sample_batch(4)
    assert torch.equal(batch.x_query, again.x_query)
    restacked = Episode.stack(batch.tasks())
    assert torch.equal(restacked.x_support, batch.x_support)


def test_uneven_class_sizes_are_supported():
    classes = ClassImages.from_list([torch.zeros(n, 1, 2, 2) for n in (3, 5, 9)], ["a", "b", "c"])
    ep = EpisodeSampler(classes, ways=3, shots=1, queries=2, seed=0).sample()
    assert ep.x_query.shape == (6, 1, 2, 2)


def test_episodes_on_a_device():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ep = EpisodeSampler(toy_classes(), 3, 1, 1, seed=0, device=device).sample_batch(2)
    assert ep.x_support.device.type == device and ep.y_query.device.type == device


@pytest.mark.parametrize("kwargs,message", [
    ({"ways": 11, "shots": 1, "queries": 1}, "cannot draw 11-way episodes: toy has only 10 classes"),
    ({"ways": 5, "shots": 4, "queries": 3}, r"cannot draw 4 shots \+ 3 queries per class: toy has classes with only 6"),
    ({"ways": 0, "shots": 1, "queries": 1}, "ways must be a positive integer"),
    ({"ways": 5, "shots": -1, "queries": 1}, "shots must be a positive integer"),
    ({"ways": 5, "shots": 1, "queries": 0}, "queries must be a positive integer"),
    ({"ways": 1, "shots": 1, "queries": 1}, "ways must be at least 2"),
    ({"ways": 2.5, "shots": 1, "queries": 1}, "ways must be a positive integer"),
])
def test_bad_requests_say_what_and_why(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(toy_classes(), seed=0, name="toy", **kwargs)


def test_bad_meta_batch():
    with pytest.raises(ValueError, match="positive number of tasks"):
        EpisodeSampler(toy_classes(), 3, 1, 1).sample_batch(0)

"""Hidden tests, assignment 1: the episode sampler (8 points)."""

import torch

from metalearn_lib.assignments.checks import call, equal, fail, function, part, tensor
from metalearn_lib.data.base import ClassImages


def numbered_classes(num_classes=12, base=20):
    """Classes of different sizes whose every image holds its own global index (float images)."""
    per_class, start = [], 0
    for c in range(num_classes):
        n = base + c % 3
        per_class.append(torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone())
        start += n
    return ClassImages.from_list(per_class, [f"c{c}" for c in range(num_classes)])


def draw(sub, classes, ways, shots, queries, seed):
    out = call(function(sub, "sample_episode"), classes, ways, shots, queries, torch.Generator().manual_seed(seed))
    if not isinstance(out, tuple) or len(out) != 4:
        fail("sample_episode should return a tuple (x_support, y_support, x_query, y_query)")
    return out


def class_of(classes, index):
    return int(torch.searchsorted(classes.offsets, torch.tensor(index), right=True)) - 1


@part(1, "episode_labels gives grouped labels")
def check_labels(sub):
    fn = function(sub, "episode_labels")
    for ways, per in [(3, 2), (5, 1), (2, 4)]:
        equal(call(fn, ways, per), torch.arange(ways).repeat_interleave(per), f"episode_labels({ways}, {per})")


@part(1, "sample_episode returns tensors of the right shapes and labels")
def check_shapes(sub):
    classes = numbered_classes()
    x_s, y_s, x_q, y_q = draw(sub, classes, 4, 2, 3, 0)
    tensor(x_s, "x_support", (8, 1, 2, 2))
    tensor(x_q, "x_query", (12, 1, 2, 2))
    equal(y_s, torch.arange(4).repeat_interleave(2), "y_support")
    equal(y_q, torch.arange(4).repeat_interleave(3), "y_query")


@part(1, "each label is one class, and the classes are distinct")
def check_classes(sub):
    classes = numbered_classes()
    for seed in range(5):
        x_s, y_s, x_q, y_q = draw(sub, classes, 5, 2, 3, seed)
        owner = {}
        for x, y in [(x_s, y_s), (x_q, y_q)]:
            for image, label in zip(x[:, 0, 0, 0].tolist(), tensor(y, "labels").tolist()):
                c = class_of(classes, int(image))
                if owner.setdefault(label, c) != c:
                    fail(f"label {label} holds images of two different classes (seed {seed})")
        if len(set(owner.values())) != 5:
            fail(f"a 5-way episode used {len(set(owner.values()))} distinct classes (seed {seed})")


@part(1, "support and query images are distinct images")
def check_disjoint(sub):
    classes = numbered_classes()
    for seed in range(5):
        x_s, _, x_q, _ = draw(sub, classes, 4, 3, 5, seed)
        ids = x_s[:, 0, 0, 0].tolist() + x_q[:, 0, 0, 0].tolist()
        if len(set(ids)) != len(ids):
            fail(f"an image appears twice in one episode (support and query must not overlap; seed {seed})")


@part(1, "reproducible with the generator, random across seeds, uint8 scaled to [0, 1]")
def check_random(sub):
    classes = numbered_classes()
    a, b = draw(sub, classes, 3, 1, 1, 7), draw(sub, classes, 3, 1, 1, 7)
    if not torch.equal(a[0], b[0]) or not torch.equal(a[2], b[2]):
        fail("the same generator seed gave two different episodes: draw only from `generator`")
    seen = set()
    for seed in range(40):
        seen.update(class_of(classes, int(i)) for i in draw(sub, classes, 3, 1, 1, seed)[0][:, 0, 0, 0].tolist())
    if len(seen) < classes.num_classes:
        fail(f"over 40 episodes only {len(seen)} of {classes.num_classes} classes were ever drawn")
    raw = ClassImages.from_grouped(torch.randint(0, 256, (6, 5, 1, 3, 3), dtype=torch.uint8), list("abcdef"))
    x_s, _, x_q, _ = draw(sub, raw, 2, 2, 2, 0)
    if tensor(x_s, "x_support").dtype != torch.float32:
        fail(f"uint8 images should come back as float32 in [0, 1], got {x_s.dtype}")
    if float(x_s.max()) > 1 or float(x_s.min()) < 0:
        fail("uint8 images should be divided by 255")


@part(2, "check_request rejects impossible requests and accepts possible ones")
def check_validation(sub):
    fn = function(sub, "check_request")
    classes = numbered_classes()  # 12 classes, the smallest of 20 images
    for ok in [(2, 1, 1), (12, 10, 10), (5, 1, 19)]:
        call(fn, classes, *ok)
    for bad in [(13, 1, 1), (5, 10, 11), (5, 0, 5), (5, 1, 0), (1, 1, 1), (-3, 1, 1)]:
        try:
            fn(classes, *bad)
        except ValueError:
            continue
        except NotImplementedError:
            fail("`check_request` is not written yet (it raises NotImplementedError)")
        except Exception as error:  # noqa: BLE001
            fail(f"check_request{bad} raised {type(error).__name__}, expected ValueError")
        fail(f"check_request(ways, shots, queries = {bad}) should raise ValueError")

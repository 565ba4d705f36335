"""Hidden tests, assignment 2: Prototypical Networks (10 points)."""

import torch
import torch.nn.functional as F
from torch import nn

from metalearn_lib.assignments.checks import call, close, fail, function, part, tensor
from metalearn_lib.data import omniglot
from metalearn_lib.episodes import EpisodeSampler

TARGET = 0.60  # 5-way 1-shot accuracy the trained network must reach (the solution gets about 0.75)


def ref_prototypes(z, y, ways):
    return torch.stack([z[y == k].mean(0) for k in range(ways)])


def ref_logits(q, p):
    return -torch.cdist(q.double(), p.double()).pow(2)


@part(2, "prototypes are the class means (any label order)")
def check_prototypes(sub):
    fn = function(sub, "prototypes")
    g = torch.Generator().manual_seed(0)
    for n, d, ways in [(6, 4, 3), (10, 7, 5), (4, 64, 2)]:
        z = torch.randn(n, d, generator=g)
        y = torch.arange(ways).repeat_interleave(n // ways)[torch.randperm(n // ways * ways, generator=g)]
        z = z[:len(y)]
        close(call(fn, z, y, ways), ref_prototypes(z, y, ways), f"prototypes for {len(y)} embeddings, {ways} ways")


@part(2, "euclidean_logits are minus squared distances")
def check_logits(sub):
    fn = function(sub, "euclidean_logits")
    g = torch.Generator().manual_seed(1)
    for n, ways, d in [(3, 2, 2), (15, 5, 64), (1, 4, 8)]:
        q, p = torch.randn(n, d, generator=g), torch.randn(ways, d, generator=g)
        close(call(fn, q, p), ref_logits(q, p), f"euclidean_logits for {n} queries and {ways} prototypes", atol=1e-4)


@part(2, "protonet_loss: cross-entropy and accuracy of one episode, differentiable")
def check_loss(sub):
    fn = function(sub, "protonet_loss")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8))
    g = torch.Generator().manual_seed(2)
    x_s, x_q = torch.randn(6, 1, 4, 4, generator=g), torch.randn(9, 1, 4, 4, generator=g)
    y_s, y_q = torch.arange(3).repeat_interleave(2), torch.arange(3).repeat_interleave(3)
    out = call(fn, net, x_s, y_s, x_q, y_q, 3)
    if not isinstance(out, tuple) or len(out) != 2:
        fail("protonet_loss should return (loss, accuracy)")
    loss, acc = out
    tensor(loss, "the loss", ())
    with torch.no_grad():
        logits = ref_logits(net(x_q), ref_prototypes(net(x_s), y_s, 3))
    close(loss, F.cross_entropy(logits, y_q), "the loss", atol=1e-4)
    want = float((logits.argmax(1) == y_q).double().mean())
    if not isinstance(acc, (float, int)) and not (type(acc) is torch.Tensor and acc.numel() == 1):
        fail(f"the accuracy should be a float, got {type(acc).__name__}")
    if abs(float(acc) - want) > 1e-6:
        fail(f"the accuracy is {float(acc):.4f}, expected {want:.4f}")
    if not loss.requires_grad:
        fail("the loss does not require grad: it must be differentiable with respect to the network")


@part(4, "train_protonet(train, steps=200, seed=0) reaches 60% on 5-way 1-shot test episodes")
def check_training(sub):
    fn = function(sub, "train_protonet")
    net = call(fn, omniglot("lake", "train"), steps=200, seed=0)
    if not isinstance(net, nn.Module):
        fail(f"train_protonet should return the trained nn.Module, got {type(net).__name__}")
    net.eval()
    sampler = EpisodeSampler(omniglot("lake", "test"), 5, 1, 5, seed=20260)
    correct = total = 0
    with torch.no_grad():
        for _ in range(100):
            e = sampler.sample()
            z = tensor(call(net, torch.cat([e.x_support, e.x_query])), "the network's output")
            if z.dim() != 2 or len(z) != 30:
                fail(f"the network should map 30 images to [30, d] embeddings, got {tuple(z.shape)}")
            logits = ref_logits(z[5:], ref_prototypes(z[:5], e.y_support, 5))
            correct += int((logits.argmax(1) == e.y_query).sum())
            total += len(e.y_query)
    accuracy = correct / total
    if not accuracy >= TARGET:
        fail(f"accuracy {100 * accuracy:.1f}% on 100 test episodes, below the target {100 * TARGET:.0f}%")
    return f"passed: {100 * accuracy:.1f}% on 100 test episodes (target {100 * TARGET:.0f}%)"

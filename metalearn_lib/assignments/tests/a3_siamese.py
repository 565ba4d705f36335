"""Hidden tests, assignment 3: contrastive loss and one-shot verification (7 points)."""

import torch
from torch import nn

from metalearn_lib.assignments.checks import call, close, equal, fail, function, part, tensor


def ref_loss(d, same, margin):
    same = same.double()
    d = d.double()
    return (same * 0.5 * d ** 2 + (1 - same) * 0.5 * (margin - d).clamp_min(0) ** 2).mean()


@part(1, "pair_distance is the row-wise Euclidean distance, finite gradient at 0")
def check_distance(sub):
    fn = function(sub, "pair_distance")
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    close(call(fn, z1, z2), torch.linalg.norm((z1 - z2).double(), dim=1), "pair_distance")
    a = torch.ones(2, 3, requires_grad=True)
    out = tensor(call(fn, a, torch.ones(2, 3)), "pair_distance of identical rows", (2,))
    out.sum().backward()
    if a.grad is None or not torch.isfinite(a.grad).all():
        fail("the gradient of pair_distance at distance 0 is not finite: clamp before the square root")


@part(1, "contrastive_loss of same pairs is half the squared distance")
def check_same(sub):
    fn = function(sub, "contrastive_loss")
    d = torch.tensor([0.0, 0.3, 1.5, 4.0])
    same = torch.ones(4)
    close(call(fn, d, same, margin=1.0), ref_loss(d, same, 1.0), "contrastive_loss of same-class pairs")


@part(1, "contrastive_loss of different pairs is the hinge on the margin")
def check_different(sub):
    fn = function(sub, "contrastive_loss")
    d = torch.tensor([0.0, 0.3, 1.5, 4.0])
    for margin in (1.0, 2.0):
        close(call(fn, d, torch.zeros(4), margin=margin), ref_loss(d, torch.zeros(4), margin),
              f"contrastive_loss of different-class pairs with margin {margin}")


@part(1, "contrastive_loss on mixed pairs, bool labels, gradients")
def check_mixed(sub):
    fn = function(sub, "contrastive_loss")
    g = torch.Generator().manual_seed(3)
    d = (torch.rand(20, generator=g) * 2).requires_grad_()
    same = torch.rand(20, generator=g) > 0.5
    loss = tensor(call(fn, d, same, margin=1.25), "the loss", ())
    close(loss, ref_loss(d.detach(), same, 1.25), "contrastive_loss with bool labels and margin 1.25")
    loss.backward()
    want = torch.where(same, d.detach(), -(1.25 - d.detach()).clamp_min(0)) / 20
    close(d.grad, want, "the gradient of contrastive_loss with respect to the distances")


@part(3, "one_shot_predict picks the nearest support image")
def check_predict(sub):
    fn = function(sub, "one_shot_predict")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(9, 4))
    g = torch.Generator().manual_seed(4)
    for ways, n_query in [(5, 10), (3, 1), (20, 20)]:
        x_s, x_q = torch.randn(ways, 1, 3, 3, generator=g), torch.randn(n_query, 1, 3, 3, generator=g)
        with torch.no_grad():
            want = torch.cdist(net(x_q).double(), net(x_s).double()).argmin(1)
            got = call(fn, net, x_s, x_q)
        equal(got, want, f"one_shot_predict ({ways} ways, {n_query} queries)")

"""Hidden tests, assignment 4: MAML inner loop and meta-gradients (9 points)."""

import torch
import torch.nn.functional as F

from metalearn_lib.assignments.checks import call, close, fail, function, part
from metalearn_lib.data.sinusoid import SinusoidSampler


def params_of(hidden, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(hidden, 1), (hidden,), (hidden, hidden), (hidden,), (1, hidden), (1,)]
    return [(torch.randn(*s, generator=g, dtype=torch.float64) * 0.5).requires_grad_() for s in shapes]


def ref_forward(params, x):
    w1, b1, w2, b2, w3, b3 = params
    return F.linear(torch.relu(F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2)), w3, b3)


def ref_inner(params, x, y, lr, steps):
    for _ in range(steps):
        grads = torch.autograd.grad(F.mse_loss(ref_forward(params, x), y), params, create_graph=True)
        params = [p - lr * g for p, g in zip(params, grads)]
    return params


def ref_meta(params, tasks, lr, steps):
    losses = [F.mse_loss(ref_forward(ref_inner(params, tasks.x_support[i], tasks.y_support[i], lr, steps), tasks.x_query[i]),
                         tasks.y_query[i]) for i in range(tasks.x_support.shape[0])]
    return torch.autograd.grad(torch.stack(losses).mean(), params)


def sinusoids(tasks, seed):
    t = SinusoidSampler(shots=5, queries=8, seed=seed).sample_batch(tasks)
    for name in ("x_support", "y_support", "x_query", "y_query"):
        setattr(t, name, getattr(t, name).double())
    return t


def as_list(out, what, n=6):
    if not isinstance(out, (list, tuple)) or len(out) != n:
        fail(f"{what} should return a list of {n} tensors (one per parameter)")
    return list(out)


@part(2, "inner_loop takes the right SGD steps")
def check_inner_values(sub):
    fn = function(sub, "inner_loop")
    t = sinusoids(1, 0)
    for steps, lr in [(1, 0.01), (3, 0.05)]:
        params = params_of(8, steps)
        got = as_list(call(fn, params, t.x_support[0], t.y_support[0], lr, steps), "inner_loop")
        want = ref_inner(params, t.x_support[0], t.y_support[0], lr, steps)
        for i, (a, b) in enumerate(zip(got, want)):
            close(a, b, f"adapted parameter {i} after {steps} step(s) of size {lr}", atol=1e-8, rtol=1e-6)


@part(1, "inner_loop is differentiable and leaves params unchanged")
def check_inner_graph(sub):
    fn = function(sub, "inner_loop")
    t = sinusoids(1, 1)
    params = params_of(8, 5)
    copies = [p.detach().clone() for p in params]
    got = as_list(call(fn, params, t.x_support[0], t.y_support[0], 0.02, 2), "inner_loop")
    for p, c in zip(params, copies):
        if not torch.equal(p.detach(), c):
            fail("inner_loop changed `params` in place: build new tensors instead")
    loss = F.mse_loss(ref_forward(got, t.x_query[0]), t.y_query[0])
    second = torch.autograd.grad(loss, params[0], allow_unused=True)[0]
    want = torch.autograd.grad(F.mse_loss(ref_forward(ref_inner(params, t.x_support[0], t.y_support[0], 0.02, 2),
                                                       t.x_query[0]), t.y_query[0]), params[0])[0]
    if second is None:
        fail("the adapted parameters are not connected to `params`: no gradient flows through inner_loop")
    close(second, want, "the gradient through inner_loop (did you use create_graph=True?)", atol=1e-8, rtol=1e-6)


@part(2, "meta_gradient is MAML's second-order meta-gradient (one step, one task)")
def check_meta_one(sub):
    fn = function(sub, "meta_gradient")
    t = sinusoids(1, 2)
    params = params_of(8, 7)
    got = as_list(call(fn, params, t, 0.03, 1), "meta_gradient")
    for i, (a, b) in enumerate(zip(got, ref_meta(params, t, 0.03, 1))):
        close(a, b, f"meta-gradient of parameter {i}", atol=1e-8, rtol=1e-6)


@part(1, "meta_gradient averages over tasks, with several inner steps")
def check_meta_batch(sub):
    fn = function(sub, "meta_gradient")
    t = sinusoids(3, 3)
    params = params_of(6, 8)
    got = as_list(call(fn, params, t, 0.02, 2), "meta_gradient")
    for i, (a, b) in enumerate(zip(got, ref_meta(params, t, 0.02, 2))):
        close(a, b, f"meta-gradient of parameter {i} (3 tasks, 2 inner steps)", atol=1e-8, rtol=1e-6)


@part(3, "meta_gradient_by_hand equals the autograd meta-gradient")
def check_by_hand(sub):
    fn = function(sub, "meta_gradient_by_hand")
    for seed, hidden, lr in [(4, 8, 0.03), (5, 5, 0.2)]:
        t = sinusoids(1, seed)
        params = params_of(hidden, seed)
        got = as_list(call(fn, params, t.x_support[0], t.y_support[0], t.x_query[0], t.y_query[0], lr),
                      "meta_gradient_by_hand")
        for i, (a, b) in enumerate(zip(got, ref_meta(params, t, lr, 1))):
            close(a, b, f"hand-computed meta-gradient of parameter {i} (inner_lr {lr})", atol=1e-8, rtol=1e-6)

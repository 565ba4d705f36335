"""Hidden tests, assignment 4: MAML inner loop and meta-gradients (9 points)."""

import torch
import torch.nn.functional as F

from metalearn_lib.assignments.checks import (call, close, fail, function, mlp_forward, mlp_params, part,
                                             sinusoid_tasks, tensor_list)


def ref_inner(params, x, y, lr, steps):
    for _ in range(steps):
        grads = torch.autograd.grad(F.mse_loss(mlp_forward(params, x), y), params, create_graph=True)
        params = [p - lr * g for p, g in zip(params, grads)]
    return params


def ref_meta(params, tasks, lr, steps):
    losses = [F.mse_loss(mlp_forward(ref_inner(params, tasks.x_support[i], tasks.y_support[i], lr, steps), tasks.x_query[i]),
                         tasks.y_query[i]) for i in range(tasks.x_support.shape[0])]
    return torch.autograd.grad(torch.stack(losses).mean(), params)


@part(2, "inner_loop takes the right SGD steps")
def check_inner_values(sub):
    fn = function(sub, "inner_loop")
    t = sinusoid_tasks(1, 0, shots=5, queries=8)
    for steps, lr in [(1, 0.01), (3, 0.05)]:
        params = mlp_params(8, steps, requires_grad=True)
        got = tensor_list(call(fn, params, t.x_support[0], t.y_support[0], lr, steps), "inner_loop")
        want = ref_inner(params, t.x_support[0], t.y_support[0], lr, steps)
        for i, (a, b) in enumerate(zip(got, want)):
            close(a, b, f"adapted parameter {i} after {steps} step(s) of size {lr}", atol=1e-8, rtol=1e-6)


@part(1, "inner_loop is differentiable and leaves params unchanged")
def check_inner_graph(sub):
    fn = function(sub, "inner_loop")
    t = sinusoid_tasks(1, 1, shots=5, queries=8)
    params = mlp_params(8, 5, requires_grad=True)
    copies = [p.detach().clone() for p in params]
    got = tensor_list(call(fn, params, t.x_support[0], t.y_support[0], 0.02, 2), "inner_loop")
    for p, c in zip(params, copies):
        if not torch.equal(p.detach(), c):
            fail("inner_loop changed `params` in place: build new tensors instead")
    loss = F.mse_loss(mlp_forward(got, t.x_query[0]), t.y_query[0])
    second = torch.autograd.grad(loss, params[0], allow_unused=True)[0]
    want = torch.autograd.grad(F.mse_loss(mlp_forward(ref_inner(params, t.x_support[0], t.y_support[0], 0.02, 2),
                                                       t.x_query[0]), t.y_query[0]), params[0])[0]
    if second is None:
        fail("the adapted parameters are not connected to `params`: no gradient flows through inner_loop")
    close(second, want, "the gradient through inner_loop (did you use create_graph=True?)", atol=1e-8, rtol=1e-6)


@part(2, "meta_gradient is MAML's second-order meta-gradient (one step, one task)")
def check_meta_one(sub):
    fn = function(sub, "meta_gradient")
    t = sinusoid_tasks(1, 2, shots=5, queries=8)
    params = mlp_params(8, 7, requires_grad=True)
    got = tensor_list(call(fn, params, t, 0.03, 1), "meta_gradient")
    for i, (a, b) in enumerate(zip(got, ref_meta(params, t, 0.03, 1))):
        close(a, b, f"meta-gradient of parameter {i}", atol=1e-8, rtol=1e-6)


@part(1, "meta_gradient averages over tasks, with several inner steps")
def check_meta_batch(sub):
    fn = function(sub, "meta_gradient")
    t = sinusoid_tasks(3, 3, shots=5, queries=8)
    params = mlp_params(6, 8, requires_grad=True)
    got = tensor_list(call(fn, params, t, 0.02, 2), "meta_gradient")
    for i, (a, b) in enumerate(zip(got, ref_meta(params, t, 0.02, 2))):
        close(a, b, f"meta-gradient of parameter {i} (3 tasks, 2 inner steps)", atol=1e-8, rtol=1e-6)


@part(3, "meta_gradient_by_hand equals the autograd meta-gradient")
def check_by_hand(sub):
    fn = function(sub, "meta_gradient_by_hand")
    for seed, hidden, lr in [(4, 8, 0.03), (5, 5, 0.2)]:
        t = sinusoid_tasks(1, seed, shots=5, queries=8)
        params = mlp_params(hidden, seed, requires_grad=True)
        got = tensor_list(call(fn, params, t.x_support[0], t.y_support[0], t.x_query[0], t.y_query[0], lr),
                      "meta_gradient_by_hand")
        for i, (a, b) in enumerate(zip(got, ref_meta(params, t, lr, 1))):
            close(a, b, f"hand-computed meta-gradient of parameter {i} (inner_lr {lr})", atol=1e-8, rtol=1e-6)

"""Hidden tests, assignment 5: the Reptile update (7 points)."""

import torch
import torch.nn.functional as F

from metalearn_lib.assignments.checks import (call, close, fail, function, mlp_forward, mlp_params, part,
                                             sinusoid_tasks, tensor_list)
from metalearn_lib.data.sinusoid import SinusoidSampler


def ref_adapt(params, x, y, lr, steps):
    phi = [p.detach().clone().requires_grad_() for p in params]
    for _ in range(steps):
        grads = torch.autograd.grad(F.mse_loss(mlp_forward(phi, x), y), phi)
        phi = [(p - lr * g).detach().requires_grad_() for p, g in zip(phi, grads)]
    return [p.detach() for p in phi]


def ref_update(params, adapted, eps):
    return [p + eps * (torch.stack([a[j] for a in adapted]).mean(0) - p) for j, p in enumerate(params)]


@part(2, "adapt takes SGD steps, returns detached tensors, leaves params unchanged")
def check_adapt(sub):
    fn = function(sub, "adapt")
    t = sinusoid_tasks(1, 0)
    for steps, lr in [(1, 0.02), (4, 0.05)]:
        params = mlp_params(8, steps)
        copies = [p.clone() for p in params]
        got = tensor_list(call(fn, params, t.x_support[0], t.y_support[0], lr, steps), "adapt")
        for i, (a, b) in enumerate(zip(got, ref_adapt(params, t.x_support[0], t.y_support[0], lr, steps))):
            close(a, b, f"adapted parameter {i} after {steps} step(s) of size {lr}", atol=1e-8, rtol=1e-6)
            if a.grad_fn is not None:
                fail("adapt should return tensors without an autograd graph (detach them)")
        if any(not torch.equal(p, c) for p, c in zip(params, copies)):
            fail("adapt changed `params` in place")


@part(2, "reptile_update moves theta toward the mean of the adapted weights")
def check_update(sub):
    fn = function(sub, "reptile_update")
    params = mlp_params(5, 1)
    adapted = [mlp_params(5, 10 + i) for i in range(3)]
    for eps in (0.1, 1.0):
        got = tensor_list(call(fn, params, adapted, eps), "reptile_update")
        for i, (a, b) in enumerate(zip(got, ref_update(params, adapted, eps))):
            close(a, b, f"updated parameter {i} with outer_lr {eps}", atol=1e-10, rtol=1e-8)


@part(1, "reptile_step is adapt on each task, then the update")
def check_step(sub):
    fn = function(sub, "reptile_step")
    t = sinusoid_tasks(3, 2)
    params = mlp_params(6, 3)
    got = tensor_list(call(fn, params, t, 0.03, 3, 0.5), "reptile_step")
    adapted = [ref_adapt(params, t.x_support[i], t.y_support[i], 0.03, 3) for i in range(3)]
    for i, (a, b) in enumerate(zip(got, ref_update(params, adapted, 0.5))):
        close(a, b, f"parameter {i} after one Reptile step over 3 tasks", atol=1e-8, rtol=1e-6)


@part(2, "meta-training with reptile_step makes 5-step adaptation at least 25% better")
def check_training(sub):
    step, init, fwd = function(sub, "reptile_step"), function(sub, "init_params"), function(sub, "forward")
    theta = call(init, seed=0)
    test = sinusoid_tasks(30, 100, queries=50, double=False)

    def mse(params):
        total = 0.0
        for i in range(30):
            phi = ref_adapt(params, test.x_support[i], test.y_support[i], 0.02, 5)
            total += float(F.mse_loss(call(fwd, phi, test.x_query[i]), test.y_query[i]))
        return total / 30

    initial = mse(theta)
    sampler = SinusoidSampler(shots=10, queries=1, seed=7)
    iterations = 1500
    for it in range(iterations):
        theta = tensor_list(call(step, theta, sampler.sample_batch(1), 0.02, 5, 0.1 * (1 - it / iterations)), "reptile_step")
    final = mse(theta)
    if not final < 0.75 * initial:
        fail(f"query MSE after adaptation went from {initial:.3f} to {final:.3f}: expected at least 25% lower")
    return f"passed: query MSE after adaptation {initial:.3f} -> {final:.3f}"

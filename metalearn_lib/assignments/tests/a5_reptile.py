"""Hidden tests, assignment 5: the Reptile update (7 points)."""

import torch
import torch.nn.functional as F

from metalearn_lib.assignments.checks import call, close, fail, function, part
from metalearn_lib.data.sinusoid import SinusoidSampler


def params_of(hidden, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(hidden, 1), (hidden,), (hidden, hidden), (hidden,), (1, hidden), (1,)]
    return [torch.randn(*s, generator=g, dtype=torch.float64) * 0.5 for s in shapes]


def ref_forward(params, x):
    w1, b1, w2, b2, w3, b3 = params
    return F.linear(torch.relu(F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2)), w3, b3)


def ref_adapt(params, x, y, lr, steps):
    phi = [p.detach().clone().requires_grad_() for p in params]
    for _ in range(steps):
        grads = torch.autograd.grad(F.mse_loss(ref_forward(phi, x), y), phi)
        phi = [(p - lr * g).detach().requires_grad_() for p, g in zip(phi, grads)]
    return [p.detach() for p in phi]


def ref_update(params, adapted, eps):
    return [p + eps * (torch.stack([a[j] for a in adapted]).mean(0) - p) for j, p in enumerate(params)]


def sinusoids(tasks, seed, shots=10, queries=10, double=True):
    t = SinusoidSampler(shots=shots, queries=queries, seed=seed).sample_batch(tasks)
    if double:
        for name in ("x_support", "y_support", "x_query", "y_query"):
            setattr(t, name, getattr(t, name).double())
    return t


def as_list(out, what, n=6):
    if not isinstance(out, (list, tuple)) or len(out) != n:
        fail(f"{what} should return a list of {n} tensors (one per parameter)")
    return list(out)


@part(2, "adapt takes SGD steps, returns detached tensors, leaves params unchanged")
def check_adapt(sub):
    fn = function(sub, "adapt")
    t = sinusoids(1, 0)
    for steps, lr in [(1, 0.02), (4, 0.05)]:
        params = params_of(8, steps)
        copies = [p.clone() for p in params]
        got = as_list(call(fn, params, t.x_support[0], t.y_support[0], lr, steps), "adapt")
        for i, (a, b) in enumerate(zip(got, ref_adapt(params, t.x_support[0], t.y_support[0], lr, steps))):
            close(a, b, f"adapted parameter {i} after {steps} step(s) of size {lr}", atol=1e-8, rtol=1e-6)
            if a.grad_fn is not None:
                fail("adapt should return tensors without an autograd graph (detach them)")
        if any(not torch.equal(p, c) for p, c in zip(params, copies)):
            fail("adapt changed `params` in place")


@part(2, "reptile_update moves theta toward the mean of the adapted weights")
def check_update(sub):
    fn = function(sub, "reptile_update")
    params = params_of(5, 1)
    adapted = [params_of(5, 10 + i) for i in range(3)]
    for eps in (0.1, 1.0):
        got = as_list(call(fn, params, adapted, eps), "reptile_update")
        for i, (a, b) in enumerate(zip(got, ref_update(params, adapted, eps))):
            close(a, b, f"updated parameter {i} with outer_lr {eps}", atol=1e-10, rtol=1e-8)


@part(1, "reptile_step is adapt on each task, then the update")
def check_step(sub):
    fn = function(sub, "reptile_step")
    t = sinusoids(3, 2)
    params = params_of(6, 3)
    got = as_list(call(fn, params, t, 0.03, 3, 0.5), "reptile_step")
    adapted = [ref_adapt(params, t.x_support[i], t.y_support[i], 0.03, 3) for i in range(3)]
    for i, (a, b) in enumerate(zip(got, ref_update(params, adapted, 0.5))):
        close(a, b, f"parameter {i} after one Reptile step over 3 tasks", atol=1e-8, rtol=1e-6)


@part(2, "meta-training with reptile_step makes 5-step adaptation at least 25% better")
def check_training(sub):
    step, init, fwd = function(sub, "reptile_step"), function(sub, "init_params"), function(sub, "forward")
    theta = call(init, seed=0)
    test = sinusoids(30, 100, queries=50, double=False)

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
        theta = as_list(call(step, theta, sampler.sample_batch(1), 0.02, 5, 0.1 * (1 - it / iterations)), "reptile_step")
    final = mse(theta)
    if not final < 0.75 * initial:
        fail(f"query MSE after adaptation went from {initial:.3f} to {final:.3f}: expected at least 25% lower")
    return f"passed: query MSE after adaptation {initial:.3f} -> {final:.3f}"

"""Correctness of MAML, FOMAML, Meta-SGD, ANIL and Reptile (metalearn_lib.algorithms.maml / reptile).

Tiny float64 networks, so the checks are exact to rounding: the meta-gradient against finite
differences, against learn2learn and higher, vmap against the loop, first order against a manual
computation, inner steps and learning rates, Reptile's update, and a short real Omniglot run.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metalearn_lib.algorithms import ALGORITHMS, build_algorithm
from metalearn_lib.algorithms.maml import (ANIL, FOMAML, MAML, InputScale, MetaSGD, adapt, evaluate_regression,
                                           regression_mses, sinusoid_mlp)
from metalearn_lib.algorithms.reptile import Reptile
from metalearn_lib.data.sinusoid import SinusoidSampler
from metalearn_lib.episodes import Episode
from metalearn_lib.models.conv4 import Conv4

WAYS, SHOTS, QUERIES, TASKS = 3, 2, 2, 3


@pytest.fixture(autouse=True)
def _float64():
    old, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # tiny ops: threads only add overhead, and much more on a busy machine
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)
    torch.set_num_threads(threads)


def mlp(bn: bool = False) -> nn.Module:
    """4 -> 5 -> 3 with tanh (smooth, for finite differences), optionally a batch-statistics BatchNorm."""
    layers = [nn.Flatten(), nn.Linear(4, 5)] + ([nn.BatchNorm1d(5, track_running_stats=False)] if bn else [])
    return nn.Sequential(*layers, nn.Tanh(), nn.Linear(5, WAYS))


class Split(nn.Module):
    """A body and a head, as ANIL expects."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.BatchNorm1d(5, track_running_stats=False),
                                      nn.Tanh())
        self.head = nn.Linear(5, WAYS)

    def forward(self, x):
        return self.head(self.features(x))


def tiny_conv() -> nn.Module:
    return Conv4(1, hidden=3, out_features=WAYS, bn="batch", image_size=16)


def vector_batch(tasks: int = TASKS) -> Episode:
    labels_s = torch.arange(WAYS).repeat_interleave(SHOTS).repeat(tasks, 1)
    labels_q = torch.arange(WAYS).repeat_interleave(QUERIES).repeat(tasks, 1)
    return Episode(torch.randn(tasks, WAYS * SHOTS, 4), labels_s, torch.randn(tasks, WAYS * QUERIES, 4), labels_q,
                   WAYS, SHOTS, QUERIES)


def image_batch(tasks: int = TASKS) -> Episode:
    b = vector_batch(tasks)
    return Episode(torch.randn(tasks, WAYS * SHOTS, 1, 16, 16), b.y_support,
                   torch.randn(tasks, WAYS * QUERIES, 1, 16, 16), b.y_query, WAYS, SHOTS, QUERIES)


def meta_grad(algo, batch, vectorize=False) -> list[torch.Tensor]:
    algo.zero_grad(set_to_none=True)
    algo.vectorize = vectorize
    algo.train_step(batch)
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in algo.parameters()]


def close(a, b, tol=1e-8):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)


# ------------------------------------------------------------------------------------------- MAML

def test_registered():
    for name in ("maml", "fomaml", "metasgd", "anil", "reptile"):
        assert name in ALGORITHMS
    assert build_algorithm("fomaml").first_order and build_algorithm("anil").head_only
    assert build_algorithm("metasgd").lr_mode == "per_param"


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_finite_differences(first_order):
    """Second order is the exact gradient of the meta-loss (central differences along random directions);
    first order is not."""
    algo = MAML(net=mlp(bn=True), ways=WAYS, inner_lr=0.5, inner_steps=2, first_order=first_order)
    batch = vector_batch()
    grads = meta_grad(algo, batch)
    params, eps = list(algo.parameters()), 1e-6
    errors = []
    for _ in range(4):
        direction = [torch.randn_like(p) for p in params]

        def loss_at(scale: float) -> float:
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.add_(scale * d)
            value = algo.meta_loss(batch, vectorize=False)[0].item()
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.sub_(scale * d)
            return value

        numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
        analytic = sum((g * d).sum() for g, d in zip(grads, direction)).item()
        errors.append(abs(numeric - analytic) / max(1.0, abs(numeric)))
    if first_order:
        assert max(errors) > 1e-4
    else:
        assert max(errors) < 1e-7, errors


@pytest.mark.parametrize("first_order", [False, True])
def test_matches_learn2learn_and_higher(first_order):
    l2l = pytest.importorskip("learn2learn")
    higher = pytest.importorskip("higher")
    alpha, steps = 0.3, 2
    algo = MAML(net=mlp(bn=True), ways=WAYS, inner_lr=alpha, inner_steps=steps, first_order=first_order)
    batch = vector_batch()
    ours = meta_grad(algo, batch)

    model = mlp(bn=True)
    model.load_state_dict(algo.net.state_dict())
    maml = l2l.algorithms.MAML(model, lr=alpha, first_order=first_order)
    total = 0.0
    for t in batch.tasks():
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(t.x_support), t.y_support))
        total = total + F.cross_entropy(learner(t.x_query), t.y_query)
    (total / TASKS).backward()
    close(ours, [p.grad for p in model.parameters()], tol=1e-5)

    if not first_order:  # higher's first-order mode (track_higher_grads=False) also cuts θ' from θ
        model = mlp(bn=True)
        model.load_state_dict(algo.net.state_dict())
        inner = torch.optim.SGD(model.parameters(), lr=alpha)
        for t in batch.tasks():
            with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(steps):
                    diffopt.step(F.cross_entropy(fmodel(t.x_support), t.y_support))
                (F.cross_entropy(fmodel(t.x_query), t.y_query) / TASKS).backward()
        close(ours, [p.grad for p in model.parameters()], tol=1e-5)


@pytest.mark.parametrize("cls,options", [(MAML, {}), (FOMAML, {}), (MetaSGD, {}), (ANIL, {}),
                                         (MAML, {"lr_mode": "per_step", "inner_steps": 2})])
def test_vmap_equals_loop(cls, options):
    """Includes Conv4's batch-statistics BatchNorm, whose double backward under vmap needs the workaround."""
    algo = cls(net=tiny_conv(), ways=WAYS, inner_lr=0.3, **options)
    batch = image_batch()
    close(meta_grad(algo, batch, vectorize=True), meta_grad(algo, batch, vectorize=False), tol=1e-9)


@pytest.mark.parametrize("cls,options", [(MAML, {"inner_steps": 2}), (FOMAML, {"inner_steps": 2}), (MetaSGD, {}),
                                         (MAML, {"lr_mode": "per_step", "inner_steps": 2})])
@pytest.mark.parametrize("problem", ["regression", "classification"])
def test_batched_mlp_equals_loop(cls, options, problem):
    """The "bmm" path (per-task views of θ, batched matrix products) gives the loop's meta-gradient."""
    if problem == "regression":
        net = nn.Sequential(nn.Linear(1, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1))
        batch = SinusoidSampler(shots=5, queries=7, seed=0).sample_batch(TASKS)
    else:
        net, batch = mlp(), vector_batch()
    algo = cls(net=net, ways=WAYS, inner_lr=0.05, problem=problem, vectorize="bmm", **options)
    close(meta_grad(algo, batch, vectorize="bmm"), meta_grad(algo, batch, vectorize=False), tol=1e-9)
    algo.vectorize = "bmm"
    torch.testing.assert_close(algo.meta_loss(batch)[1], algo.meta_loss(batch, vectorize=False)[1])


def test_batched_mlp_refuses_other_networks():
    with pytest.raises(ValueError, match="multilayer perceptrons only"):
        MAML(net=tiny_conv(), ways=WAYS, vectorize="bmm")
    with pytest.raises(ValueError, match="multilayer perceptrons only"):
        MAML(net=mlp(bn=True), ways=WAYS, vectorize="bmm")  # batch statistics would mix the tasks
    with pytest.raises(ValueError, match="ANIL"):
        ANIL(net=Split(), ways=WAYS, vectorize="bmm")
    with pytest.raises(ValueError, match="vectorize must be"):
        MAML(net=mlp(), ways=WAYS, vectorize="fast")


@pytest.mark.parametrize("steps", [1, 2])
def test_first_order_is_query_gradient_at_adapted_weights(steps):
    """FOMAML's meta-gradient = ∇L_query(θ'): second order without the Hessian terms."""
    alpha = 0.4
    algo = FOMAML(net=mlp(), ways=WAYS, inner_lr=alpha, inner_steps=steps)
    batch = vector_batch()
    ours = meta_grad(algo, batch)
    net = algo.net
    expected = [torch.zeros_like(p) for p in net.parameters()]
    for t in batch.tasks():
        theta = {k: v.detach().clone() for k, v in net.named_parameters()}
        for _ in range(steps):
            theta = {k: v.requires_grad_() for k, v in theta.items()}
            g = torch.autograd.grad(F.cross_entropy(functional_call(net, theta, (t.x_support,)), t.y_support),
                                    list(theta.values()))
            theta = {k: (v - alpha * gi).detach() for (k, v), gi in zip(theta.items(), g)}
        theta = {k: v.requires_grad_() for k, v in theta.items()}
        g = torch.autograd.grad(F.cross_entropy(functional_call(net, theta, (t.x_query,)), t.y_query),
                                list(theta.values()))
        expected = [e + gi / TASKS for e, gi in zip(expected, g)]
    close(ours, expected, tol=1e-10)


def test_second_order_one_step_manual_hessian():
    """One step: meta-grad = (I - α H_support) ∇L_query(θ'), built from an explicit Hessian-vector product."""
    alpha = 0.4
    algo = MAML(net=mlp(), ways=WAYS, inner_lr=alpha, inner_steps=1)
    batch = vector_batch(1)
    ours = meta_grad(algo, batch)
    net, t = algo.net, batch.task(0)
    theta = dict(net.named_parameters())
    g_s = torch.autograd.grad(F.cross_entropy(functional_call(net, theta, (t.x_support,)), t.y_support),
                              list(theta.values()), create_graph=True)
    fast = {k: (v - alpha * g).detach().requires_grad_() for (k, v), g in zip(theta.items(), g_s)}
    g_q = torch.autograd.grad(F.cross_entropy(functional_call(net, fast, (t.x_query,)), t.y_query), list(fast.values()))
    hvp = torch.autograd.grad(g_s, list(theta.values()), grad_outputs=g_q)
    close(ours, [gq - alpha * h for gq, h in zip(g_q, hvp)], tol=1e-10)


def test_zero_inner_steps_is_plain_gradient():
    algo = MAML(net=mlp(), ways=WAYS, inner_steps=0)
    batch = vector_batch()
    ours = meta_grad(algo, batch)
    loss = torch.stack([F.cross_entropy(algo.net(t.x_query), t.y_query) for t in batch.tasks()]).mean()
    close(ours, torch.autograd.grad(loss, list(algo.net.parameters())))


def test_learning_rates_and_steps_are_honoured():
    net, batch = mlp(), vector_batch(1)
    t = batch.task(0)
    theta = {k: v.detach() for k, v in net.named_parameters()}

    def manual(rates):
        p = dict(theta)
        for rate in rates:
            p = {k: v.detach().requires_grad_() for k, v in p.items()}
            g = torch.autograd.grad(F.cross_entropy(functional_call(net, p, (t.x_support,)), t.y_support), list(p.values()))
            p = {k: (v - (rate[k] if isinstance(rate, dict) else rate) * gi).detach()
                 for (k, v), gi in zip(p.items(), g)}
        return p

    def run(lr, steps):
        return adapt(net, {k: v.clone().requires_grad_() for k, v in theta.items()}, t.x_support, t.y_support,
                     F.cross_entropy, steps, lr, first_order=True)

    close(list(run(0.3, 1).values()), list(manual([0.3]).values()))
    close(list(run(0.3, 3).values()), list(manual([0.3] * 3).values()))
    close(list(run([0.5, 0.1], 3).values()), list(manual([0.5, 0.1, 0.1]).values()))
    per_param = {k: torch.rand_like(v) for k, v in theta.items()}  # Meta-SGD
    close(list(run(per_param, 2).values()), list(manual([per_param] * 2).values()))

    # predict uses test_inner_steps; Meta-SGD's learned rates start at inner_lr
    algo = MetaSGD(net=mlp(), ways=WAYS, inner_lr=0.2, inner_steps=1, test_inner_steps=4)
    algo.net.load_state_dict(net.state_dict())
    logits = algo.predict(t.x_support, t.y_support, t.x_query, WAYS)
    close([logits], [functional_call(net, manual([0.2] * 4), (t.x_query,))])
    assert algo.param_lr["1__weight"].shape == net[1].weight.shape


def test_learned_rates_get_meta_gradients():
    for options in ({"lr_mode": "per_step", "inner_steps": 2}, {"lr_mode": "per_param"}):
        algo = MAML(net=mlp(), ways=WAYS, **options)
        meta_grad(algo, vector_batch())
        rates = algo.step_lr if options["lr_mode"] == "per_step" else next(iter(algo.param_lr.values()))
        assert rates.grad is not None and rates.grad.abs().sum() > 0


def test_anil_adapts_only_the_head():
    algo = ANIL(net=Split(), ways=WAYS, inner_lr=0.5)
    t = vector_batch(1).task(0)
    fast = algo.adapted_params(t.x_support, t.y_support, steps=2)
    assert set(fast) == {"weight", "bias"}
    assert not torch.equal(fast["weight"], algo.net.head.weight)


def test_wrong_ways_is_a_clear_error():
    algo = MAML(net=mlp(), ways=WAYS)
    t = vector_batch(1).task(0)
    with pytest.raises(ValueError, match="same number of ways"):
        algo.predict(t.x_support, t.y_support, t.x_query, WAYS + 2)
    with pytest.raises(ValueError, match="lr_mode"):
        MAML(lr_mode="learned")


def test_regression_and_sinusoid_evaluation():
    algo = MAML(problem="regression", inner_lr=0.01)
    assert "loss" in algo.train_step(SinusoidSampler(shots=10, queries=10, seed=0).sample_batch(4))
    mse = evaluate_regression(algo, SinusoidSampler(shots=5, queries=10, seed=1), tasks=5, steps=(1, 5, 10))
    assert set(mse) == {"1", "5", "10"} and all(v > 0 for v in mse.values())
    per_task = regression_mses(algo, SinusoidSampler(shots=5, queries=10, seed=1), tasks=5, steps=(1, 5, 10))
    assert all(v.shape == (5,) for v in per_task.values())
    assert {k: v.mean().item() for k, v in per_task.items()} == pytest.approx(mse)


@pytest.mark.parametrize("lr_mode", ["fixed", "per_step", "per_param"])
def test_batched_regression_mses_equal_task_by_task(lr_mode):
    # the MLP's tasks adapt together as batched matrix products; each must get its own θ'
    torch.manual_seed(0)
    algo = MAML(problem="regression", inner_lr=0.02, lr_mode=lr_mode, inner_steps=1, test_inner_steps=3)
    if lr_mode != "fixed":  # learned rates that differ between parameters or steps
        with torch.no_grad():
            for p in (algo.step_lr,) if lr_mode == "per_step" else algo.param_lr.values():
                p.uniform_(0.005, 0.03)
    batched = regression_mses(algo, SinusoidSampler(shots=5, queries=7, seed=4), tasks=6, steps=(0, 2, 3))
    batch = SinusoidSampler(shots=5, queries=7, seed=4).sample_batch(6)
    for steps in (0, 2, 3):
        expected = torch.stack([F.mse_loss(algo.forward_with(algo.adapted_params(batch.x_support[i], batch.y_support[i],
                                                                                 steps=steps), batch.x_query[i]),
                                           batch.y_query[i]).detach() for i in range(6)])
        torch.testing.assert_close(batched[str(steps)], expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(batched["0"], batched["3"])


def test_regression_mses_loop_for_a_net_that_is_not_an_mlp():
    # a net the batched path cannot run (not an nn.Sequential) adapts task by task, to the same errors
    class Wrapped(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    torch.manual_seed(0)
    mlp = sinusoid_mlp()
    batched = regression_mses(MAML(problem="regression", net=mlp, inner_lr=0.02),
                              SinusoidSampler(shots=5, queries=7, seed=4), tasks=6, steps=(1, 3))
    looped = regression_mses(MAML(problem="regression", net=Wrapped(mlp), inner_lr=0.02),
                             SinusoidSampler(shots=5, queries=7, seed=4), tasks=6, steps=(1, 3))
    for steps in ("1", "3"):
        torch.testing.assert_close(looped[steps], batched[steps], rtol=1e-5, atol=1e-6)


def test_sinusoid_results_count_diverged_tasks():
    from argparse import Namespace

    from metalearn_lib.cli import sinusoid_results

    # A step of 5 on the MSE of a sinusoid overshoots on every task: each step multiplies the error.
    algo = MAML(problem="regression", inner_lr=5.0)
    out = sinusoid_results(algo, Namespace(test_episodes=20, seed=0), torch.device("cpu"))["sinusoid-5shot"]
    assert out["diverged_tasks"]["10"] > 0 and out["diverged_tasks"]["10"] >= out["diverged_tasks"]["1"]
    assert out["mse_after_steps"]["10"] is None or out["mse_after_steps"]["10"] > 100
    json.dumps(out, allow_nan=False)  # valid JSON: no NaN or infinity
    calm = sinusoid_results(MAML(problem="regression", inner_lr=0.01), Namespace(test_episodes=20, seed=0),
                            torch.device("cpu"))["sinusoid-5shot"]
    assert calm["diverged_tasks"] == {"1": 0, "5": 0, "10": 0} and calm["median"]["1"] > 0
    assert calm["mean_without_diverged"] == calm["mse_after_steps"]
    assert calm["set_means"] == {"1": [], "5": [], "10": []}   # 20 tasks: no whole test set of 600
    many = sinusoid_results(MAML(problem="regression", inner_lr=0.01), Namespace(test_episodes=1250, seed=0),
                            torch.device("cpu"))["sinusoid-5shot"]
    assert [len(v) for v in many["set_means"].values()] == [2, 2, 2] and many["set_size"] == 600
    # the sets' means average to the mean of the 1,200 tasks they hold, close to that of all 1,250
    assert sum(many["set_means"]["1"]) / 2 == pytest.approx(many["mse_after_steps"]["1"], rel=0.1)
    # the mean of the tasks that kept a sane error, or None when every task diverged
    others = out["mean_without_diverged"]["10"]
    assert (others is None) == (out["diverged_tasks"]["10"] == 20) and (others is None or others <= 100)


def test_sinusoid_sampler_resumes():
    sampler = SinusoidSampler(shots=5, queries=5, seed=3)
    sampler.sample_batch(2)
    state = sampler.state_dict()
    first = sampler.sample_batch(2)
    sampler.load_state_dict(state)
    torch.testing.assert_close(sampler.sample_batch(2).y_query, first.y_query)


# ---------------------------------------------------------------------------------------- Reptile

@pytest.mark.parametrize("vectorize", [False, True])
def test_reptile_one_sgd_step_is_scaled_sgd(vectorize):
    """k = 1 full-batch SGD step: θ - ε(θ - mean θ') = θ - εα mean ∇L_support(θ)."""
    alpha, eps = 0.3, 0.5
    algo = Reptile(net=mlp(), ways=WAYS, inner_lr=alpha, inner_steps=1, inner_batch=None, inner_optimizer="sgd",
                   vectorize=vectorize)
    batch = vector_batch()
    before = [p.detach().clone() for p in algo.parameters()]
    loss = torch.stack([F.cross_entropy(algo.net(t.x_support), t.y_support) for t in batch.tasks()]).mean()
    g = torch.autograd.grad(loss, list(algo.parameters()))
    optimizer = algo.configure_optimizer(eps)
    optimizer.zero_grad()
    algo.train_step(batch)
    optimizer.step()
    close([p.detach() for p in algo.parameters()], [b - eps * alpha * gi for b, gi in zip(before, g)])


def test_reptile_vmap_equals_loop_with_adam():
    algo = Reptile(net=mlp(bn=True), ways=WAYS, inner_lr=1e-2, inner_steps=3, inner_batch=4)
    batch = vector_batch()
    torch.manual_seed(1)
    a = meta_grad(algo, batch, vectorize=True)
    torch.manual_seed(1)
    b = meta_grad(algo, batch, vectorize=False)
    close(a, b, tol=1e-9)
    logits = algo.predict(batch.x_support[0], batch.y_support[0], batch.x_query[0], WAYS)
    assert logits.shape == (WAYS * QUERIES, WAYS)


# --------------------------------------------------------------------------------- real Omniglot

@pytest.mark.skipif(not os.environ.get("METALEARN_DATA"), reason="needs real Omniglot ($METALEARN_DATA)")
def test_short_omniglot_run_beats_chance():
    torch.set_default_dtype(torch.float32)
    from metalearn_lib.data import omniglot
    from metalearn_lib.episodes import EpisodeSampler
    from metalearn_lib.evaluation import evaluate
    from metalearn_lib.training import TrainConfig, train

    torch.manual_seed(0)
    classes = omniglot("lake", "trainval", image_size=28)
    algo = MAML(ways=5, inner_lr=0.4, inner_steps=1, test_inner_steps=3, first_order=True)
    sampler = EpisodeSampler(classes, 5, 1, 5, seed=0)
    train(algo, sampler, TrainConfig(steps=30, lr=3e-3, schedule="constant", meta_batch=4, progress=False, seed=0))
    result = evaluate(algo, omniglot("lake", "test", image_size=28), 5, 1, queries=5, episodes=40, seed=1)
    assert result.accuracy > 30, result  # chance is 20%; this run gets about 45%


def test_input_scale_is_the_same_functions_with_smaller_first_layer_curvature():
    torch.manual_seed(0)
    scaled, raw = sinusoid_mlp(input_scale=0.2), sinusoid_mlp()
    assert isinstance(scaled[0], InputScale) and len(scaled) == len(raw) + 1
    with torch.no_grad():  # w (x / 5) = (w / 5) x: copy the scaled net's weights into the raw one
        for i, (p, q) in enumerate(zip(scaled.parameters(), raw.parameters())):
            q.copy_(p * 0.2 if i == 0 else p)  # the first is the first layer's weight
    x = torch.linspace(-5, 5, 11).unsqueeze(1)
    torch.testing.assert_close(scaled(x), raw(x))
    # the first layer's weight gradient carries the input's factor: 0.2 of the raw one at the same function
    y = torch.sin(x)
    g_scaled = torch.autograd.grad(F.mse_loss(scaled(x), y), scaled[1].weight)[0]
    g_raw = torch.autograd.grad(F.mse_loss(raw(x), y), raw[0].weight)[0]
    torch.testing.assert_close(g_scaled, 0.2 * g_raw)
    # MAML builds it for regression, its three meta-batch paths agree, and a checkpoint's config keeps it
    algo = MAML(problem="regression", inner_lr=0.01, input_scale=0.2, vectorize="bmm")
    assert isinstance(algo.net[0], InputScale) and algo.config()["input_scale"] == 0.2
    assert isinstance(build_algorithm("maml", **algo.config()).net[0], InputScale)
    batch = SinusoidSampler(shots=5, queries=7, seed=1).sample_batch(3)
    for vectorize in (True, False):
        close(meta_grad(algo, batch, vectorize="bmm"), meta_grad(algo, batch, vectorize=vectorize), tol=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(problem="regression", input_scale=0), "input_scale must be a positive number"),
    (dict(problem="regression", input_scale=float("nan")), "input_scale must be a positive number"),
    (dict(input_scale=0.2), "default regression network only"),
    (dict(problem="regression", input_scale=0.2, net=nn.Sequential(nn.Linear(1, 1))), "default regression network only"),
])
def test_bad_input_scale_is_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MAML(**kwargs)

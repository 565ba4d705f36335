"""Reptile: first-order meta-learning by moving the initialisation towards task-adapted weights.

Nichol, A., Achiam, J., & Schulman, J. (2018). On first-order meta-learning algorithms.
*arXiv:1803.02999* (Omniglot, transductive: 5-way 1-shot 97.68 ± 0.04%, 5-shot 99.48 ± 0.06%;
20-way 1-shot 89.43 ± 0.14%, 5-shot 97.12 ± 0.32%).

For each task of a meta-batch, Reptile runs ``inner_steps`` steps of SGD or Adam on the task's
support set, starting from θ, and gets θ'. The update is θ ← θ + ε (mean θ' − θ). It needs no
second derivatives and no query set in training.

To use the one shared training loop, :meth:`Reptile.train_step` writes θ − mean θ' into ``.grad``
and :meth:`Reptile.configure_optimizer` returns plain SGD whose learning rate is the outer step size
ε: one ``optimizer.step()`` is then exactly θ ← θ − ε (θ − mean θ').

Settings of the paper's Omniglot runs (its Appendix A, and ``--transductive`` in its code): 5-way,
10 training shots, 5 inner Adam steps (β1 = 0, lr 1e-3) on mini-batches of 10, meta-batch 5, ε = 1
annealed linearly to 0, 100,000 outer steps; at test 50 inner steps. Differences here: the inner Adam
state starts afresh for every task (the paper's code kept it across tasks), ε follows the trainer's
cosine schedule rather than a linear one, and the test-time steps use the whole support set.

Like MAML, the default backbone is ``Conv4(out_features=ways, bn="batch")`` (transductive batch
statistics). Meta-batch over tasks: a Python loop or ``torch.func.vmap`` (``vectorize``: None picks
vmap on CUDA, the loop on CPU; on a CPU the loop runs its tasks side by side on
threads, ``task_threads``, as MAML's does).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalearn_lib.algorithms.base import FewShotAlgorithm, accuracy
from metalearn_lib.algorithms.maml import (LossFn, Params, _task_tensors, check_head_ways, inner_gradients,
                                          sinusoid_mlp)
from metalearn_lib.models.conv4 import Conv4
from metalearn_lib.task_threads import check_task_threads, map_tasks, task_workers

INNER_OPTIMIZERS = ("sgd", "adam")


def inner_train(net: nn.Module, params: Params, x: Tensor, y: Tensor, loss_fn: LossFn, steps: int, lr: float,
                batch_size: int | None = None, optimizer: str = "sgd", betas: tuple[float, float] = (0.0, 0.999),
                eps: float = 1e-8, functional: bool = False) -> Params:
    """``steps`` steps of SGD or Adam on ``loss_fn(net(x), y)`` from ``params``; returns detached θ'.

    Mini-batches are consecutive slices of ``batch_size`` examples of ``x`` (cycling; shuffle ``x``
    beforehand), or all of ``x`` when ``batch_size`` is None. No graph is kept: Reptile is first order.
    ``functional=True`` takes gradients with ``torch.func.grad`` (inside ``vmap``).
    """
    if optimizer not in INNER_OPTIMIZERS:
        raise ValueError(f"inner optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    n = x.shape[0]
    b = n if batch_size is None else min(batch_size, n)
    params = {k: v.detach() for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()} if optimizer == "adam" else {}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()} if optimizer == "adam" else {}
    for step in range(steps):
        start = (step * b) % n
        index = [(start + j) % n for j in range(b)]  # static indices, so the same code runs under vmap
        xb, yb = (x, y) if b == n else (x[index], y[index])
        if not functional:
            params = {k: v.requires_grad_() for k, v in params.items()}
        grads = inner_gradients(net, params, xb, yb, loss_fn, create_graph=False, functional=functional)
        with torch.no_grad():
            if optimizer == "sgd":
                params = {k: (p - lr * grads[k]).detach() for k, p in params.items()}
            else:
                t = step + 1
                b1, b2 = betas
                m = {k: b1 * m[k] + (1 - b1) * grads[k] for k in params}
                v2 = {k: b2 * v2[k] + (1 - b2) * grads[k] ** 2 for k in params}
                params = {k: (p - lr * (m[k] / (1 - b1 ** t)) / ((v2[k] / (1 - b2 ** t)).sqrt() + eps)).detach()
                          for k, p in params.items()}
    return params


class Reptile(FewShotAlgorithm):
    """Reptile (Nichol et al., 2018).

    Args:
        in_channels, image_size, ways: image format and head size (evaluate with the trained ways).
        net: default ``Conv4(in_channels, out_features=ways, bn="batch")`` (``sinusoid_mlp`` for regression).
        inner_lr: the inner optimizer's learning rate (1e-3 with Adam in the paper).
        inner_steps / test_inner_steps: inner steps per task in meta-training / in ``predict``.
        inner_batch: mini-batch size of the training inner steps (None: the whole support set).
        inner_optimizer: ``"adam"`` (β1 = 0, as in the paper) or ``"sgd"``.
        problem: ``"classification"`` or ``"regression"``.
        vectorize: vmap over tasks (True), a loop (False), or None (vmap on CUDA, loop on CPU).
        task_threads: on the loop path on a CPU, how many tasks run at once, one thread and one core
            each (:mod:`metalearn_lib.task_threads`); None: ``torch.get_num_threads()``; 1: one by one.
    """

    name = "reptile"
    test_needs_grad = True
    defaults: ClassVar[dict[str, Any]] = {
        "train_ways": 5, "train_shots": 10, "queries": 1, "meta_batch": 5, "lr": 1.0, "schedule": "cosine",
        "image_size": 28, "rotations": True, "options": {},
    }

    def __init__(self, in_channels: int = 1, image_size: int = 28, ways: int = 5, net: nn.Module | None = None,
                 inner_lr: float = 1e-3, inner_steps: int = 5, test_inner_steps: int = 50,
                 inner_batch: int | None = 10, inner_optimizer: str = "adam", problem: str = "classification",
                 vectorize: bool | None = None, task_threads: int | None = None, **_: Any) -> None:
        super().__init__()
        check_task_threads(task_threads)
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}")
        if problem not in ("classification", "regression"):
            raise ValueError(f"problem must be 'classification' or 'regression', got {problem!r}")
        for label, value in (("inner_steps", inner_steps), ("test_inner_steps", test_inner_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{label} must be a non-negative integer, got {value!r}")
        if inner_batch is not None and inner_batch <= 0:
            raise ValueError(f"inner_batch must be positive or None (whole support set), got {inner_batch}")
        self.save_config(in_channels=in_channels, image_size=image_size, ways=ways, inner_lr=inner_lr,
                         inner_steps=inner_steps, test_inner_steps=test_inner_steps, inner_batch=inner_batch,
                         inner_optimizer=inner_optimizer, problem=problem, vectorize=vectorize,
                         task_threads=task_threads)
        self.ways, self.problem, self.inner_lr = ways, problem, float(inner_lr)
        self.inner_steps, self.test_inner_steps, self.inner_batch = inner_steps, test_inner_steps, inner_batch
        self.inner_optimizer, self.vectorize, self.task_threads = inner_optimizer, vectorize, task_threads
        self.net = net if net is not None else (sinusoid_mlp() if problem == "regression" else
                                                Conv4(in_channels, out_features=ways, bn="batch", image_size=image_size))
        self.loss_fn: LossFn = F.mse_loss if problem == "regression" else F.cross_entropy

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """Plain SGD: with ``.grad`` = θ − mean θ', a step of size ε is Reptile's outer update."""
        return torch.optim.SGD(self.parameters(), lr=lr)

    def _adapt(self, xs: Tensor, ys: Tensor, steps: int, batch_size: int | None, functional: bool = False,
               net: nn.Module | None = None) -> Params:
        """θ' for one task; ``net`` runs θ's tensors (a replica, on a task thread), default ``self.net``."""
        return inner_train(self.net if net is None else net, dict(self.net.named_parameters()), xs, ys,
                           self.loss_fn, steps, self.inner_lr, batch_size=batch_size, optimizer=self.inner_optimizer,
                           functional=functional)

    def train_step(self, batch: Any) -> dict[str, float]:
        xs, ys, xq, yq = _task_tensors(batch)
        tasks, n = xs.shape[0], xs.shape[1]
        # shuffle each task's support set, so the inner mini-batches are random
        order = torch.stack([torch.randperm(n) for _ in range(tasks)]).to(xs.device)
        xs = torch.stack([xs[i][order[i]] for i in range(tasks)])
        ys = torch.stack([ys[i][order[i]] for i in range(tasks)])
        use_vmap = xs.device.type == "cuda" if self.vectorize is None else bool(self.vectorize)

        def task(a: Tensor, b: Tensor, c: Tensor, functional: bool, net: nn.Module) -> tuple[Params, Tensor]:
            fast = self._adapt(a, b, self.inner_steps, self.inner_batch, functional=functional, net=net)
            with torch.no_grad():
                return fast, functional_call(net, fast, (c,))

        if use_vmap:
            finals, outs = torch.func.vmap(lambda a, b, c: task(a, b, c, True, self.net))(xs, ys, xq)
            mean = {k: v.mean(0) for k, v in finals.items()}
        else:
            # the tasks side by side on CPU threads, one core each (metalearn_lib/task_threads.py)
            workers = task_workers(self.task_threads, tasks, xs.device, self.net)
            results = map_tasks(lambda i, net: task(xs[i], ys[i], xq[i], False, net), tasks, self.net, workers)
            mean, outs_list = None, []
            for fast, out in results:  # summed in task order, whichever thread finished first
                mean = fast if mean is None else {k: mean[k] + fast[k] for k in mean}
                outs_list.append(out)
            mean = {k: v / tasks for k, v in mean.items()}
            outs = torch.stack(outs_list)
        for k, p in self.net.named_parameters():
            p.grad = (p.detach() - mean[k]).clone()
        metrics = {"loss": self.loss_fn(outs.flatten(0, 1), yq.flatten(0, 1)).item()}
        if self.problem == "classification":
            metrics["accuracy"] = accuracy(outs, yq)
        return metrics

    def check_ways(self, ways: int) -> None:
        check_head_ways(self, ways)

    def predict(self, x_support: Tensor, y_support: Tensor, x_query: Tensor, ways: int) -> Tensor:
        """Fine-tune a copy of θ on the whole support set for ``test_inner_steps`` steps; query outputs."""
        self.check_ways(ways)
        with torch.enable_grad():
            fast = self._adapt(x_support, y_support, self.test_inner_steps, None)
        with torch.no_grad():
            return functional_call(self.net, fast, (x_query,))

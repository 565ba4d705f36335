"""MAML and its family: first-order MAML, Meta-SGD and ANIL.

Finn, C., Abbeel, P., & Levine, S. (2017). Model-agnostic meta-learning for fast adaptation of deep
networks. *ICML* (Omniglot 5-way 1-shot 98.7 ± 0.4%, 5-shot 99.9 ± 0.1%; 20-way 95.8 ± 0.3%,
98.9 ± 0.2%. Sinusoid regression, Section 5.1: the book's targets for the 5-shot MSE after 1 / 5 / 10
inner steps are 0.67 / 0.38 / 0.35).

Li, Z., Zhou, F., Chen, F., & Li, H. (2017). Meta-SGD: Learning to learn quickly for few-shot learning.
*arXiv:1707.09835* (one learned inner learning rate per parameter: ``MetaSGD``, ``metasgd``).

Raghu, A., Raghu, M., Bengio, S., & Vinyals, O. (2020). Rapid learning or feature reuse? Towards
understanding the effectiveness of MAML. *ICLR* (ANIL: adapt only the head, ``ANIL``, ``anil``).

MAML learns an initialisation θ such that a few gradient steps on a task's support set give
parameters θ' that do well on the task's query set. The meta-loss is the query loss at θ', averaged
over the tasks of a meta-batch, and its gradient with respect to θ goes *through* the inner steps
(second order: it contains Hessian-vector products). First-order MAML drops that term by treating
the inner gradients as constants.

Everything here shares one inner loop, :func:`adapt`: parameters are plain tensors in a dict, the
network is run with ``torch.func.functional_call``, and inner gradients come from
``torch.autograd.grad(..., create_graph=True)`` (second order) or are detached (first order).

Batch normalisation. The default backbone is ``Conv4(out_features=ways, bn="batch")``: BatchNorm
always uses the statistics of the batch at hand, at test time too, so a query batch is normalised
with its own statistics. This *transductive* protocol is the one behind the published Omniglot
numbers (the original code never kept running averages); document it when comparing with inductive
methods.

Meta-batch over tasks, three paths giving the same meta-gradient (``tests/test_maml.py``):

- a Python loop over tasks, one backward per task (low memory);
- ``torch.func.vmap`` over tasks, with ``torch.func.grad`` for the inner gradients (``autograd.grad``
  cannot see through ``vmap``);
- ``"bmm"``, for multilayer perceptrons only (``nn.Sequential`` of ``nn.Linear`` and parameter-free
  layers such as ``nn.ReLU``): every task gets its own view of θ as a batched tensor ``[tasks, ...]``
  (an ``expand``, no memory copied) and the network runs as batched matrix products. Plain autograd
  then gives every task its own inner gradient, without vmap's per-operation overhead.

``vectorize=None`` picks vmap on CUDA (it removes per-task kernel launches) and the loop on CPU.
On a CPU the loop runs its tasks side by side, one thread and one core each (``task_threads``,
:mod:`metalearn_lib.task_threads`): small operations gain little from PyTorch's threads inside each
operation, and whole tasks at once keep the cores busy.
Measured on the book's shared 2-core CPU (torch 2.14, one thread, after a warm-up step): Conv4 5-way
1-shot, second order, meta-batch 8: 0.77 s per step with the loop, 0.76 s with vmap (no gain; an
earlier measurement under other load found vmap 8x slower). The sinusoid MLP, meta-batch 25: 69 ms
with the loop, 10 ms with vmap, and 3.8 ms with ``"bmm"`` against vmap's 9.4 ms when the two were
timed in turn in one process on a busy machine; the sinusoid settings (``sinusoid_defaults``) use
``"bmm"``. With two threads on a busy machine every figure was 3-14x worse: set
``OMP_NUM_THREADS=1`` when the machine is shared.

On a GPU the step is bound by the host (Python, ``vmap``'s bookkeeping, kernel launches), not by the
card: ``TrainConfig(cuda_graph=True)`` (``train --cuda-graph``) records it once as a CUDA graph and
replays it (:mod:`metalearn_lib.graphs`). :meth:`MAML.step_tensors`, which reads nothing back to the
host, is what makes the step recordable.

A PyTorch bug worked around here: differentiating ``torch.func.grad`` of ``batch_norm`` inside
``vmap`` gives wrong second-order gradients (about 1e-2 off for Conv4, torch 2.14; first order and
the loop are exact). Inside the vmap path, batch-statistics
BatchNorm layers compute the same normalisation from elementary operations instead (see
:class:`_ExplicitBatchNorm`); outside it they run PyTorch's fused kernel.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalearn_lib.algorithms.base import FewShotAlgorithm, correct_fraction
from metalearn_lib.models.conv4 import Conv4
from metalearn_lib.task_threads import add_gradients, check_task_threads, map_tasks, task_workers

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
#: One step's inner learning rate: a number or scalar tensor (every parameter), or one tensor per
#: parameter name (Meta-SGD; broadcast against the parameter).
StepRate = Union[float, Tensor, Mapping[str, Tensor]]
#: ``adapt``'s ``lr``: a :data:`StepRate`, or a sequence of them, one per step (the last one is
#: reused when there are more steps than rates).
LearningRate = Union[StepRate, Sequence[StepRate]]

#: ``forward(params, x)``: a network run with the given parameters.
Forward = Callable[[Params, Tensor], Tensor]

LR_MODES = ("fixed", "per_step", "per_param")
PROBLEMS = ("classification", "regression")


def check_head_ways(algorithm: Any, ways: int) -> None:
    """A fixed-size head (MAML, Reptile) can only classify as many ways as it was meta-trained with."""
    if algorithm.problem == "classification" and ways != algorithm.ways:
        raise ValueError(f"{algorithm.name} was meta-trained with a {algorithm.ways}-way head and cannot classify "
                         f"{ways}-way episodes: it must be trained with the same number of ways it is evaluated "
                         f"on (train with --train-ways {ways}, or evaluate with {algorithm.ways}-way settings)")


# ----------------------------------------------------------------------------------------------- inner loop

def inner_gradients(net: nn.Module, params: Params, x: Tensor, y: Tensor, loss_fn: LossFn,
                    create_graph: bool, functional: bool = False, forward: Forward | None = None) -> Params:
    """Gradient of ``loss_fn(net(x; params), y)`` with respect to each tensor of ``params``.

    ``functional=False`` uses ``torch.autograd.grad`` (``create_graph`` keeps it differentiable);
    ``functional=True`` uses ``torch.func.grad``, which is what works inside ``torch.func.vmap``
    (its result is always differentiable by an outer ``backward``; detach it for first order).
    ``forward(params, x)`` replaces ``functional_call(net, params, (x,))`` (the batched MLP path).
    """
    run = forward or (lambda p, inputs: functional_call(net, p, (inputs,)))
    if functional:
        return torch.func.grad(lambda p: loss_fn(run(p, x), y))(params)
    loss = loss_fn(run(params, x), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph, allow_unused=True)
    # a parameter the loss does not depend on has gradient zero, not None
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), grads)}


def _step_rate(lr: LearningRate, step: int) -> StepRate:
    if isinstance(lr, Tensor) and lr.dim() == 1:  # a learned per-step schedule
        return lr[min(step, lr.shape[0] - 1)]
    if isinstance(lr, (list, tuple)):
        return lr[min(step, len(lr) - 1)]
    return lr


def adapt(net: nn.Module, params: Params, x: Tensor, y: Tensor, loss_fn: LossFn, steps: int,
          lr: LearningRate, first_order: bool = False, functional: bool = False,
          forward: Forward | None = None) -> Params:
    """``steps`` gradient-descent steps on ``loss_fn(net(x), y)``, starting from ``params``: θ' (a new dict).

    Args:
        net: the module run with ``functional_call(net, params, (x,))``; parameters of ``net`` that are
            not in ``params`` are used as they are (ANIL passes the head only).
        params: name -> tensor, the starting point θ (usually ``dict(net.named_parameters())``).
        loss_fn: e.g. ``F.cross_entropy`` or ``F.mse_loss``.
        steps: number of inner steps (0 returns ``params`` unchanged).
        lr: the inner learning rate α: a number, a scalar tensor (learnable), a dict of per-parameter
            tensors (Meta-SGD), a 1-D tensor or list with one rate per step.
        first_order: treat the inner gradients as constants (first-order MAML): the result is still a
            function of θ (θ' = θ - α·g with g detached), so the meta-gradient is the query gradient at θ'.
        functional: compute inner gradients with ``torch.func.grad`` (needed inside ``vmap``).
        forward: ``forward(params, x)`` instead of ``functional_call(net, params, (x,))``.

    With ``first_order=False`` the returned tensors keep the graph of the inner steps, so a backward
    from a loss at θ' gives the full second-order meta-gradient.
    """
    if steps < 0:
        raise ValueError(f"the number of inner steps must be >= 0, got {steps}")
    for step in range(steps):
        grads = inner_gradients(net, params, x, y, loss_fn, create_graph=not first_order, functional=functional,
                                forward=forward)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        rate = _step_rate(lr, step)
        if isinstance(rate, Mapping):
            params = {k: p - rate[k] * grads[k] for k, p in params.items()}
        else:
            params = {k: p - rate * grads[k] for k, p in params.items()}
    return params


# --------------------------------------------------------------------------------- vmap-safe batch norm

class _ExplicitBatchNorm:
    """Batch-statistics BatchNorm computed from elementary ops while ``explicit`` is set (inside vmap).

    Same result as ``F.batch_norm(training=True)``; works around wrong second-order gradients of the
    fused kernel under ``torch.func.vmap`` (torch 2.14).
    """

    explicit: bool = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.explicit:
            return super().forward(x)  # type: ignore[misc]
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + self.eps)  # type: ignore[attr-defined]
        shape = [1, -1] + [1] * (x.dim() - 2)
        if self.weight is not None:  # type: ignore[attr-defined]
            out = out * self.weight.view(shape) + self.bias.view(shape)  # type: ignore[attr-defined]
        return out


class _ExplicitBatchNorm1d(_ExplicitBatchNorm, nn.BatchNorm1d):
    pass


class _ExplicitBatchNorm2d(_ExplicitBatchNorm, nn.BatchNorm2d):
    pass


def _make_vmap_safe(net: nn.Module) -> None:
    """Give batch-statistics BatchNorm layers of ``net`` the explicit path (in place; same parameters)."""
    swaps = {nn.BatchNorm1d: _ExplicitBatchNorm1d, nn.BatchNorm2d: _ExplicitBatchNorm2d}
    for module in net.modules():
        if type(module) in swaps and not module.track_running_stats:
            module.__class__ = swaps[type(module)]


@contextlib.contextmanager
def _explicit_batchnorm(net: nn.Module) -> Iterator[None]:
    layers = [m for m in net.modules() if isinstance(m, _ExplicitBatchNorm)]
    for m in layers:
        m.explicit = True
    try:
        yield
    finally:
        for m in layers:
            m.explicit = False


# ------------------------------------------------------------------------------- batched MLP path ("bmm")

def is_batched_mlp(net: nn.Module) -> bool:
    """Whether ``net`` is an ``nn.Sequential`` of ``nn.Linear`` and parameter-free per-sample layers.

    BatchNorm does not count as per-sample: its statistics would mix the tasks.
    """
    def per_sample(m: nn.Module) -> bool:
        return not any(True for _ in m.parameters()) and not isinstance(m, nn.modules.batchnorm._BatchNorm)

    return isinstance(net, nn.Sequential) and all(isinstance(m, nn.Linear) or per_sample(m) for m in net)


def check_batched_mlp(net: nn.Module) -> None:
    """Raise unless ``net`` can run on the ``"bmm"`` path (:func:`is_batched_mlp`)."""
    if not is_batched_mlp(net):
        raise ValueError('vectorize="bmm" runs multilayer perceptrons only (an nn.Sequential of nn.Linear and '
                         'parameter-free layers such as nn.ReLU); use vectorize=True (vmap) or False (a loop) '
                         f'for {type(net).__name__}')


def batched_mlp(net: nn.Sequential, params: Params, x: Tensor) -> Tensor:
    """``net`` applied task by task: ``params`` hold ``[tasks, ...]`` tensors, ``x`` is ``[tasks, n, in]``.

    Linear layers become batched matrix products (an input or output width of one, as in the sinusoid
    MLP, is a broadcast product instead: cheaper than a matrix product on a CPU); other layers run on
    every sample of every task as one batch.
    """
    h = x
    for name, layer in net.named_children():
        if isinstance(layer, nn.Linear):
            weight, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
            if weight.shape[-1] == 1:
                h = h * weight.transpose(1, 2)
            elif weight.shape[-2] == 1:
                h = (h * weight).sum(-1, keepdim=True)
            else:
                h = torch.bmm(h, weight.transpose(1, 2))
            if bias is not None:
                h = h + bias.unsqueeze(1)
        else:  # a per-sample layer (activation, Flatten): run on all tasks' samples as one batch
            h = layer(h.flatten(0, 1)).unflatten(0, h.shape[:2])
    return h


def per_task_loss(loss_fn: LossFn, tasks: int) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss_fn`` averaged within each task: outputs and targets ``[tasks, n, ...]`` -> losses ``[tasks]``."""
    def task_losses(out: Tensor, y: Tensor) -> Tensor:
        flat = loss_fn(out.flatten(0, 1), y.flatten(0, 1), reduction="none")  # type: ignore[call-arg]
        return flat.reshape(tasks, -1).mean(1)
    return task_losses


# ------------------------------------------------------------------------------------------- algorithms

class InputScale(nn.Module):
    """Multiplies the input by a fixed number; no parameters, so an inner step never changes it."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def sinusoid_mlp(hidden: Sequence[int] = (40, 40), input_scale: float = 1.0) -> nn.Sequential:
    """The regression network of MAML's sinusoid experiment: 1 -> 40 -> 40 -> 1 with ReLU.

    ``input_scale`` multiplies x first (0.2 maps the sinusoid's [-5, 5] to [-1, 1]); 1, the paper's
    network, adds no layer. The curvature of the loss in the first layer's weights grows with x², so
    on raw inputs α = 0.01 is too large a step for some tasks (see ``MAML.sinusoid_defaults``).
    """
    if not (isinstance(input_scale, (int, float)) and not isinstance(input_scale, bool)
            and math.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"input_scale must be a positive number, got {input_scale!r}")
    layers: list[nn.Module] = [] if input_scale == 1 else [InputScale(input_scale)]
    width = 1
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _task_tensors(batch: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Support and query tensors with a leading task dimension (an ``Episode`` or a ``SinusoidTask``)."""
    xs, ys, xq, yq = batch.x_support, batch.y_support, batch.x_query, batch.y_query
    if not getattr(batch, "is_batch", True):  # a single Episode
        xs, ys, xq, yq = xs[None], ys[None], xq[None], yq[None]
    return xs, ys, xq, yq


class MAML(FewShotAlgorithm):
    """Model-agnostic meta-learning (second order by default).

    Args:
        in_channels, image_size, ways: the Omniglot image format and the number of ways of the head
            (MAML's classifier has ``ways`` outputs: evaluate it with the same number of ways).
        net: the network; default ``Conv4(in_channels, out_features=ways, bn="batch")`` for
            classification, :func:`sinusoid_mlp` for regression. Its batch-statistics BatchNorm layers
            are made vmap-safe in place.
        inner_lr: α (0.4 for Omniglot, 0.01 for the sinusoid), or a list with one rate per step.
        inner_steps / test_inner_steps: inner steps in meta-training / in ``predict``.
        first_order: drop the second-order term (FOMAML).
        lr_mode: ``"fixed"`` (α is a constant), ``"per_step"`` (one learned α per inner step, as in
            MAML++), ``"per_param"`` (Meta-SGD: one learned α per parameter entry).
        head_only: adapt only the final layer ``net.head`` (ANIL); the body runs once per batch.
        problem: ``"classification"`` (cross-entropy) or ``"regression"`` (mean squared error).
        input_scale: for the default regression network only, a fixed factor on its input
            (:func:`sinusoid_mlp`); 1, the paper's network, for everything else.
        vectorize: vmap over the tasks of a meta-batch (True), a Python loop (False), None (vmap on
            CUDA, the loop on CPU), or ``"bmm"``: batched matrix products, for an MLP only (the
            sinusoid; see the module docstring).
        task_threads: on the loop path on a CPU, in training, how many tasks of a meta-batch run at
            once, each on its own thread with one core (:mod:`metalearn_lib.task_threads`); None: as many
            as PyTorch's thread count (``torch.get_num_threads()``, ``OMP_NUM_THREADS``), 1: one task
            after another, each using PyTorch's threads inside its operations. Nets with buffers
            (BatchNorm running statistics) always run one task after another.

    A checkpoint stores these settings, not a custom ``net``: one built with its own ``net`` cannot be
    rebuilt by ``evaluate`` from the checkpoint alone.
    """

    name = "maml"
    test_needs_grad = True
    defaults: ClassVar[dict[str, Any]] = {
        # Finn et al. (2017), Section 5.2 and their code (cbfinn/maml): 5-way, meta-batch 32, one inner
        # step of α = 0.4 in training and three at test, Adam 1e-3 without decay, 90-degree rotations
        # as extra classes, and as many query images per class as shots (update_batch_size * 2).
        "train_ways": 5, "train_shots": 1, "queries": 1, "meta_batch": 32, "lr": 1e-3, "schedule": "constant",
        "image_size": 28, "rotations": True, "options": {},
    }
    #: The paper's sinusoid setting (Section 5.1): K = 10 shots and 10 query points, one step of
    #: α = 0.01, meta-batch 25, Adam 1e-3 for 70,000 steps (with the batched MLP path, ``"bmm"``:
    #: faster than vmap or the loop for this small MLP).
    sinusoid_paper: ClassVar[dict[str, Any]] = {
        "train_shots": 10, "queries": 10, "meta_batch": 25, "lr": 1e-3, "schedule": "constant",
        "options": {"inner_lr": 0.01, "inner_steps": 1, "test_inner_steps": 10, "vectorize": "bmm"},
    }
    #: What ``train maml --dataset sinusoid`` uses: the paper's tasks, network, α, inner step and
    #: queries, with meta-batches of 50 tasks and Adam 3e-3 decayed to 0 by a cosine, a recipe for
    #: minutes rather than hours (``benchmarks/cpu_optimization.sh``). With the batched MLP path a
    #: meta-batch of 50 costs a fifth more time than one of 25 (5.7 against 4.9 ms per step): in a
    #: 120 s sweep run beside another (``benchmarks/cpu_sweep.sh``) it reached 5-shot MSEs of
    #: 0.66 / 0.37 / 0.33 after 1 / 5 / 10 steps against 0.63 / 0.44 / 0.38 with 25.
    #:
    #: And the input scaled from [-5, 5] to [-1, 1] (``input_scale=0.2``, :func:`sinusoid_mlp`). On the
    #: paper's raw input, meta-training for one step does not promise stability over ten: on a few tasks
    #: in ten thousand (large amplitudes, support points bunched near one end of the range) the ten test
    #: steps of α = 0.01 diverge, because the curvature in the first layer's weights grows with x², and
    #: whether a 600-task test set meets the targets depends on whether it holds such a task. Scaling
    #: divides that curvature by 25 and represents the same functions; it is a change of
    #: parameterisation from the paper's network (``--set input_scale=1`` restores it). Measured by
    #: ``cpu_optimization.sh`` (120 s, three seeds each, 19,800 test tasks cut into 33 sets of 600):
    #: scaled, no task diverged and 33, 33 and 32 of the 33 sets met all three targets; the paper's
    #: network with the same recipe (``maml_sinusoid_unscaled_seed*``): 4 to 12 tasks diverged after
    #: ten steps in each run, and none of the 99 sets met them.
    sinusoid_defaults: ClassVar[dict[str, Any]] = {**sinusoid_paper, "meta_batch": 50, "lr": 3e-3,
                                                   "schedule": "cosine",
                                                   "options": {**sinusoid_paper["options"], "input_scale": 0.2}}
    def __init__(self, in_channels: int = 1, image_size: int = 28, ways: int = 5, net: nn.Module | None = None,
                 inner_lr: float | Sequence[float] = 0.4, inner_steps: int = 1, test_inner_steps: int = 3,
                 first_order: bool = False, lr_mode: str = "fixed", head_only: bool = False,
                 problem: str = "classification", vectorize: bool | str | None = None, input_scale: float = 1.0,
                 task_threads: int | None = None, **_: Any) -> None:
        super().__init__()
        check_task_threads(task_threads)
        if vectorize not in (None, True, False, "bmm"):
            raise ValueError(f'vectorize must be True (vmap), False (a loop), None (choose by device) or "bmm" '
                             f'(batched MLP), got {vectorize!r}')
        first_order, head_only = bool(first_order), bool(head_only)
        if lr_mode not in LR_MODES:
            raise ValueError(f"lr_mode must be one of {', '.join(LR_MODES)}, got {lr_mode!r}")
        if problem not in PROBLEMS:
            raise ValueError(f"problem must be 'classification' or 'regression', got {problem!r}")
        for label, value in (("inner_steps", inner_steps), ("test_inner_steps", test_inner_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{label} must be a non-negative integer, got {value!r}")
        rates = [float(r) for r in inner_lr] if isinstance(inner_lr, (list, tuple)) else [float(inner_lr)]
        if not rates or any(r < 0 for r in rates):
            raise ValueError(f"inner_lr must be a non-negative number or a list of them, got {inner_lr!r}")
        if lr_mode != "fixed" and len(rates) > 1:
            raise ValueError(f"a list inner_lr is a fixed schedule; with lr_mode={lr_mode!r} give one number "
                             f"(the initial value of the learned rates)")
        self.save_config(in_channels=in_channels, image_size=image_size, ways=ways, inner_lr=inner_lr,
                         inner_steps=inner_steps, test_inner_steps=test_inner_steps, first_order=first_order,
                         lr_mode=lr_mode, head_only=head_only, problem=problem, vectorize=vectorize,
                         input_scale=input_scale, task_threads=task_threads)
        self.ways, self.problem = ways, problem
        self.inner_steps, self.test_inner_steps = inner_steps, test_inner_steps
        self.first_order, self.lr_mode, self.head_only, self.vectorize = first_order, lr_mode, head_only, vectorize
        self.task_threads = task_threads
        if input_scale != 1 and (net is not None or problem != "regression"):
            raise ValueError(f"input_scale={input_scale!r} applies to the default regression network only; "
                             "scale the input inside your own net instead")
        if net is None:
            net = sinusoid_mlp(input_scale=input_scale) if problem == "regression" else \
                Conv4(in_channels, out_features=ways, bn="batch", image_size=image_size)
        if head_only and not (hasattr(net, "head") and hasattr(net, "features")):
            raise ValueError("head_only (ANIL) needs a net with .features (the body) and .head (the adapted layer)")
        _make_vmap_safe(net)
        self.net = net
        if vectorize == "bmm":
            if head_only:
                raise ValueError('vectorize="bmm" adapts a whole MLP; for ANIL (head_only) use vectorize=True or False')
            check_batched_mlp(net)
        self.loss_fn: LossFn = F.mse_loss if problem == "regression" else F.cross_entropy
        # the fixed rates are plain numbers; learned rates are parameters, meta-trained with θ
        self.fixed_lr = rates
        if lr_mode == "per_step":
            self.step_lr = nn.Parameter(torch.full((max(inner_steps, test_inner_steps, 1),), rates[0]))
        elif lr_mode == "per_param":
            self.param_lr = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(torch.full_like(p, rates[0]))
                                              for k, p in self._adapted_module().named_parameters()})

    # -- pieces

    def _adapted_module(self) -> nn.Module:
        return self.net.head if self.head_only else self.net

    def _body(self, x: Tensor) -> Tensor:
        return self.net.features(x) if self.head_only else x

    def inner_learning_rate(self) -> LearningRate:
        """What :func:`adapt` gets as ``lr`` (learned rates are tensors in the meta-graph)."""
        if self.lr_mode == "per_step":
            return self.step_lr
        if self.lr_mode == "per_param":
            return {k.replace("__", "."): v for k, v in self.param_lr.items()}
        return self.fixed_lr if len(self.fixed_lr) > 1 else self.fixed_lr[0]

    def _path(self, device: torch.device, vectorize: bool | str | None = None) -> str:
        """``"loop"``, ``"vmap"`` or ``"bmm"``: ``vectorize`` if given, else the algorithm's own choice."""
        mode = self.vectorize if vectorize is None else vectorize
        if mode is None:
            return "vmap" if device.type == "cuda" else "loop"
        return "bmm" if mode == "bmm" else "vmap" if mode else "loop"

    def _use_vmap(self, device: torch.device) -> bool:
        return self._path(device) == "vmap"

    def _batched_tasks(self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> tuple[Tensor, Tensor]:
        """The ``"bmm"`` path: per-task query losses ``[tasks]`` and outputs, all tasks at once."""
        tasks, module = xs.shape[0], self.net
        task_losses = per_task_loss(self.loss_fn, tasks)

        def forward(params: Params, x: Tensor) -> Tensor:
            return batched_mlp(module, params, x)  # type: ignore[arg-type]

        # one view of θ per task: autograd then keeps the tasks' inner gradients apart
        theta = {k: p.expand(tasks, *p.shape) for k, p in module.named_parameters()}
        # the inner loss sums the tasks' mean losses, so each task's gradient is its own mean's
        fast = adapt(module, theta, xs, ys, lambda o, y: task_losses(o, y).sum(), self.inner_steps,
                     self.inner_learning_rate(), first_order=self.first_order, forward=forward)
        out = forward(fast, xq)
        return task_losses(out, yq), out

    def _task(self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, steps: int, first_order: bool,
              functional: bool, module: nn.Module | None = None) -> tuple[Tensor, Tensor]:
        """Adapt on one task's support set; the query loss and outputs at the adapted parameters.

        ``module`` runs the adapted part with θ's tensors (a replica, on a task thread); default the
        algorithm's own.
        """
        theta = dict(self._adapted_module().named_parameters())
        module = self._adapted_module() if module is None else module
        zs, zq = self._body(xs), self._body(xq)
        fast = adapt(module, theta, zs, ys, self.loss_fn, steps,
                     self.inner_learning_rate(), first_order=first_order, functional=functional)
        out = functional_call(module, fast, (zq,))
        return self.loss_fn(out, yq), out

    # -- the FewShotAlgorithm interface

    def meta_loss(self, batch: Any, vectorize: bool | str | None = None,
                  backward: bool = False) -> tuple[Tensor, Tensor]:
        """Mean query loss over the tasks of ``batch`` after ``inner_steps`` steps, and the query outputs.

        ``vectorize`` overrides the algorithm's own choice of path for this call.

        ``backward=True`` also fills ``.grad`` (the loop path then frees each task's graph as it goes).
        """
        xs, ys, xq, yq = _task_tensors(batch)
        path = self._path(xs.device, vectorize)
        tasks = xs.shape[0]
        workers = self.training_task_threads(tasks, xs.device, path) if backward else 1
        if workers > 1:
            return self._threaded_meta_loss(xs, ys, xq, yq, workers)
        if path == "loop":
            losses, outs = [], []
            for i in range(tasks):
                loss_i, out_i = self._task(xs[i], ys[i], xq[i], yq[i], self.inner_steps, self.first_order, False)
                if backward:
                    (loss_i / tasks).backward()  # one task's graph at a time
                    loss_i = loss_i.detach()
                losses.append(loss_i)
                outs.append(out_i.detach())
            return torch.stack(losses).mean(), torch.stack(outs)
        if path == "bmm":
            task_losses, outs = self._batched_tasks(xs, ys, xq, yq)
        else:
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training:
                    raise ValueError("the vmap path cannot update BatchNorm running statistics: use a net with "
                                     "bn='batch' (track_running_stats=False) or vectorize=False")
            with _explicit_batchnorm(self.net):
                task_losses, outs = torch.func.vmap(
                    lambda a, b, c, d: self._task(a, b, c, d, self.inner_steps, self.first_order, True))(xs, ys, xq, yq)
        loss = task_losses.mean()  # all tasks at once: one graph, one backward
        if backward:
            loss.backward()
        return loss.detach() if backward else loss, outs.detach()

    def training_task_threads(self, tasks: int, device: torch.device, path: str | None = None) -> int:
        """How many tasks of a ``tasks``-task meta-batch a training step runs at once on CPU threads
        (1 off the loop path, or with grad mode off); ``path`` defaults to the algorithm's own choice."""
        if (path or self._path(device)) != "loop" or not torch.is_grad_enabled():
            return 1
        return task_workers(self.task_threads, tasks, device, self.net)

    def _threaded_meta_loss(self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor,
                            workers: int) -> tuple[Tensor, Tensor]:
        """The loop path with ``.grad`` filled, the tasks run ``workers`` at a time on CPU threads
        (:mod:`metalearn_lib.task_threads`); the same meta-gradient, summed in task order."""
        tasks = xs.shape[0]
        params = [p for p in self.parameters() if p.requires_grad]

        def one(i: int, module: nn.Module) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
            loss, out = self._task(xs[i], ys[i], xq[i], yq[i], self.inner_steps, self.first_order, False, module)
            grads = torch.autograd.grad(loss / tasks, params, allow_unused=True)
            return loss.detach(), out.detach(), grads

        results = map_tasks(one, tasks, self._adapted_module(), workers)
        add_gradients(params, (grads for _, _, grads in results))
        return torch.stack([r[0] for r in results]).mean(), torch.stack([r[1] for r in results])

    def train_step(self, batch: Any) -> dict[str, float]:
        return {key: value.item() for key, value in self.step_tensors(batch).items()}

    def step_tensors(self, batch: Any) -> dict[str, Tensor]:
        """:meth:`train_step` with its metrics left on the device: nothing waits for the GPU, so the step
        can be recorded as a CUDA graph (:class:`metalearn_lib.graphs.GraphedTrainStep`)."""
        loss, outs = self.meta_loss(batch, backward=True)
        metrics = {"loss": loss}
        if self.problem == "classification":
            metrics["accuracy"] = correct_fraction(outs, _task_tensors(batch)[3])
        return metrics

    def adapted_params(self, x_support: Tensor, y_support: Tensor, steps: int | None = None) -> Params:
        """θ' after ``steps`` (default ``test_inner_steps``) first-order steps on one task's support set.

        For ANIL these are the head's parameters (apply them to ``net.features(x)``).
        """
        module = self._adapted_module()
        with torch.enable_grad():
            fast = adapt(module, dict(module.named_parameters()), self._body(x_support), y_support, self.loss_fn,
                         self.test_inner_steps if steps is None else steps, self.inner_learning_rate(),
                         first_order=True)
        return {k: v.detach() for k, v in fast.items()}

    def forward_with(self, params: Params, x: Tensor) -> Tensor:
        """The network's output on ``x`` with adapted parameters from :meth:`adapted_params`."""
        return functional_call(self._adapted_module(), params, (self._body(x),))

    def check_ways(self, ways: int) -> None:
        check_head_ways(self, ways)

    def predict(self, x_support: Tensor, y_support: Tensor, x_query: Tensor, ways: int) -> Tensor:
        """Adapt on the support set for ``test_inner_steps`` steps, then the query logits (or outputs)."""
        self.check_ways(ways)
        with torch.enable_grad():
            fast = self.adapted_params(x_support, y_support)
            return self.forward_with(fast, x_query).detach()


class FOMAML(MAML):
    """First-order MAML (Finn et al., 2017, Section 5.2): the inner gradients are treated as constants."""

    name = "fomaml"

    def __init__(self, *args: Any, first_order: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, first_order=first_order, **kwargs)


class MetaSGD(MAML):
    """Meta-SGD (Li et al., 2017): MAML with one learned inner learning rate per parameter entry."""

    name = "metasgd"

    def __init__(self, *args: Any, lr_mode: str = "per_param", **kwargs: Any) -> None:
        super().__init__(*args, lr_mode=lr_mode, **kwargs)


class ANIL(MAML):
    """ANIL (Raghu et al., 2020): almost no inner loop, only the head is adapted."""

    name = "anil"

    def __init__(self, *args: Any, head_only: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, head_only=head_only, **kwargs)


# ----------------------------------------------------------------------------------------- regression eval

#: A task counts as *diverged* when its query MSE is not finite or above this: eight times the error
#: of predicting 0 for the largest sinusoid (amplitude 5: mean square 12.5), far beyond any fit that
#: is getting better.
DIVERGED_MSE = 100.0


def regression_mses(algorithm: MAML, sampler: Any, tasks: int = 600,
                    steps: Sequence[int] = (1, 5, 10)) -> dict[str, Tensor]:
    """Query MSE of each of ``tasks`` tasks from ``sampler`` after each number of inner ``steps``.

    Uses the algorithm's own inner learning rate (α) and first-order steps (the same values as second
    order: no meta-gradient is needed here). Returns ``{"1": mses [tasks], "5": ..., ...}``.

    A multilayer perceptron (the sinusoid's) adapts all tasks at once as batched matrix products, the
    ``"bmm"`` path of training: 2,000 tasks take about 0.5 s on one CPU thread instead of 15 s one task
    at a time, and the errors agree with the task-by-task loop to float32 rounding (``tests/test_maml.py``).
    That makes tens of thousands of test tasks cheap, which a rate of diverging tasks needs.
    """
    if algorithm.problem != "regression":
        raise ValueError(f"{algorithm.name} was built for classification; build it with problem='regression'")
    module = algorithm._adapted_module()
    lr = algorithm.inner_learning_rate()
    wanted = sorted(set(int(s) for s in steps))
    batch = sampler.sample_batch(tasks)
    if is_batched_mlp(module) and not algorithm.head_only:
        return _regression_mses_batched(module, lr, batch, wanted, algorithm.loss_fn)
    mses = {s: torch.empty(tasks) for s in wanted}
    for i in range(tasks):
        xs, ys = algorithm._body(batch.x_support[i]), batch.y_support[i]
        zq, yq = algorithm._body(batch.x_query[i]), batch.y_query[i]
        params = {k: v.detach().requires_grad_() for k, v in module.named_parameters()}
        done = 0
        for target in wanted:
            # continue the same run of steps, keeping the per-step rate schedule aligned
            rates = [_step_rate(lr, s) for s in range(done, target)]
            params = adapt(module, params, xs, ys, algorithm.loss_fn, target - done, rates, first_order=True)
            done = target
            with torch.no_grad():
                mses[target][i] = F.mse_loss(functional_call(module, params, (zq,)), yq).item()
    return {str(s): mses[s] for s in wanted}


def _regression_mses_batched(module: nn.Module, lr: LearningRate, batch: Any, wanted: list[int],
                             loss_fn: LossFn) -> dict[str, Tensor]:
    """:func:`regression_mses` for an MLP: every task's own θ' from one batched run of inner steps."""
    tasks = batch.x_support.shape[0]

    def forward(params: Params, x: Tensor) -> Tensor:
        return batched_mlp(module, params, x)  # type: ignore[arg-type]

    task_losses = per_task_loss(loss_fn, tasks)
    # a sum of the tasks' mean losses: each task's gradient is that of its own mean, as in the loop
    params = {k: v.detach().expand(tasks, *v.shape).requires_grad_() for k, v in module.named_parameters()}
    mses, done = {}, 0
    for target in wanted:
        rates = [_step_rate(lr, s) for s in range(done, target)]
        params = adapt(module, params, batch.x_support, batch.y_support, lambda o, y: task_losses(o, y).sum(),
                       target - done, rates, first_order=True, forward=forward)
        done = target
        with torch.no_grad():
            mses[str(target)] = task_losses(forward(params, batch.x_query), batch.y_query).cpu()
    return mses


def evaluate_regression(algorithm: MAML, sampler: Any, tasks: int = 600,
                        steps: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Mean query MSE over ``tasks`` tasks after each number of inner ``steps``: ``{"1": mse, ...}``.

    One task whose inner steps diverge makes the mean infinite or NaN; :func:`regression_mses` gives
    the per-task values (and :data:`DIVERGED_MSE` a threshold) to see how many did.
    """
    return {k: v.mean().item() for k, v in regression_mses(algorithm, sampler, tasks, steps).items()}

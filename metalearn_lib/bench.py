"""Throughput of MAML's meta-training step: this library against learn2learn and higher.

``python -m metalearn_lib bench maml [--device cpu|cuda] [--quick]`` prints one JSON line per
implementation and setting::

    {"impl": "metalearn_lib", "setting": "5w1s-mb32-1step-second", "tasks_per_s": ..., "peak_mib": ...}

Every implementation meta-trains the same Conv4 (``bn="batch"``, same initial weights) on the same
random 28x28 tasks with one query per class (MAML's own setting), with Adam as the outer optimizer:
one timed step = inner loop on every task of the meta-batch, meta-gradient, optimizer step.
Settings: 5-way 1-shot, meta-batch 32, one inner step; 20-way 1-shot, meta-batch 16, five inner
steps; each second and first order. On a GPU, ``metalearn_lib-graph`` is our step recorded once as a
CUDA graph and replayed (``graph_vs_eager``: how far its weights after three steps are from the eager
step's, as a fraction of how far those moved, in full float32; :func:`graph_difference`), and with
``--paths`` ``metalearn_lib-graph-loop`` the loop over tasks recorded the same way. ``peak_mib`` is the peak CUDA memory (``null`` on a CPU, where
no per-run peak is available). ``--quick`` shrinks meta-batches to 4 and times one step, for CPUs.
On a CPU the implementations of a setting take turns, one step each, and report their median step
(with ``rounds`` and the ``range`` of rates), so that the machine's drift does not favour one of them.
Every implementation gets the same torch threads (``OMP_NUM_THREADS``, recorded as ``threads``): ours
runs the tasks of a meta-batch side by side on them (``task_threads``, recorded per row), learn2learn
and higher use them inside each operation.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from metalearn_lib.algorithms.maml import MAML
from metalearn_lib.allocator import keep_freed_memory
from metalearn_lib.models.conv4 import Conv4

INNER_LR = 0.4


@dataclass
class Setting:
    ways: int
    shots: int
    meta_batch: int
    steps: int
    first_order: bool

    @property
    def name(self) -> str:
        return (f"{self.ways}w{self.shots}s-mb{self.meta_batch}-{self.steps}step-"
                f"{'first' if self.first_order else 'second'}")


SETTINGS = [Setting(5, 1, 32, 1, False), Setting(5, 1, 32, 1, True),
            Setting(20, 1, 16, 5, False), Setting(20, 1, 16, 5, True)]


def make_tasks(setting: Setting, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random images with the shapes of a meta-batch (support and one query per class)."""
    g = torch.Generator().manual_seed(seed)
    t, n = setting.meta_batch, setting.ways * setting.shots
    xs = torch.rand(t, n, 1, 28, 28, generator=g)
    xq = torch.rand(t, setting.ways, 1, 28, 28, generator=g)
    ys = torch.arange(setting.ways).repeat_interleave(setting.shots).repeat(t, 1)
    yq = torch.arange(setting.ways).repeat(t, 1)
    return tuple(x.to(device) for x in (xs, ys, xq, yq))


def step_metalearn_lib(setting: Setting, net: Conv4, vectorize: bool | None,
                       task_threads: int | None = None) -> tuple[torch.nn.Module, Callable]:
    from metalearn_lib.episodes import Episode

    algo = MAML(ways=setting.ways, net=net, inner_lr=INNER_LR, inner_steps=setting.steps,
                first_order=setting.first_order, vectorize=vectorize, task_threads=task_threads)

    def step(xs, ys, xq, yq):
        algo.train_step(Episode(xs, ys, xq, yq, setting.ways, setting.shots, 1))
    return algo, step


def step_learn2learn(setting: Setting, net: Conv4) -> tuple[torch.nn.Module, Callable]:
    import learn2learn as l2l

    maml = l2l.algorithms.MAML(net, lr=INNER_LR, first_order=setting.first_order)

    def step(xs, ys, xq, yq):
        for i in range(xs.shape[0]):
            learner = maml.clone()
            for _ in range(setting.steps):
                learner.adapt(F.cross_entropy(learner(xs[i]), ys[i]))
            (F.cross_entropy(learner(xq[i]), yq[i]) / xs.shape[0]).backward()
    return maml, step


def step_higher(setting: Setting, net: Conv4) -> tuple[torch.nn.Module, Callable]:
    import higher

    inner = torch.optim.SGD(net.parameters(), lr=INNER_LR)

    def step(xs, ys, xq, yq):
        for i in range(xs.shape[0]):
            with higher.innerloop_ctx(net, inner, copy_initial_weights=False,
                                      track_higher_grads=not setting.first_order) as (fmodel, diffopt):
                for _ in range(setting.steps):
                    diffopt.step(F.cross_entropy(fmodel(xs[i]), ys[i]))
                loss = F.cross_entropy(fmodel(xq[i]), yq[i]) / xs.shape[0]
                if setting.first_order:  # θ' is cut from θ: add ∇L(θ') to θ's gradient by hand
                    grads = torch.autograd.grad(loss, fmodel.parameters())
                    for p, g in zip(net.parameters(), grads):
                        p.grad = g if p.grad is None else p.grad + g
                else:
                    loss.backward()
    return net, step


#: Our implementation with its meta-batch path forced: ``-loop`` (a Python loop over tasks) or
#: ``-vmap`` (``torch.func.vmap``); plain ``metalearn_lib`` lets the class choose (vmap on CUDA).
#: ``-graph`` (CUDA only) is the class's choice with the whole step recorded once as a CUDA graph and
#: replayed (:class:`metalearn_lib.graphs.GraphedTrainStep`, ``train --cuda-graph``); ``-graph-loop``
#: (CUDA, with ``--paths``) records the loop over tasks instead: no launch overhead, no grouped convolutions.
PATH_IMPLS = {"metalearn_lib-loop": False, "metalearn_lib-vmap": True}
#: On a CPU with more than one torch thread, ``-serial`` is our loop with one task at a time
#: (``task_threads=1``: PyTorch's threads work inside each operation, as they do for learn2learn and
#: higher); plain ``metalearn_lib`` runs the tasks side by side, one thread each.
SERIAL_IMPL = "metalearn_lib-serial"
GRAPH_IMPL = "metalearn_lib-graph"
GRAPH_IMPLS = {GRAPH_IMPL: None, "metalearn_lib-graph-loop": False}   # name -> MAML's vectorize


def _seeded_maml(setting: Setting, device: torch.device, vectorize: bool | None = None) -> tuple[MAML, Any]:
    """Our MAML with the bench's initial weights (seed 0, as :func:`prepare` builds them) and the tasks."""
    from metalearn_lib.episodes import Episode

    torch.manual_seed(0)
    algo, _ = step_metalearn_lib(setting, Conv4(1, out_features=setting.ways, bn="batch").to(device), vectorize)
    return algo.to(device), Episode(*make_tasks(setting, device), setting.ways, setting.shots, 1)


def prepare_graph(setting: Setting, device: torch.device,
                  vectorize: bool | None = None) -> tuple[torch.nn.Module, Callable[[], None]]:
    """Our step recorded as a CUDA graph (the warm-up and recording happen here, untimed)."""
    from metalearn_lib.graphs import GraphedTrainStep

    algo, batch = _seeded_maml(setting, device, vectorize)
    graphed = GraphedTrainStep(algo, torch.optim.Adam(algo.parameters(), lr=1e-3))

    def one() -> None:
        graphed(batch)

    one()
    return algo, one


def graph_difference(setting: Setting, device: torch.device, steps: int = 3) -> float:
    """How far apart the weights are after ``steps`` recorded steps and as many eager ones, from the same
    start on the same tasks, as a fraction of how far the eager steps moved them.

    Both use Adam with ``eps=1``: with the default ``eps`` the conv biases before BatchNorm, whose
    gradients are rounding noise, take steps of ±lr whose signs the last bits decide (the bench's first
    GPU run reported ``max_abs_diff_vs_eager``, 0.003 to 0.005 after three steps at lr 1e-3, from them).
    Both run in full float32 (no TF32), so that the figure measures the graph and not TF32's rounding,
    which five second-order inner steps amplify (0.40 for 20w1s-mb16-5step-second on an H200, with TF32
    and cuDNN's autotuner on).
    """
    from metalearn_lib.graphs import GraphedTrainStep, largest_difference

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, False
    runs = []
    try:
        for graph in (False, True):
            algo, batch = _seeded_maml(setting, device)
            start = [p.detach().clone() for p in algo.parameters()]
            optimizer = torch.optim.Adam(algo.parameters(), lr=1e-3, eps=1.0)
            graphed = GraphedTrainStep(algo, optimizer) if graph else None
            for _ in range(steps):
                if graphed is not None:
                    graphed(batch)
                else:
                    optimizer.zero_grad(set_to_none=True)
                    algo.step_tensors(batch)
                    optimizer.step()
            runs.append((start, list(algo.parameters())))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    (start, eager), (_, replayed) = runs
    return largest_difference(eager, replayed) / largest_difference(eager, start)


def prepare(impl: str, setting: Setting, device: torch.device,
            vectorize: bool | None = None) -> tuple[torch.nn.Module, Callable[[], None]]:
    """The module and one timed step (zero_grad, meta-batch, optimizer step) of ``impl``, warmed up."""
    if impl in GRAPH_IMPLS:
        return prepare_graph(setting, device, GRAPH_IMPLS[impl])
    torch.manual_seed(0)
    net = Conv4(1, out_features=setting.ways, bn="batch").to(device)
    if impl.startswith("metalearn_lib"):
        module, step = step_metalearn_lib(setting, net, PATH_IMPLS.get(impl, vectorize),
                                          task_threads=1 if impl == SERIAL_IMPL else None)
    elif impl == "learn2learn":
        module, step = step_learn2learn(setting, net)
    else:
        module, step = step_higher(setting, net)
    module.to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    tasks = make_tasks(setting, device)

    def one() -> None:
        optimizer.zero_grad(set_to_none=True)
        step(*tasks)
        optimizer.step()

    one()  # warm-up (allocations, kernel selection)
    return module, one


def time_rounds(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Seconds of one call of each function, the functions taking turns, ``rounds`` times over.

    Taking turns spreads a machine's drift (other jobs, clock changes: ±15% on this project's shared
    CPU) over every implementation alike, where one block per implementation would hand it to whichever
    ran at the wrong moment.
    """
    if rounds < 1:
        raise ValueError(f"time at least one round (--steps 1 or more), got {rounds}")
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, one in steps.items():
            start = time.perf_counter()
            one()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def run_one(impl: str, setting: Setting, device: torch.device, timed_steps: int,
            vectorize: bool | None = None) -> dict[str, Any]:
    """``impl`` alone: ``timed_steps`` steps in one block (how the GPU is measured; peak memory is its own)."""
    if device.type == "cuda":  # a graph's memory is taken while recording: count it from the start
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    module, one = prepare(impl, setting, device, vectorize)
    if device.type == "cuda" and impl not in GRAPH_IMPLS:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(timed_steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None
    out = {"impl": impl, "setting": setting.name, "tasks_per_s": round(setting.meta_batch * timed_steps / seconds, 2),
           "peak_mib": round(peak, 1) if peak is not None else None, "device": str(device)}
    if impl.startswith("metalearn_lib"):
        out["vectorize"] = module._use_vmap(device)
    if impl == GRAPH_IMPL:
        out["graph_vs_eager"] = graph_difference(setting, device)
    return out


def run_interleaved(impls: list[str], setting: Setting, device: torch.device, rounds: int) -> list[dict[str, Any]]:
    """Every implementation of ``impls`` on one setting, one step each in turn (:func:`time_rounds`);
    ``tasks_per_s`` from the median step, and the slowest and fastest step's rate beside it."""
    prepared, rows, errors = {}, [], {}
    for impl in impls:
        try:
            prepared[impl] = prepare(impl, setting, device)
        except ImportError as error:
            errors[impl] = f"not installed: {error}"
    seconds = time_rounds({impl: one for impl, (_, one) in prepared.items()}, rounds)
    for impl in impls:
        if impl in errors:
            rows.append({"impl": impl, "setting": setting.name, "error": errors[impl]})
            continue
        rate = [setting.meta_batch / s for s in seconds[impl]]
        row = {"impl": impl, "setting": setting.name, "tasks_per_s": round(setting.meta_batch / statistics.median(seconds[impl]), 2),
               "peak_mib": None, "device": str(device), "rounds": rounds,
               "range": [round(min(rate), 2), round(max(rate), 2)]}
        if impl.startswith("metalearn_lib"):
            algo = prepared[impl][0]
            row["vectorize"] = algo._use_vmap(device)
            row["task_threads"] = algo.training_task_threads(setting.meta_batch, device)
        rows.append(row)
    return rows


def bench_maml(device: torch.device, quick: bool = False, timed_steps: int | None = None,
               printer: Callable[[str], None] = print, paths: bool = False) -> list[dict[str, Any]]:
    """Run every implementation on every setting; print and return one dict per run.

    ``paths=True`` adds our implementation with the path the class would *not* choose on this device
    (the loop on CUDA, vmap on a CPU), the measurement behind ``MAML(vectorize=None)``'s choice, and on
    a CPU with several torch threads our loop with one task at a time (``metalearn_lib-serial``), the
    measurement behind ``task_threads``.

    On a CPU the implementations take turns, one step each, for ``timed_steps`` rounds, and each reports
    its median step (:func:`run_interleaved`). On a GPU each runs ``timed_steps`` steps on its own, so
    that its peak memory is its own (:func:`run_one`).
    """
    if device.type == "cpu":
        keep_freed_memory()  # the same allocator for every implementation (metalearn_lib/allocator.py)
    impls = ["metalearn_lib", "learn2learn", "higher"]
    if paths:
        impls.insert(1, "metalearn_lib-loop" if device.type == "cuda" else "metalearn_lib-vmap")
        if device.type == "cpu" and torch.get_num_threads() > 1:
            impls.insert(1, SERIAL_IMPL)
    if device.type == "cuda":  # a CUDA graph saves launches, which a CPU does not make
        impls[:0] = list(GRAPH_IMPLS) if paths else [GRAPH_IMPL]
    settings = [copy.copy(s) for s in SETTINGS]
    if quick:
        for s in settings:
            s.meta_batch = 4
    steps = timed_steps or (1 if quick else 5)
    rows = []
    for setting in settings:
        if device.type == "cpu":  # implementations take turns, one step each: the median of `steps` rounds
            for row in run_interleaved(impls, setting, device, steps):
                printer(json.dumps(row))
                rows.append(row)
            continue
        for impl in impls:
            try:
                row = run_one(impl, setting, device, steps)
            except ImportError as error:
                row = {"impl": impl, "setting": setting.name, "error": f"not installed: {error}"}
            except RuntimeError as error:  # a graph that cannot be recorded: say why, time the others
                if impl not in GRAPH_IMPLS:
                    raise
                row = {"impl": impl, "setting": setting.name, "error": f"recording failed: {error}"[:2000]}
            printer(json.dumps(row))
            rows.append(row)
    return rows

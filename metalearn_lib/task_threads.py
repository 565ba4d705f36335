"""The tasks of a meta-batch side by side on CPU threads, one core each (MAML's and Reptile's loop path).

Why: a meta-batch is a loop of small, independent computations (a 5-image convolution, its backward).
On a CPU PyTorch parallelises *inside* each operation (intra-op threads), which pays little on
operations that small; running whole tasks at once, each on one thread, keeps every core busy instead.
PyTorch releases Python's GIL inside its operations and runs a CPU backward on the thread that asks for
it, so plain Python threads are enough. Measured on the book's 2-core CPU (torch 2.14, Conv4, the four
settings of ``bench maml --quick``, ``benchmarks/results/cpu/bench_maml_2threads.json``): two tasks at
once, one thread each, made 1.11-1.27x learn2learn's tasks per second on the same two threads, where
our loop run one task at a time, with the threads inside each operation, made 0.94-1.01x.

How, and why it stays exact:

- ``torch.func.functional_call`` swaps a module's parameters in place for the duration of the call, so
  two threads must never run one module at once: every running task gets its own *replica* (a deep copy,
  made once and kept), and is given every parameter explicitly, so the replica's own copies never count.
  Modules with buffers (BatchNorm running statistics) are refused: the replica's buffers would be stale,
  and two threads would update the original's at once (:func:`can_share`).
- Some of PyTorch's settings belong to the thread that makes them, and a worker would not see them:
  autocast, and saved-tensor hooks (``torch.autograd.graph.saved_tensors_hooks``, ``save_on_cpu``,
  memory meters built on them, as in chapter 8). While the caller has either on, its tasks run one by
  one on its own thread (:func:`caller_settings_stay_behind`). Grad mode is also per thread; threads
  are used only with it on, which is how a new thread starts.
- Each worker sets ``torch.set_num_threads(1)`` for itself (OpenMP's thread count is per thread); the
  caller's count is restored afterwards.
- Each task returns its gradients (``torch.autograd.grad``) instead of adding into ``.grad``; they are
  summed in task order (:func:`add_gradients`), so the result does not depend on which thread finished
  first. With one thread per task it equals the serial loop run on one thread (``tests/test_task_threads.py``).
"""

from __future__ import annotations

import copy
import queue
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence, TypeVar

import torch
from torch import Tensor, nn

T = TypeVar("T")

_POOLS: dict[int, ThreadPoolExecutor] = {}
_REPLICAS: "weakref.WeakKeyDictionary[nn.Module, list[nn.Module]]" = weakref.WeakKeyDictionary()


def check_task_threads(value: object) -> None:
    """Raise unless ``value`` is None (choose) or a positive integer."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"task_threads must be a positive integer or None (one per torch thread on a CPU), "
                         f"got {value!r}")


def can_share(module: nn.Module) -> bool:
    """Whether replicas of ``module`` can run its tasks: it must hold no buffers (see the module docstring)."""
    return not any(True for _ in module.buffers())


def caller_settings_stay_behind() -> bool:
    """Whether the calling thread has settings that a worker thread would not inherit: autocast or
    saved-tensor hooks (or this PyTorch cannot say whether hooks are set)."""
    try:
        if torch.is_autocast_enabled("cpu"):
            return True
    except TypeError:  # torch < 2.4 takes no device type
        if torch.is_autocast_cpu_enabled():
            return True
    top_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top_hooks is None or top_hooks(False) is not None


def task_workers(requested: int | None, tasks: int, device: torch.device, module: nn.Module) -> int:
    """How many threads run ``tasks`` tasks: 1 off the CPU, for a module with buffers, or while the
    caller has per-thread settings on (:func:`caller_settings_stay_behind`); else ``requested``, or
    PyTorch's thread count when None, at most one per task."""
    if device.type != "cpu" or tasks < 2 or not can_share(module) or caller_settings_stay_behind():
        return 1
    wanted = torch.get_num_threads() if requested is None else requested
    return max(1, min(wanted, tasks))


def _pool(workers: int) -> ThreadPoolExecutor:
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="metalearn-task")
    return _POOLS[workers]


def _replicas(module: nn.Module, count: int) -> list[nn.Module]:
    kept = _REPLICAS.setdefault(module, [])
    while len(kept) < count:
        kept.append(copy.deepcopy(module))
    return kept[:count]


def map_tasks(fn: Callable[[int, nn.Module], T], tasks: int, module: nn.Module, workers: int) -> list[T]:
    """``[fn(i, m) for i in range(tasks)]``, on ``workers`` threads; ``m`` is ``module`` itself when
    ``workers`` is 1, else a replica no other running task holds. Results come in task order."""
    if workers <= 1:
        return [fn(i, module) for i in range(tasks)]
    free: "queue.SimpleQueue[nn.Module]" = queue.SimpleQueue()
    for replica in _replicas(module, workers):
        free.put(replica)
    saved = torch.get_num_threads()

    def run(i: int) -> T:
        torch.set_num_threads(1)
        replica = free.get()
        try:
            return fn(i, replica)
        finally:
            free.put(replica)

    try:
        return list(_pool(workers).map(run, range(tasks)))
    finally:
        torch.set_num_threads(saved)  # also the count that threads started later begin with


def add_gradients(params: Sequence[Tensor], per_task: Iterable[Sequence[Tensor | None]]) -> None:
    """Add each task's gradients (one tuple per task, aligned with ``params``) into ``.grad``, in task order."""
    totals: list[Tensor | None] = [None] * len(params)
    for grads in per_task:
        for j, g in enumerate(grads):
            if g is not None:
                totals[j] = g if totals[j] is None else totals[j] + g
    for p, total in zip(params, totals):
        if total is not None:
            p.grad = total if p.grad is None else p.grad + total

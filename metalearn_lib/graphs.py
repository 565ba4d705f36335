"""One training step recorded once as a CUDA graph and replayed: no Python, no kernel launches per step.

NVIDIA (2021). *CUDA Graphs*, and PyTorch's "whole-network capture" (``torch.cuda.graph``,
https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs).

A MAML meta-step on Omniglot's Conv-4 is hundreds of small kernels (an inner loop per task, a
backward through it, Adam). On a large GPU each takes microseconds, so the step's time is the host's:
Python, the dispatcher, ``vmap``'s bookkeeping and the launches. A CUDA graph records the kernels of
one step (``zero_grad``, ``train_step``'s forward and backward, ``optimizer.step``) with the
addresses they read and write; a replay launches them all at once. Each new meta-batch is copied into
the recorded input tensors first.

What a recorded step needs, and what :class:`GraphedTrainStep` checks or arranges:

- every meta-batch has the shapes of the first (episodes of fixed ways, shots and queries);
- the algorithm has ``step_tensors(batch)``: ``train_step`` without reading a value back to the host
  (``.item()`` would wait for the GPU, which capture forbids); MAML and its family have it, and so do
  the episodic metric methods (ProtoNet, Matching Networks), but not Siamese pairs (``graph_safe``);
- the optimizer keeps its step count and learning rate on the GPU (``capturable=True``, a tensor
  ``lr`` that :meth:`GraphedTrainStep.set_lr` changes in place, so schedules still work);
- warm-up steps before recording (cuDNN and cuBLAS choose their kernels then), after which the
  weights, the buffers and the optimizer's state are put back, so the first recorded step is the first.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import torch
from torch import Tensor


def supports_graph(algorithm: Any) -> bool:
    """Can ``algorithm``'s training step be recorded: a host-free ``step_tensors``, with sizes that do not
    depend on the data (``graph_safe``)?"""
    return callable(getattr(algorithm, "step_tensors", None)) and getattr(algorithm, "graph_safe", True)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate: in place when it is a tensor (which a recorded step reads)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def largest_difference(a: Iterable[Tensor], b: Iterable[Tensor]) -> float:
    """The largest absolute difference between two lists of tensors (two models' weights, say)."""
    return max((x.detach() - y.detach().to(x.device)).abs().max().item() for x, y in zip(a, b))


def check_graph_device(device: torch.device) -> None:
    if device.type != "cuda":
        raise ValueError(f"a CUDA graph needs the episodes on a CUDA GPU, but they are on {device}: "
                         "sample episodes on device='cuda', or train without cuda_graph (--cuda-graph)")
    if not torch.cuda.is_available():
        raise ValueError("a CUDA graph needs a CUDA GPU, and torch sees none: train without cuda_graph")


class GraphedTrainStep:
    """``zero_grad``, ``algorithm.step_tensors(batch)`` and ``optimizer.step()``, recorded on the first
    call and replayed on every call after.

    Args:
        algorithm: a :class:`~metalearn_lib.algorithms.base.FewShotAlgorithm` with ``step_tensors``.
        optimizer: its outer optimizer, one with a ``capturable`` option (Adam, AdamW; not SGD): made
            capturable here, its learning rate becomes a tensor (use :meth:`set_lr`).
        warmup: eager steps before recording (undone afterwards).

    Calling it with a meta-batch returns the step's metrics as GPU tensors (``loss``, ``accuracy``),
    overwritten by the next call: read them (``.item()``) or ``clone()`` them before then.
    """

    def __init__(self, algorithm: Any, optimizer: torch.optim.Optimizer, warmup: int = 3) -> None:
        if not supports_graph(algorithm):
            why = "it has no step_tensors" if not callable(getattr(algorithm, "step_tensors", None)) else \
                "its sizes depend on the data, or it draws random numbers on the host"
            raise ValueError(f"{algorithm.name}'s training step cannot be recorded as a CUDA graph ({why}); "
                             "train it without cuda_graph")
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1 step (cuDNN chooses its kernels then), got {warmup}")
        self.algorithm, self.optimizer, self.warmup = algorithm, optimizer, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: Any = None  # the recorded meta-batch, whose tensors each call overwrites
        self.metrics: dict[str, Tensor] = {}

    # -- the optimizer, on the GPU
    def _make_capturable(self, device: torch.device) -> None:
        for group in self.optimizer.param_groups:
            if "capturable" not in group:
                raise ValueError(f"{type(self.optimizer).__name__} cannot run inside a CUDA graph (it has no "
                                 "capturable option); use Adam or AdamW")
            group["capturable"] = True
            lr = group["lr"]
            group["lr"] = lr.to(device) if isinstance(lr, Tensor) else torch.tensor(float(lr), device=device)
            for p in group["params"]:  # a resumed optimizer may keep its step counts on the CPU
                state = self.optimizer.state.get(p, {})
                for key, value in state.items():
                    if isinstance(value, Tensor) and value.device != p.device:
                        state[key] = value.to(p.device)

    def set_lr(self, lr: float) -> None:
        """Change the learning rate in place (the recorded step reads it from the GPU)."""
        set_learning_rate(self.optimizer, lr)

    # -- inputs: a meta-batch is a dataclass (Episode, SinusoidTask) of tensors and sizes
    @staticmethod
    def _fields(batch: Any) -> dict[str, Any]:
        if not dataclasses.is_dataclass(batch):
            raise ValueError(f"a CUDA graph records a meta-batch dataclass (Episode, SinusoidTask), not "
                             f"{type(batch).__name__}")
        return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}

    @staticmethod
    def _describe(fields: dict[str, Any]) -> str:
        return ", ".join(f"{k} {tuple(v.shape)}" if isinstance(v, Tensor) else f"{k} {v!r}" for k, v in fields.items())

    def _copy_in(self, batch: Any) -> None:
        new, old = self._fields(batch), self._fields(self.static)
        same = type(batch) is type(self.static) and all(
            (isinstance(v, Tensor) and v.shape == old[k].shape and v.dtype == old[k].dtype) or
            (not isinstance(v, Tensor) and v == old[k]) for k, v in new.items())
        if not same:
            raise ValueError(f"a recorded CUDA graph replays fixed shapes: it was recorded with "
                             f"{self._describe(old)}, and now gets {self._describe(new)}; keep every meta-batch "
                             "the same size (ways, shots, queries, tasks), or train without cuda_graph")
        for k, v in new.items():
            if isinstance(v, Tensor) and v is not old[k]:
                old[k].copy_(v, non_blocking=True)

    def _eager(self, batch: Any) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self.algorithm.step_tensors(batch)
        self.optimizer.step()
        return metrics

    # -- record
    def _record(self, batch: Any) -> None:
        device = batch.x_support.device
        check_graph_device(device)
        self.static = dataclasses.replace(batch, **{k: v.clone() for k, v in self._fields(batch).items()
                                                    if isinstance(v, Tensor)})
        self._make_capturable(device)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        saved_params = [p.detach().clone() for p in params]
        buffers = list(self.algorithm.buffers())  # BatchNorm's running statistics, if it keeps them
        saved_buffers = [b.clone() for b in buffers]
        had_state = {p: {k: v.clone() if isinstance(v, Tensor) else v for k, v in self.optimizer.state[p].items()}
                     for p in params if self.optimizer.state.get(p)}
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the default stream, as PyTorch's notes ask
            for _ in range(self.warmup):
                self._eager(self.static)
        torch.cuda.current_stream(device).wait_stream(side)
        # undo the warm-up: same weights, and the optimizer's state as it was (zero where it had none,
        # which is a fresh Adam's state), changed in place so the recorded addresses stay valid
        with torch.no_grad():
            for p, saved in zip(params, saved_params):
                p.copy_(saved)
            for b, saved in zip(buffers, saved_buffers):
                b.copy_(saved)
            for p in params:
                for key, value in self.optimizer.state.get(p, {}).items():
                    if isinstance(value, Tensor):
                        old = had_state.get(p, {}).get(key)
                        if isinstance(old, Tensor):
                            value.copy_(old)
                        else:
                            value.zero_()
        self.optimizer.zero_grad(set_to_none=True)  # gradients are then allocated, and written, by the graph
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                self.metrics = self._eager(self.static)
        except RuntimeError as error:  # an operation that waits for the GPU, or allocates on the host
            self.graph = None
            raise RuntimeError(f"recording {getattr(self.algorithm, 'name', 'the')} training step as a CUDA "
                               f"graph failed: {error}. Train without cuda_graph (--cuda-graph)") from error

    def __call__(self, batch: Any) -> dict[str, Tensor]:
        if self.graph is None:
            self._record(batch)
        self._copy_in(batch)
        self.graph.replay()  # type: ignore[union-attr]
        return self.metrics

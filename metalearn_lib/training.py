"""The one training loop, shared by every algorithm.

Each outer step draws a meta-batch of episodes, zeroes the gradients, calls the algorithm's
``train_step`` (which leaves the meta-gradient in ``.grad``) and steps the optimizer. Around that:
a learning-rate schedule, a stop by number of steps or by wall-clock budget, periodic validation
with the best-by-validation weights kept, tqdm progress, and checkpoints that resume exactly.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from metalearn_lib.algorithms.base import FewShotAlgorithm
from metalearn_lib.allocator import keep_freed_memory
from metalearn_lib.episodes import EpisodeSampler
from metalearn_lib.evaluation import episode_accuracies, mean_ci95
from metalearn_lib.graphs import GraphedTrainStep, check_graph_device, set_learning_rate

SCHEDULES = ("constant", "step", "cosine")


@dataclass
class TrainConfig:
    """How long and how to train. Give ``steps``, ``time_budget`` (seconds), or both (first reached stops).

    A *step* is one outer update on a meta-batch of ``meta_batch`` episodes.
    """

    steps: int | None = None
    time_budget: float | None = None
    lr: float = 1e-3
    schedule: str = "step"          # constant | step (x gamma every step_size steps) | cosine (to 0 at the end)
    step_size: int = 2000
    gamma: float = 0.5
    meta_batch: int = 1
    val_every: int = 0              # steps between validations; 0 = never
    val_episodes: int = 100
    log_every: int = 25             # steps between history entries
    checkpoint_every: int = 0       # steps between checkpoints (0 = only at the end); needs out_dir
    out_dir: str | None = None
    resume: bool = False
    seed: int = 0
    progress: bool = True
    cuda_graph: bool = False        # record the step once as a CUDA graph and replay it (metalearn_lib/graphs.py)

    def check(self) -> None:
        if self.steps is None and self.time_budget is None:
            raise ValueError("say how long to train: give steps (--episodes) or time_budget (--time-budget)")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget must be a positive number of seconds, got {self.time_budget}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.meta_batch <= 0:
            raise ValueError(f"meta_batch must be positive, got {self.meta_batch}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass
class TrainResult:
    steps: int = 0
    tasks: int = 0
    seconds: float = 0.0
    history: dict[str, list[float]] = field(default_factory=lambda: {"step": [], "seconds": [], "loss": [], "accuracy": [], "lr": []})
    validation: dict[str, list[float]] = field(default_factory=lambda: {"step": [], "accuracy": [], "ci95": []})
    best_step: int | None = None
    best_val_accuracy: float | None = None

    def summary(self) -> dict[str, Any]:
        out = {"episodes": self.steps, "tasks": self.tasks, "seconds": round(self.seconds, 1)}
        if self.best_step is not None:
            out.update(best_step=self.best_step, best_val_accuracy=round(self.best_val_accuracy, 2))
        return out


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """The scheduled learning rate at ``step`` (``progress`` in [0, 1] is the fraction of the run done)."""
    if config.schedule == "step":
        return config.lr * config.gamma ** (step // config.step_size)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.lr


def save_checkpoint(path: Path, algorithm: FewShotAlgorithm, optimizer: torch.optim.Optimizer | None,
                    sampler: EpisodeSampler | None, result: TrainResult, best_state: dict | None,
                    extra: dict[str, Any] | None = None) -> None:
    """Everything needed to rebuild the algorithm and resume training, loadable with ``weights_only=True``."""
    blob = {
        "algorithm": algorithm.name,
        "config": algorithm.config(),
        "state": algorithm.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "sampler": sampler.state_dict() if sampler is not None else None,
        "result": asdict(result),
        "best_state": best_state,
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (safely: ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise ValueError(f"{path} is not a metalearn_lib checkpoint: {error}") from error


def train(algorithm: FewShotAlgorithm, sampler: EpisodeSampler, config: TrainConfig,
          val_sampler: EpisodeSampler | None = None, optimizer: torch.optim.Optimizer | None = None,
          extra: dict[str, Any] | None = None,
          callback: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Meta-train ``algorithm`` on episodes from ``sampler`` and return the history.

    With ``val_sampler`` and ``config.val_every``, the weights with the best validation accuracy are
    loaded into ``algorithm`` at the end. With ``config.out_dir``, ``last.pt`` (and ``best.pt``) are
    written there; ``config.resume`` continues from ``last.pt`` with the same episodes, schedule and
    budget as an uninterrupted run would have had.
    """
    config.check()
    if not algorithm.trainable:
        raise ValueError(f"{algorithm.name} has nothing to train; evaluate it directly")
    if sampler.device.type == "cpu":
        keep_freed_memory()  # steps that do not page-fault, whatever the process did before
    torch.manual_seed(config.seed)
    optimizer = optimizer or algorithm.configure_optimizer(config.lr)
    out_dir = Path(config.out_dir) if config.out_dir else None
    result, best_state = TrainResult(), None
    if config.resume and out_dir is not None and (out_dir / "last.pt").exists():
        blob = load_checkpoint(out_dir / "last.pt", map_location=sampler.device)
        if blob["algorithm"] != algorithm.name:
            raise ValueError(f"{out_dir / 'last.pt'} holds a {blob['algorithm']} checkpoint, not {algorithm.name}")
        algorithm.load_state_dict(blob["state"])
        optimizer.load_state_dict(blob["optimizer"])
        sampler.load_state_dict(blob["sampler"])
        result = TrainResult(**blob["result"])
        best_state = blob["best_state"]
    validate = val_sampler is not None and config.val_every > 0
    graphed = None
    if config.cuda_graph:  # checked before training, not at the first step
        check_graph_device(sampler.device)
        graphed = GraphedTrainStep(algorithm, optimizer)
    algorithm.train()
    start = time.perf_counter() - result.seconds
    total = config.steps if config.steps is not None else None
    bar = tqdm(total=total, initial=result.steps, desc=f"train {algorithm.name}", disable=not config.progress,
               mininterval=5, unit="step")
    running: dict[str, float] = {}

    def elapsed() -> float:
        return time.perf_counter() - start

    def progress() -> float:
        fractions = []
        if config.steps is not None:
            fractions.append(result.steps / config.steps)
        if config.time_budget is not None:
            fractions.append(elapsed() / config.time_budget)
        return max(fractions)

    def checkpoint() -> None:
        if out_dir is not None:
            result.seconds = elapsed()
            save_checkpoint(out_dir / "last.pt", algorithm, optimizer, sampler, result, best_state, extra)

    while progress() < 1.0:
        lr = learning_rate(config, result.steps, progress())
        set_learning_rate(optimizer, lr)
        batch = sampler.sample_batch(config.meta_batch)
        if graphed is not None:  # metrics stay on the GPU: read them only at log points
            metrics: dict[str, Any] = graphed(batch)
        else:
            optimizer.zero_grad(set_to_none=True)
            metrics = algorithm.train_step(batch)
            optimizer.step()
        result.steps += 1
        result.tasks += config.meta_batch
        for key, value in metrics.items():  # running mean between log points
            running[key] = running.get(key, 0.0) + value
        if result.steps % config.log_every == 0:
            n = config.log_every
            running = {key: float(value) for key, value in running.items()}
            result.history["step"].append(result.steps)
            result.history["seconds"].append(round(elapsed(), 2))
            result.history["loss"].append(running.get("loss", float("nan")) / n)
            result.history["accuracy"].append(running.get("accuracy", float("nan")) / n)
            result.history["lr"].append(lr)
            bar.set_postfix(loss=f"{running.get('loss', 0) / n:.3f}", acc=f"{running.get('accuracy', 0) / n:.3f}")
            running = {}
        if callback is not None:
            callback(result.steps, {key: float(value) for key, value in metrics.items()})
        if validate and result.steps % config.val_every == 0:
            episodes = (val_sampler.sample() for _ in range(config.val_episodes))
            mean, ci = mean_ci95(episode_accuracies(algorithm, episodes))
            result.validation["step"].append(result.steps)
            result.validation["accuracy"].append(100 * mean)
            result.validation["ci95"].append(100 * ci)
            if result.best_val_accuracy is None or 100 * mean > result.best_val_accuracy:
                result.best_val_accuracy, result.best_step = 100 * mean, result.steps
                best_state = copy.deepcopy(algorithm.state_dict())
                if out_dir is not None:
                    save_checkpoint(out_dir / "best.pt", algorithm, None, None, result, None, extra)
        if config.checkpoint_every and result.steps % config.checkpoint_every == 0:
            checkpoint()
        bar.update(1)
    bar.close()
    result.seconds = elapsed()
    checkpoint()
    if best_state is not None:
        algorithm.load_state_dict(best_state)
    return result

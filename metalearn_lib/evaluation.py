"""The one evaluation routine: mean accuracy with a 95% confidence interval over test episodes.

Two protocols:

- ``episodes``: ``episodes`` random N-way K-shot tasks from the test classes (600 by default, as in
  most papers; the same seed gives every algorithm the same tasks). The interval is
  1.96 x standard deviation / sqrt(episodes), over per-episode accuracies.
- ``lake-runs``: Lake's 20 official 20-way one-shot runs; the interval is over the 20 runs.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from metalearn_lib.algorithms.base import FewShotAlgorithm
from metalearn_lib.data.base import ClassImages
from metalearn_lib.data.lake_runs import LakeRun
from metalearn_lib.episodes import EpisodeSampler, check_episode_request

DEFAULT_TEST_QUERIES = 15


@dataclass
class EvalResult:
    """Accuracy in percent, the half-width of its 95% confidence interval, and the number of episodes."""

    accuracy: float
    ci95: float
    episodes: int

    def to_dict(self) -> dict[str, float | int]:
        return {"accuracy": round(self.accuracy, 2), "ci95": round(self.ci95, 2), "episodes": self.episodes}

    def __str__(self) -> str:
        return f"{self.accuracy:.2f} ± {self.ci95:.2f}% ({self.episodes} episodes)"


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% confidence half-width (normal approximation) of a sample."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


def parse_setting(text: str) -> tuple[int, int]:
    """``"5w1s"`` -> (5, 1)."""
    match = re.fullmatch(r"\s*(\d+)w(\d+)s\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not an evaluation setting: write WAYSwSHOTSs, for example 5w1s or 20w5s")
    return int(match.group(1)), int(match.group(2))


def _predict(algorithm: FewShotAlgorithm, x_support: Tensor, y_support: Tensor, x_query: Tensor, ways: int) -> Tensor:
    with torch.set_grad_enabled(algorithm.test_needs_grad):
        return algorithm.predict(x_support, y_support, x_query, ways)


def episode_accuracies(algorithm: FewShotAlgorithm, episodes: Iterable) -> list[float]:
    """Per-episode query accuracy (0..1) of ``algorithm`` over ``episodes``."""
    was_training = algorithm.training
    algorithm.eval()
    accs = []
    try:
        for ep in episodes:
            logits = _predict(algorithm, ep.x_support, ep.y_support, ep.x_query, ep.ways)
            accs.append((logits.argmax(-1) == ep.y_query).float().mean().item())
    finally:
        algorithm.train(was_training)
    return accs


def evaluate(algorithm: FewShotAlgorithm, classes: ClassImages, ways: int, shots: int,
             queries: int = DEFAULT_TEST_QUERIES, episodes: int = 600, seed: int = 1234,
             device: torch.device | str = "cpu", progress: bool = False) -> EvalResult:
    """Mean accuracy (percent) ± 95% CI of ``algorithm`` on ``episodes`` N-way K-shot test tasks.

    ``queries`` is capped so that ``shots + queries`` fits the images of a class (20 for Omniglot).
    """
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    min_count = int(classes.counts.min())
    queries = max(1, min(queries, min_count - shots))
    check_episode_request(classes.num_classes, min_count, ways, shots, queries, what="the test set")
    sampler = EpisodeSampler(classes, ways, shots, queries, seed=seed, device=device, name="the test set")
    stream = (sampler.sample() for _ in range(episodes))
    if progress:
        stream = tqdm(stream, total=episodes, desc=f"eval {ways}w{shots}s", mininterval=2, leave=False)
    mean, ci = mean_ci95(episode_accuracies(algorithm, stream))
    return EvalResult(100 * mean, 100 * ci, episodes)


def evaluate_lake_runs(algorithm: FewShotAlgorithm, runs: Sequence[LakeRun],
                       device: torch.device | str = "cpu") -> EvalResult:
    """Accuracy (percent) ± 95% CI over Lake's 20 official 20-way one-shot runs."""
    moved = [type(r)(r.name, r.x_support.to(device), r.y_support.to(device), r.x_query.to(device),
                     r.y_query.to(device)) for r in runs]
    mean, ci = mean_ci95(episode_accuracies(algorithm, moved))
    return EvalResult(100 * mean, 100 * ci, len(runs))


def results_dict(results: dict[str, EvalResult]) -> dict[str, dict]:
    return {key: value.to_dict() for key, value in results.items()}


__all__ = ["EvalResult", "mean_ci95", "parse_setting", "evaluate", "evaluate_lake_runs", "episode_accuracies",
           "results_dict", "asdict"]

"""Sinusoid regression tasks, the toy problem of MAML (Finn, Abbeel and Levine, 2017, Section 5.1).

Each task is y = A sin(x - phi) with amplitude A ~ U[0.1, 5.0], phase phi ~ U[0, pi], inputs x ~ U[-5, 5].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


@dataclass
class SinusoidTask:
    """A batch of sinusoid tasks: tensors have a leading task dimension."""

    amplitude: Tensor  # [tasks]
    phase: Tensor      # [tasks]
    x_support: Tensor  # [tasks, shots, 1]
    y_support: Tensor  # [tasks, shots, 1]
    x_query: Tensor    # [tasks, queries, 1]
    y_query: Tensor    # [tasks, queries, 1]

    def function(self, x: Tensor) -> Tensor:
        """The true curves at ``x`` ([tasks, n, 1])."""
        return self.amplitude[:, None, None] * torch.sin(x - self.phase[:, None, None])


class SinusoidSampler:
    """Draws meta-batches of sinusoid tasks, fully determined by ``seed``."""

    def __init__(self, shots: int = 10, queries: int = 10, seed: int = 0, device: torch.device | str = "cpu") -> None:
        if shots <= 0 or queries <= 0:
            raise ValueError(f"shots and queries must be positive, got shots={shots}, queries={queries}")
        self.shots, self.queries, self.device = shots, queries, torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(*shape, generator=self.generator)

    def sample_batch(self, tasks: int) -> SinusoidTask:
        if tasks <= 0:
            raise ValueError(f"the number of tasks must be positive, got {tasks}")
        amplitude, phase = self._uniform(*AMPLITUDE, tasks), self._uniform(*PHASE, tasks)
        x = self._uniform(*X_RANGE, tasks, self.shots + self.queries, 1)
        y = amplitude[:, None, None] * torch.sin(x - phase[:, None, None])
        move = lambda t: t.to(self.device)  # noqa: E731
        return SinusoidTask(move(amplitude), move(phase), move(x[:, :self.shots]), move(y[:, :self.shots]),
                            move(x[:, self.shots:]), move(y[:, self.shots:]))

    def state_dict(self) -> dict:
        """The random stream's position, so that a resumed training run sees the same tasks."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

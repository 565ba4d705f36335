"""How close CUDA-graph training stays to eager training, against how close two eager runs stay.

    python benchmarks/graph_vs_eager.py        (on a CUDA GPU; prints one line per case)

Second-order MAML (vmap and loop paths) trained for six steps on the same three meta-batches, from the
same start, with a step schedule and Adam (eps = 1, so that gradients which are rounding noise, such as
the conv biases before BatchNorm, do not become steps of ±lr): two eager runs, and one run recorded as a
CUDA graph (metalearn_lib.graphs). TF32 is off; with ``deterministic`` cuDNN also uses deterministic
algorithms. The differences are the largest over all weights, beside how far the weights moved.
tests/test_graphs.py asserts the graph run within 1% of that movement.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_graphs import FixedSampler, meta_batch  # noqa: E402

from metalearn_lib.algorithms import MAML  # noqa: E402
from metalearn_lib.graphs import largest_difference  # noqa: E402
from metalearn_lib.training import TrainConfig, train  # noqa: E402


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("this compares CUDA-graph training with eager training: it needs a CUDA GPU")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, False
    for deterministic in (False, True):
        torch.backends.cudnn.deterministic = deterministic
        for options in ({"inner_steps": 1}, {"inner_steps": 1, "vectorize": False}):
            batches = [meta_batch(tasks=4, seed=s, device="cuda") for s in range(3)]
            torch.manual_seed(0)
            start = MAML(ways=5, inner_lr=0.4, **options).cuda()
            weights = {}
            for name, graph in (("eager1", False), ("eager2", False), ("graph", True)):
                algo = copy.deepcopy(start)
                config = TrainConfig(steps=6, progress=False, log_every=2, cuda_graph=graph, schedule="step",
                                     step_size=3, gamma=0.1, lr=1e-2)
                train(algo, FixedSampler(batches, "cuda"), config,
                      optimizer=torch.optim.Adam(algo.parameters(), lr=1e-2, eps=1.0))
                weights[name] = [p.detach() for p in algo.parameters()]

            print("deterministic", deterministic, options,
                  "eager-eager", largest_difference(weights["eager1"], weights["eager2"]),
                  "graph-eager", largest_difference(weights["graph"], weights["eager1"]),
                  "moved", largest_difference(weights["eager1"], start.parameters()), flush=True)


if __name__ == "__main__":
    main()

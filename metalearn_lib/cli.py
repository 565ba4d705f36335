"""Command line: ``python -m metalearn_lib train|evaluate|bench ...``.

The last line printed is always one JSON object (configuration, ``results``, and ``train`` when
training happened), so scripts and notebooks can read the figures. Bad arguments and impossible
requests give a one-line error on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from metalearn_lib.algorithms import ALGORITHMS, build_algorithm
from metalearn_lib.algorithms.base import FewShotAlgorithm
from metalearn_lib.allocator import keep_freed_memory
from metalearn_lib.data import DataNotFoundError, lake_runs, omniglot
from metalearn_lib.data.omniglot import SPLITS
from metalearn_lib.episodes import EpisodeSampler, check_episode_request
from metalearn_lib.evaluation import (DEFAULT_TEST_QUERIES, EvalResult, evaluate, evaluate_lake_runs, mean_ci95,
                                      parse_setting)
from metalearn_lib.training import SCHEDULES, TrainConfig, load_checkpoint, train

PROTOCOLS = ("episodes", "lake-runs")
#: Used when neither the command line nor the algorithm's ``defaults`` say otherwise.
GLOBAL_DEFAULTS: dict[str, Any] = {
    "train_ways": 5, "train_shots": 1, "queries": 15, "meta_batch": 1, "lr": 1e-3, "schedule": "step",
    "step_size": 2000, "gamma": 0.5, "image_size": 28, "rotations": False, "val_every": 0, "val_episodes": 100,
    "options": {},
}


class UsageError(Exception):
    """A bad command line: reported in one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we want one line
        raise UsageError(message)


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values parsed as JSON when they can be (numbers, true/false)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m metalearn_lib", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", default="omniglot", choices=["omniglot", "sinusoid"],
                       help="data set (default omniglot; sinusoid: MAML's regression tasks, MAML family only)")
        p.add_argument("--split", default="lake", choices=SPLITS, help="class split (default lake)")
        p.add_argument("--eval", default=None,
                       help="comma-separated settings, e.g. 5w1s,20w1s (default 5w1s,5w5s,20w1s,20w5s; for a "
                            "fixed-size head such as MAML's, the trained number of ways with 1 and 5 shots)")
        p.add_argument("--test-episodes", type=int, default=600, help="test episodes per setting (default 600)")
        p.add_argument("--test-queries", type=int, default=DEFAULT_TEST_QUERIES, help="queries per class at test")
        p.add_argument("--protocol", default="episodes", choices=PROTOCOLS,
                       help="random test episodes, or Lake's 20 official one-shot runs")
        p.add_argument("--seed", type=int, default=0,
                       help="fixes the initial weights, the training tasks and the test tasks (default 0)")
        p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
        p.add_argument("--data-root", default=None, help="folder holding omniglot-py/ (default: $METALEARN_DATA)")
        p.add_argument("--download", action="store_true", help="download the data when it is missing")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    tr = sub.add_parser("train", help="meta-train an algorithm, then evaluate it")
    tr.add_argument("algorithm", help=f"one of: {', '.join(sorted(ALGORITHMS))}")
    common(tr)
    tr.add_argument("--train-ways", type=int, default=None)
    tr.add_argument("--train-shots", type=int, default=None)
    tr.add_argument("--queries", type=int, default=None, help="query images per class in training episodes")
    tr.add_argument("--meta-batch", type=int, default=None, help="episodes per outer step")
    budget = tr.add_argument_group("how long (at least one)")
    budget.add_argument("--episodes", type=int, default=None, help="outer steps (each a meta-batch of episodes)")
    budget.add_argument("--time-budget", type=float, default=None, help="seconds of training")
    tr.add_argument("--lr", type=float, default=None)
    tr.add_argument("--schedule", default=None, choices=SCHEDULES)
    tr.add_argument("--step-size", type=int, default=None, help="steps between learning-rate decays")
    tr.add_argument("--gamma", type=float, default=None, help="learning-rate decay factor")
    tr.add_argument("--image-size", type=int, default=None)
    tr.add_argument("--rotations", dest="rotations", action="store_true", default=None,
                    help="add 90/180/270-degree rotations as new training classes")
    tr.add_argument("--no-rotations", dest="rotations", action="store_false")
    tr.add_argument("--val-every", type=int, default=None, help="validate every N steps and keep the best (0: never)")
    tr.add_argument("--val-episodes", type=int, default=None)
    tr.add_argument("--set", dest="options", action="append", metavar="KEY=VALUE",
                    help="an algorithm option, e.g. --set distance=cosine (repeatable)")
    tr.add_argument("--out", default=None, help="folder for checkpoints (last.pt, best.pt) and result.json")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    tr.add_argument("--cuda-graph", action="store_true",
                    help="record the training step once as a CUDA graph and replay it (on a GPU; the MAML family, "
                         "protonet, matching)")

    ev = sub.add_parser("evaluate", help="evaluate a checkpoint or a training-free baseline")
    ev.add_argument("model", help="a checkpoint file (.pt), or pixel-nn")
    common(ev)
    ev.add_argument("--image-size", type=int, default=None)

    be = sub.add_parser("bench", help="meta-training throughput against learn2learn and higher (maml only)")
    be.add_argument("algorithm", choices=["maml"])
    be.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    be.add_argument("--quick", action="store_true", help="meta-batches of 4, one timed step (small CPU runs)")
    be.add_argument("--steps", type=int, default=None,
                    help="timed outer steps per run (default 5; 1 with --quick); on a CPU, rounds of one step each")
    be.add_argument("--paths", action="store_true",
                    help="also time our other meta-batch path (the loop on CUDA, vmap on a CPU)")
    be.add_argument("--cudnn-benchmark", action="store_true",
                    help="let cuDNN time its convolution algorithms and keep the fastest, for every implementation")
    from metalearn_lib.assignments.cli import add_parser as add_assignments_parser

    add_assignments_parser(sub)
    return parser


def device_name(device: torch.device) -> str:
    """The card's name (``NVIDIA H200``) or ``cpu``, for the provenance of every figure."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def resolve_device(name: str | None) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA GPU here; use --device cpu")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def run_evaluation(algorithm: FewShotAlgorithm, args: argparse.Namespace, image_size: int,
                   device: torch.device) -> dict[str, EvalResult]:
    """Evaluate on the split's test classes with the chosen protocol."""
    if args.protocol == "lake-runs":
        runs = lake_runs(image_size=image_size, root=args.data_root, download=args.download)
        return {"lake-runs": evaluate_lake_runs(algorithm, runs, device=device)}
    test = omniglot(args.split, "test", image_size=image_size, root=args.data_root, download=args.download)
    out = {}
    for setting in args.eval.split(","):
        ways, shots = parse_setting(setting)
        out[setting.strip()] = evaluate(algorithm, test, ways, shots, queries=args.test_queries,
                                        episodes=args.test_episodes, seed=args.seed + 1000, device=device,
                                        progress=not args.quiet)
    return out


DEFAULT_EVAL = "5w1s,5w5s,20w1s,20w5s"


def set_default_eval(args: argparse.Namespace, head_ways: int | None) -> None:
    """Fill in ``--eval`` when it was not given: the four standard settings, or, for a fixed-size head
    (MAML, Reptile: ``head_ways`` outputs), the ways it can classify with 1 and 5 shots."""
    if args.eval is None:
        args.eval = f"{head_ways}w1s,{head_ways}w5s" if head_ways else DEFAULT_EVAL


def check_eval_settings(args: argparse.Namespace, image_size: int) -> None:
    """Fail before any training when a test setting cannot be drawn from the test classes."""
    if args.test_episodes <= 0:
        raise UsageError(f"--test-episodes must be positive, got {args.test_episodes}")
    if args.protocol != "episodes":
        return
    test = omniglot(args.split, "test", image_size=image_size, root=args.data_root, download=args.download)
    min_count = int(test.counts.min())
    for setting in args.eval.split(","):
        ways, shots = parse_setting(setting)
        queries = max(1, min(args.test_queries, min_count - shots))
        check_episode_request(test.num_classes, min_count, ways, shots, queries,
                              what=f"the {args.split} test split ({setting})")


def setting(args: argparse.Namespace, algo_defaults: dict[str, Any], key: str) -> Any:
    value = getattr(args, key, None)
    if value is not None:
        return value
    return algo_defaults.get(key, GLOBAL_DEFAULTS[key])


#: Tasks in one sinusoid test set, as in the paper's evaluation (600).
SINUSOID_SET = 600


def sinusoid_results(algorithm: FewShotAlgorithm, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """5-shot MSE on ``--test-episodes`` fresh sinusoid tasks after 1, 5 and 10 inner steps (100 query points).

    Beside the mean (the paper's figure): its 95% CI, the median, how many tasks diverged (MSE not
    finite or above ``DIVERGED_MSE``; one is enough to make the mean meaningless) and the mean of the
    others; and the mean of each successive set of ``SINUSOID_SET`` tasks (the paper's 600). Regression
    tasks are adapted in one batch, so tens of thousands of tasks take seconds.
    """
    from metalearn_lib.algorithms.maml import DIVERGED_MSE, regression_mses
    from metalearn_lib.data.sinusoid import SinusoidSampler

    if args.test_episodes <= 0:
        raise UsageError(f"--test-episodes must be positive, got {args.test_episodes}")
    test = SinusoidSampler(shots=5, queries=100, seed=args.seed + 1000, device=device)
    mses = regression_mses(algorithm, test, tasks=args.test_episodes, steps=(1, 5, 10))

    def number(value: float) -> float | None:  # JSON has no NaN or infinity
        return round(value, 4) if math.isfinite(value) else None

    stats = {k: mean_ci95(v.tolist()) for k, v in mses.items()}
    calm = {k: v[v <= DIVERGED_MSE] for k, v in mses.items()}  # the tasks that did not diverge
    return {"sinusoid-5shot": {"mse_after_steps": {k: number(m) for k, (m, _) in stats.items()},
                               "ci95": {k: number(ci) for k, (_, ci) in stats.items()},
                               # a NaN error counts as a large one, not as a missing one
                               "median": {k: number(v.nan_to_num(nan=math.inf).median().item()) for k, v in mses.items()},
                               "diverged_tasks": {k: len(v) - len(calm[k]) for k, v in mses.items()},
                               "mean_without_diverged": {k: number(v.mean().item()) for k, v in calm.items()},
                               # the paper's test-set size: how much one set's mean moves with the tasks drawn
                               "set_size": SINUSOID_SET, "set_means": {
                                   k: [number(m) for m in v[:len(v) // SINUSOID_SET * SINUSOID_SET].view(
                                       -1, SINUSOID_SET).mean(1).tolist()] for k, v in mses.items()},
                               "tasks": args.test_episodes}}


def cmd_train_sinusoid(args: argparse.Namespace, cls: type[FewShotAlgorithm]) -> dict[str, Any]:
    """MAML's sinusoid regression (Finn et al., 2017, Section 5.1), for the MAML family."""
    from metalearn_lib.data.sinusoid import SinusoidSampler

    d = getattr(cls, "sinusoid_defaults", None)
    if d is None:
        raise UsageError(f"--dataset sinusoid is for the MAML family (maml, fomaml, metasgd, anil), not {args.algorithm}")
    cfg = {"train_shots": args.train_shots or d["train_shots"], "queries": args.queries or d["queries"],
           "meta_batch": args.meta_batch or d["meta_batch"], "lr": args.lr or d["lr"],
           "schedule": args.schedule or d["schedule"], "step_size": args.step_size or GLOBAL_DEFAULTS["step_size"],
           "gamma": args.gamma or GLOBAL_DEFAULTS["gamma"]}
    options = {**d["options"], **_options(args.options), "problem": "regression"}
    device = resolve_device(args.device)
    sampler = SinusoidSampler(cfg["train_shots"], cfg["queries"], seed=args.seed, device=device)
    try:
        torch.manual_seed(args.seed)  # --seed fixes the initial weights too, not only the tasks
        algorithm = build_algorithm(args.algorithm, **options).to(device)
    except TypeError as error:
        raise UsageError(f"bad --set option for {args.algorithm}: {error}") from error
    config = TrainConfig(steps=args.episodes, time_budget=args.time_budget, lr=cfg["lr"], schedule=cfg["schedule"],
                         step_size=cfg["step_size"], gamma=cfg["gamma"], meta_batch=cfg["meta_batch"],
                         out_dir=args.out, resume=args.resume, seed=args.seed, progress=not args.quiet,
                         cuda_graph=args.cuda_graph)
    result = train(algorithm, sampler, config, extra={"dataset": "sinusoid"})
    return {"command": "train", "algorithm": args.algorithm, "dataset": "sinusoid", "seed": args.seed,
            "device": str(device), "device_name": device_name(device), **cfg, "options": options,
            "episodes": args.episodes, "time_budget": args.time_budget, "cuda_graph": args.cuda_graph,
            "results": sinusoid_results(algorithm, args, device),
            "train": result.summary()}


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    if args.algorithm not in ALGORITHMS:
        raise UsageError(f"unknown algorithm {args.algorithm!r}: choose one of {', '.join(sorted(ALGORITHMS))}")
    cls = ALGORITHMS[args.algorithm]
    if not cls.trainable:
        raise UsageError(f"{args.algorithm} has nothing to train: use `evaluate {args.algorithm}`")
    if args.episodes is None and args.time_budget is None:
        raise UsageError("say how long to train: --episodes N or --time-budget SECONDS")
    if args.dataset == "sinusoid":
        return cmd_train_sinusoid(args, cls)
    d = cls.defaults
    cfg = {k: setting(args, d, k) for k in ("train_ways", "train_shots", "queries", "meta_batch", "lr", "schedule",
                                             "step_size", "gamma", "image_size", "rotations", "val_every",
                                             "val_episodes")}
    options = {**d.get("options", {}), **_options(args.options)}
    device = resolve_device(args.device)
    set_default_eval(args, cfg["train_ways"] if hasattr(cls, "check_ways") else None)
    check_eval_settings(args, cfg["image_size"])
    classes = omniglot(args.split, "train" if cfg["val_every"] else "trainval", image_size=cfg["image_size"],
                       root=args.data_root, download=args.download, rotations=cfg["rotations"] or args.split == "vinyals")
    sampler = EpisodeSampler(classes, cfg["train_ways"], cfg["train_shots"], cfg["queries"], seed=args.seed,
                             device=device, name=f"the {args.split} training split")
    val_sampler = None
    if cfg["val_every"]:
        val = omniglot(args.split, "val", image_size=cfg["image_size"], root=args.data_root)
        val_shots = cfg["train_shots"]
        val_sampler = EpisodeSampler(val, min(cfg["train_ways"], val.num_classes), val_shots,
                                     max(1, min(cfg["queries"], int(val.counts.min()) - val_shots)),
                                     seed=args.seed + 500, device=device, name="the validation split")
    try:
        torch.manual_seed(args.seed)  # --seed fixes the initial weights too, not only the episodes
        algorithm = build_algorithm(args.algorithm, in_channels=1, image_size=cfg["image_size"],
                                    ways=cfg["train_ways"], **options).to(device)
    except TypeError as error:
        raise UsageError(f"bad --set option for {args.algorithm}: {error}") from error
    if hasattr(algorithm, "check_ways"):  # a fixed-size head (MAML, Reptile): fail before training, not after
        for ways in ([20] if args.protocol == "lake-runs" else [parse_setting(x)[0] for x in args.eval.split(",")]):
            algorithm.check_ways(ways)
    config = TrainConfig(steps=args.episodes, time_budget=args.time_budget, lr=cfg["lr"], schedule=cfg["schedule"],
                         step_size=cfg["step_size"], gamma=cfg["gamma"], meta_batch=cfg["meta_batch"],
                         val_every=cfg["val_every"], val_episodes=cfg["val_episodes"], out_dir=args.out,
                         resume=args.resume, seed=args.seed, progress=not args.quiet, cuda_graph=args.cuda_graph)
    extra = {"image_size": cfg["image_size"], "split": args.split}
    result = train(algorithm, sampler, config, val_sampler=val_sampler, extra=extra)
    results = run_evaluation(algorithm, args, cfg["image_size"], device)
    return {"command": "train", "algorithm": args.algorithm, "dataset": args.dataset, "split": args.split,
            "protocol": args.protocol, "seed": args.seed, "device": str(device), "device_name": device_name(device),
            **cfg, "options": options,
            "episodes": args.episodes, "time_budget": args.time_budget, "cuda_graph": args.cuda_graph,
            "results": {k: v.to_dict() for k, v in results.items()}, "train": result.summary()}


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    if args.model in ALGORITHMS and not ALGORITHMS[args.model].trainable:
        image_size = args.image_size or GLOBAL_DEFAULTS["image_size"]
        algorithm = build_algorithm(args.model).to(device)
        source, trained = args.model, None
    else:
        path = Path(args.model)
        if not path.is_file():
            raise UsageError(f"{args.model} is neither a checkpoint file nor a training-free baseline "
                             f"({', '.join(n for n, c in ALGORITHMS.items() if not c.trainable)})")
        blob = load_checkpoint(path, map_location=device)
        algorithm = build_algorithm(blob["algorithm"], **blob["config"]).to(device)
        algorithm.load_state_dict(blob["best_state"] or blob["state"])
        image_size = args.image_size or blob["extra"].get("image_size", GLOBAL_DEFAULTS["image_size"])
        source = str(path)
        trained = {k: blob["result"][k] for k in ("steps", "tasks", "seconds")}
        if blob["extra"].get("dataset") == "sinusoid":
            return {"command": "evaluate", "model": source, "algorithm": algorithm.name, "dataset": "sinusoid",
                    "seed": args.seed, "device": str(device), "results": sinusoid_results(algorithm, args, device)}
    head = getattr(algorithm, "ways", None) if hasattr(algorithm, "check_ways") else None
    set_default_eval(args, head if getattr(algorithm, "problem", "classification") == "classification" else None)
    check_eval_settings(args, image_size)
    results = run_evaluation(algorithm, args, image_size, device)
    return {"command": "evaluate", "model": source, "algorithm": algorithm.name, "dataset": args.dataset,
            "split": args.split, "protocol": args.protocol, "seed": args.seed, "device": str(device),
            "device_name": device_name(device), "image_size": image_size, "test_episodes": args.test_episodes, "test_queries": args.test_queries,
            "results": {k: v.to_dict() for k, v in results.items()},
            **({"checkpoint_train": trained} if trained else {})}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "assignments":
            from metalearn_lib.assignments.cli import main as assignments_main

            return assignments_main(args)
        started = time.perf_counter()
        keep_freed_memory()  # CPU steps without page faults (metalearn_lib/allocator.py)
        if args.command == "bench":
            from metalearn_lib.bench import bench_maml

            if args.steps is not None and args.steps <= 0:
                raise UsageError(f"--steps must be positive, got {args.steps}")
            device = resolve_device(args.device)
            torch.backends.cudnn.benchmark = args.cudnn_benchmark
            rows = bench_maml(device, quick=args.quick, timed_steps=args.steps,
                              printer=lambda line: print(line, flush=True), paths=args.paths)
            out = {"command": "bench", "algorithm": args.algorithm, "quick": args.quick, "device": str(device),
                   "device_name": device_name(device), "cudnn_benchmark": args.cudnn_benchmark,
                   "torch": torch.__version__, "threads": torch.get_num_threads(), "results": rows}
        else:
            out = cmd_train(args) if args.command == "train" else cmd_evaluate(args)
        out["wall_seconds"] = round(time.perf_counter() - started, 1)
    except (UsageError, ValueError, FileNotFoundError, DataNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    line = json.dumps(out)
    if args.command == "train" and args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "result.json").write_text(line + "\n")
    print(line)
    return 0

"""Every GPU measurement of the book in one time-boxed session: full-scale reproductions and benchmarks.

    python benchmarks/gpu_session.py --out DIR [--train-seconds 300] [--device cuda]

What it runs, in this order (each command is printed and stored with its result):

1. ``python -m metalearn_lib bench maml --paths`` alone on the card (clean timings), while the Omniglot
   caches are decoded on the CPU.
2. Then, at the same time on the one GPU (each is a small Conv-4 that leaves most of the card idle):
   the metric methods with their papers' protocols on the Vinyals split with rotations and 1,000 test
   episodes (ProtoNet 60-way training episodes, Adam 1e-3 halved every 2,000 episodes; Matching
   Networks 20-way; 1-shot and 5-shot models), Siamese networks (Koch's 105 px network and the
   contrastive Conv-4) scored on Lake's 20 runs, and MAML, first-order MAML and Reptile with the
   papers' settings. Every training run is cut by ``--time-budget``, so the figures are what that
   budget reaches on a shared card, not the papers' full schedules (hours).
3. Beside them, on the CPU side: the five assignments graded from their solution notebooks (the
   notebook, then the hidden tests), at the scales ``--grade-scales`` names (full: the default on a GPU).
With ``--tests PATH``, pytest runs those files next, alone on the card (the tests that need a GPU).

4. With ``--chapters K``: every chapter notebook (or those ``--notebook`` names) at full scale
   (``benchmarks/run_notebook.py``), ``K`` at a time, longest first; each job's JSON gives the notebook's seconds and any cell's error. Since ``K``
   notebooks share the card, the seconds are upper bounds for a notebook run alone (the time-budgeted
   trainings take their budgets either way; evaluation and step-counted work slow down).

``--no-training`` leaves out step 2, ``--no-bench`` step 1 (the data are still decoded first).

Each job's last JSON line goes to ``DIR/results.jsonl`` as soon as the job ends (so a session cut
short still returns what finished); logs and the JSON files go to ``DIR/gpu_session.tar.gz``.
``benchmarks/results/gpu/`` holds the files of the session the book reports, made from the session's
``results.jsonl`` with ``python benchmarks/gpu_session.py --unpack results.jsonl benchmarks/results/gpu``
(one ``<job>.json`` per training run and the bench, read by ``metalearn_lib.tools.results_table``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ["a1_episode_sampler", "a2_prototypical", "a3_siamese", "a4_maml", "a5_reptile"]
# Longest first (their full-scale budgets), so that K workers finish together; any notebook not named
# here runs after these.
CHAPTER_ORDER = ["04_optimization/reptile", "02_concepts/meta_vs_transfer", "04_optimization/comparison",
                 "03_metric/comparison", "03_metric/siamese", "03_metric/matching_networks",
                 "04_optimization/maml", "03_metric/prototypical_networks", "07_applications/verification",
                 "04_optimization/fomaml_anil", "04_optimization/sinusoid", "06_practice/siamese_pytorch",
                 "06_practice/maml_three_ways", "07_applications/detection", "07_applications/fine_grained",
                 "08_tools/tools_and_trends", "02_concepts/inner_outer_loop", "01_background/few_shot_problem",
                 "05_mathematics/optimization_math", "05_mathematics/metric_math", "appendix_results"]


def chapter_notebooks() -> list[str]:
    """Every notebook of the book except the assignments (graded separately): .md files with a paired .ipynb."""
    found = sorted(str(p.relative_to(ROOT / "chapters").with_suffix("")) for p in (ROOT / "chapters").rglob("*.md")
                   if p.with_suffix(".ipynb").exists() and "_build" not in p.parts and "assignments" not in p.parts)
    rank = {name: i for i, name in enumerate(CHAPTER_ORDER)}
    return sorted(found, key=lambda name: (rank.get(name, len(rank)), name))


# runs repeated with each step recorded once as a CUDA graph and replayed (metalearn_lib/graphs.py): a
# default session runs the first two; the others are for --only
DEFAULT_GRAPH_JOBS = ["protonet_1shot_graph", "maml_5w_graph"]
EXTRA_GRAPH_JOBS = ["protonet_5shot_graph", "matching_1shot_graph", "matching_5shot_graph", "maml_20w_graph",
                    "fomaml_5w_graph"]


def jobs(t: int, device: str, episodes: int) -> dict[str, list[str]]:
    """name -> arguments of ``python -m metalearn_lib`` for every training run (``t`` seconds each)."""
    v = ["--split", "vinyals", "--test-episodes", str(episodes), "--device", device, "--quiet"]
    four = ["--eval", "5w1s,5w5s,20w1s,20w5s"]
    # Snell et al. (2017): 60-way episodes, 5 queries, Adam 1e-3 halved every 2,000 episodes, the paper's loss.
    proto = ["--train-ways", "60", "--queries", "5", "--lr", "1e-3", "--schedule", "step", "--step-size", "2000",
             "--gamma", "0.5", "--set", "symmetric=false"]
    # Vinyals et al. (2016): 20-way episodes (cosine attention scaled by 20, the class default).
    match = ["--train-ways", "20", "--queries", "5", "--lr", "1e-3", "--schedule", "step", "--step-size", "2000",
             "--gamma", "0.5"]
    lake = ["--split", "lake", "--protocol", "lake-runs", "--device", device, "--quiet"]
    budget = ["--time-budget", str(t)]
    table = {
        "protonet_1shot": ["train", "protonet", *proto, "--train-shots", "1", *v, *four, *budget],
        "protonet_5shot": ["train", "protonet", *proto, "--train-shots", "5", *v, *four, *budget],
        "matching_1shot": ["train", "matching", *match, "--train-shots", "1", *v, *four, *budget],
        "matching_5shot": ["train", "matching", *match, "--train-shots", "5", *v, *four, *budget],
        # Koch et al. (2015): the 105 px network, weighted L1 + sigmoid; and the contrastive Conv-4.
        "siamese_koch": ["train", "siamese", *lake, "--set", "variant=koch", "--image-size", "105", "--lr", "1e-4",
                         "--schedule", "step", "--step-size", "10000", "--gamma", "0.5", "--train-ways", "20",
                         "--train-shots", "1", "--queries", "4", *budget],
        "siamese_contrastive": ["train", "siamese", *lake, "--set", "variant=contrastive", *budget],
        # Finn et al. (2017): 5-way, α = 0.4, 1 inner step (3 at test), meta-batch 32 (the class defaults);
        # 20-way: α = 0.1, 5 steps, meta-batch 16.
        "maml_5w": ["train", "maml", "--train-ways", "5", "--train-shots", "1", "--meta-batch", "32", *v,
                    "--eval", "5w1s,5w5s", *budget],
        "maml_20w": ["train", "maml", "--train-ways", "20", "--train-shots", "1", "--meta-batch", "16",
                     "--set", "inner_lr=0.1", "--set", "inner_steps=5", "--set", "test_inner_steps=5", *v,
                     "--eval", "20w1s,20w5s", *budget],
        "fomaml_5w": ["train", "fomaml", "--train-ways", "5", "--train-shots", "1", "--meta-batch", "32", *v,
                      "--eval", "5w1s,5w5s", *budget],
        # Nichol et al. (2018): the class defaults (10 training shots, 5 Adam steps, 50 at test); its
        # test-time fine-tuning is slow, so it trains for less and is scored on fewer episodes.
        "reptile_5w": ["train", "reptile", "--train-ways", "5", *v[:2], "--test-episodes", str(max(1, episodes // 5)),
                       "--device", device, "--quiet", "--eval", "5w1s,5w5s", "--time-budget", str(max(1, t - 90))],
    }
    for name in DEFAULT_GRAPH_JOBS + EXTRA_GRAPH_JOBS:  # e.g. matching_1shot_graph: matching_1shot with --cuda-graph
        plain = table[name.removesuffix("_graph")]
        table[name] = plain[:-2] + ["--cuda-graph"] + plain[-2:]   # before its --time-budget T
    return table


class Job:
    def __init__(self, name: str, argv: list[str], logs: Path, env: dict[str, str]) -> None:
        self.name, self.argv = name, argv
        self.stdout = open(logs / f"{name}.out", "w")
        self.stderr = open(logs / f"{name}.err", "w")
        self.started = time.time()
        # a session of its own, so that killing it also ends what it started (a notebook's kernel)
        self.proc = subprocess.Popen(argv, stdout=self.stdout, stderr=self.stderr, cwd=ROOT, env=env,
                                     start_new_session=True)
        self.done = False

    def finish(self, results: Path, killed: bool = False) -> dict:
        self.stdout.close()
        self.stderr.close()
        self.done = True
        lines = Path(self.stdout.name).read_text().strip().splitlines()
        last = lines[-1] if lines else ""
        record = {"name": self.name, "command": " ".join(shlex.quote(a) for a in self.argv[1:]),
                  "returncode": self.proc.returncode, "wall_seconds": round(time.time() - self.started, 1),
                  "killed_at_deadline": killed}
        try:
            record["output"] = json.loads(last)
        except json.JSONDecodeError:
            err = Path(self.stderr.name).read_text().strip().splitlines()
            record["error_tail"] = err[-5:]
            record["output_tail"] = lines[-15:]  # pytest's summary, say
        with open(results, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"[{time.strftime('%H:%M:%S')}] done {self.name}: rc={self.proc.returncode} "
              f"{record['wall_seconds']} s{' (killed)' if killed else ''}", flush=True)
        return record


def unpack(jsonl: Path, folder: Path) -> None:
    """Write each job's JSON output (training runs and the bench) to ``folder/<job>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    for line in jsonl.read_text().splitlines():
        record = json.loads(line)
        if record["name"].startswith(("cache_", "grade_", "chapter_")) or "output" not in record:
            continue
        (folder / f"{record['name']}.json").write_text(json.dumps(record["output"]) + "\n")
        print(folder / f"{record['name']}.json")


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--unpack":
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="results.jsonl, env.json and the tarball")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/gpu_session_logs"), help="one log per job")
    parser.add_argument("--train-seconds", type=int, default=300)
    parser.add_argument("--deadline", type=int, default=540, help="seconds from start after which jobs are killed")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--test-episodes", type=int, default=1000)
    parser.add_argument("--bench-steps", type=int, default=5)
    parser.add_argument("--cudnn-benchmark", action="store_true", help="pass --cudnn-benchmark to the bench")
    parser.add_argument("--only", action="append",
                        help="run only these training jobs (names; repeatable), e.g. the graph versions "
                             + ", ".join(EXTRA_GRAPH_JOBS) + " that a default session leaves out")
    parser.add_argument("--no-training", action="store_true", help="run no training job")
    parser.add_argument("--no-bench", action="store_true", help="skip the MAML bench")
    parser.add_argument("--no-grading", action="store_true")
    parser.add_argument("--grade-scales", default="quick,full", help="scales to grade at, in this order")
    parser.add_argument("--chapters", type=int, default=0, metavar="K",
                        help="run every chapter notebook at full scale, K at a time (0: none)")
    parser.add_argument("--chapter-scale", default="full", help="the chapters' METALEARN_SCALE (quick to try it on a CPU)")
    parser.add_argument("--notebook", action="append", metavar="NAME",
                        help="with --chapters: only these notebooks (e.g. 04_optimization/sinusoid; repeatable)")
    parser.add_argument("--tests", action="append", metavar="PATH",
                        help="pytest these files on the GPU after the bench, before anything else (repeatable)")
    args = parser.parse_args()
    chosen = chapter_notebooks()
    table = jobs(args.train_seconds, args.device, args.test_episodes)
    for kind, given, known in (("chapter notebook", args.notebook, chosen), ("training job", args.only, table)):
        unknown = sorted(set(given or []) - set(known))
        if unknown:
            parser.error(f"no {kind} named {', '.join(unknown)}; the names are: {', '.join(known)}")
    chosen = [name for name in chosen if not args.notebook or name in args.notebook]
    start = time.time()
    out: Path = args.out
    logs = args.logs
    logs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p)}
    py = [sys.executable, "-m", "metalearn_lib"]

    info = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)), "python": sys.version.split()[0]}
    try:
        import torch
        info.update(torch=torch.__version__, cuda=torch.cuda.is_available(),
                    device_name=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                    cpu_count=os.cpu_count())
    except Exception as error:  # noqa: BLE001
        info["torch_error"] = repr(error)
    (out / "env.json").write_text(json.dumps(info) + "\n")
    print(json.dumps(info), flush=True)

    # 1. caches (CPU) beside the bench (GPU); the bench runs alone on the card.
    cache = [sys.executable, "-c",
             "import sys; from metalearn_lib.data import omniglot, lake_runs; s = int(sys.argv[1]); "
             "omniglot('lake', 'trainval', image_size=s, rotations=True); lake_runs(image_size=s)", ]
    first = [Job(f"cache_{s}px", cache + [str(s)], logs, env) for s in (28, 105)]
    if not args.no_bench:
        first.append(Job("bench_maml", py + ["bench", "maml", "--device", args.device, "--paths",
                                             "--steps", str(args.bench_steps)]
                         + (["--cudnn-benchmark"] if args.cudnn_benchmark else [])
                         + (["--quick"] if args.device == "cpu" else []), logs, env))
    for job in first:
        job.proc.wait()
        job.finish(results)
    if args.tests:  # the GPU-only tests (tests/test_graphs.py), alone on the card
        # only tests/conftest.py (the root one needs nbval, for the notebooks), none of the project's addopts
        tests = Job("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--confcutdir=tests",
                              "-o", "addopts=", "-rfE", *args.tests], logs, env)
        tests.proc.wait()
        tests.finish(results)

    # 2. training runs, all at once; 3. one grading lane; 4. K chapter lanes. Lanes start jobs from queues.
    names = [] if args.no_training else (args.only or [n for n in table if n not in EXTRA_GRAPH_JOBS])
    running = [Job(name, py + table[name], logs, env) for name in names]
    scales = [s for s in args.grade_scales.split(",") if s]
    # queues of (job name, what to run); longest first within a scale, so that a deadline cuts the short ones
    grading = [] if args.no_grading else [(f"grade_{a}_{scale}", (scale, a)) for scale in scales
                                          for a in reversed(ASSIGNMENTS)]
    chapters = [("chapter_" + name.replace("/", "_"), name) for name in chosen] if args.chapters > 0 else []
    chapter_env = {**env, "METALEARN_SCALE": args.chapter_scale}
    (logs / "notebooks").mkdir(exist_ok=True)
    grader: Job | None = None
    readers: list[Job] = []
    deadline = start + args.deadline
    while True:
        now = time.time()
        for job in running + readers:
            if not job.done and job.proc.poll() is not None:
                job.finish(results)
        if grader is not None and grader.proc.poll() is not None:
            grader.finish(results)
            grader = None
        left = deadline - now - 10
        may_start = left > 30  # no new job in the last 40 s
        if may_start and grader is None and grading:
            job_name, (scale, a) = grading.pop(0)
            grader = Job(job_name, py + ["assignments", "grade", f"chapters/assignments/{a}.ipynb",
                                         "--timeout", str(int(min(300, left)))], logs, {**env, "METALEARN_SCALE": scale})
        while may_start and chapters and sum(not j.done for j in readers) < args.chapters:
            job_name, name = chapters.pop(0)
            saved = logs / "notebooks" / f"{job_name.removeprefix('chapter_')}.ipynb"
            readers.append(Job(job_name, [sys.executable, "benchmarks/run_notebook.py", f"chapters/{name}.md",
                                          "--save", str(saved)], logs, chapter_env))
        if all(j.done for j in running + readers) and grader is None and not (may_start and (grading or chapters)):
            break
        if now > deadline:
            for job in running + readers + ([grader] if grader else []):
                if not job.done:
                    try:
                        os.killpg(job.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    job.proc.wait()
                    job.finish(results, killed=True)
            break
        time.sleep(1)
    with open(results, "a") as f:
        for job_name, _ in grading + chapters:  # never started: say so rather than leave them out silently
            f.write(json.dumps({"name": job_name, "not_started": True}) + "\n")

    # two archives, so that the logs come back even if the executed notebooks (figures) are too large
    with tarfile.open(out / "notebooks.tar.gz", "w:gz") as tar:
        tar.add(logs / "notebooks", arcname="notebooks")
    with tarfile.open(out / "gpu_session.tar.gz", "w:gz") as tar:
        tar.add(logs, arcname="logs", filter=lambda info: None if "/notebooks" in info.name else info)
        tar.add(results, arcname="results.jsonl")
        tar.add(out / "env.json", arcname="env.json")
    # the short table the reply shows
    for line in results.read_text().splitlines():
        r = json.loads(line)
        o = r.get("output", {})
        if r.get("not_started"):
            print(r["name"], "not started", flush=True)
            continue
        if r["name"].startswith("chapter_"):
            errors = [f"{e['cell']}:{e['ename']}:{e['evalue'][:80]}" for e in o.get("errors", [])]
            print(r["name"], r["returncode"], r["wall_seconds"], o.get("seconds"), o.get("failure"), errors,
                  "killed" if r["killed_at_deadline"] else "", flush=True)
            continue
        res = o.get("results")
        if isinstance(res, dict):
            res = {k: v.get("accuracy", v) if isinstance(v, dict) else v for k, v in res.items()}
        if r["name"].startswith("grade_") and o:
            res = {"score": o.get("score"), "max": o.get("max_score"), "notebook_seconds": o.get("notebook_seconds")}
        if r["name"] == "tests":
            print("tests", r["returncode"], r["wall_seconds"], *r.get("output_tail", [])[-8:], sep="\n", flush=True)
            continue
        print(r["name"], r["returncode"], r["wall_seconds"], json.dumps(res)[:300] if res else r.get("error_tail"),
              json.dumps(o.get("train", ""))[:120] if o else "", flush=True)
    print(f"total {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

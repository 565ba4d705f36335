"""Results tables built from the runs' JSON output, never typed by hand.

Every benchmark script keeps the last line of each command-line run (one JSON object) under
``benchmarks/results/<cpu|gpu>/``. This tool renders them as Markdown tables beside the papers'
reported figures, and writes the tables into README.md between the markers
``<!-- results:start -->`` and ``<!-- results:end -->``.

    python -m metalearn_lib.tools.results_table            # rewrite README.md
    python -m metalearn_lib.tools.results_table --check    # exit 1 if README.md is stale
    python -m metalearn_lib.tools.results_table --print    # print the tables
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metalearn_lib.algorithms.maml import DIVERGED_MSE

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ("5w1s", "5w5s", "20w1s", "20w5s")
START, END = "<!-- results:start -->", "<!-- results:end -->"

#: Figures the papers report (Omniglot, their own protocols), quoted for comparison.
PAPERS: dict[str, dict[str, float]] = {
    "pixel-nn": {"5w1s": 41.7, "5w5s": 63.2, "20w1s": 26.7, "20w5s": 42.6},  # Vinyals et al. 2016, Table 1
    "matching": {"5w1s": 98.1, "5w5s": 98.9, "20w1s": 93.8, "20w5s": 98.5},  # Vinyals et al. 2016
    "protonet": {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0, "20w5s": 98.9},  # Snell et al. 2017
    "maml": {"5w1s": 98.7, "5w5s": 99.9, "20w1s": 95.8, "20w5s": 98.9},      # Finn et al. 2017
    "fomaml": {"5w1s": 98.3, "5w5s": 99.2, "20w1s": 89.4, "20w5s": 97.9},    # Finn et al. 2017
    "reptile": {"5w1s": 97.7, "5w5s": 99.5, "20w1s": 89.4, "20w5s": 97.1},   # Nichol et al. 2018
}
PAPERS_LAKE_RUNS = {"people": 95.5, "siamese (Koch et al. 2015)": 92.0}
#: MAML's sinusoid regression, 5-shot mean squared error after 1 / 5 / 10 inner steps (the book's targets).
PAPER_SINUSOID = {"1": 0.67, "5": 0.38, "10": 0.35}
PAPER_NAMES = {"pixel-nn": "Vinyals et al. 2016 (pixels)", "matching": "Vinyals et al. 2016",
               "protonet": "Snell et al. 2017", "maml": "Finn et al. 2017", "fomaml": "Finn et al. 2017 (first order)",
               "reptile": "Nichol et al. 2018"}


def load_runs(results_dir: Path, command: tuple[str, ...] = ("train", "evaluate")) -> list[tuple[str, str, dict]]:
    """(device folder, file stem, JSON) for every saved run of ``command``, sorted."""
    runs = []
    for path in sorted(results_dir.glob("*/*.json")):
        lines = path.read_text().strip().splitlines()
        if not lines:  # a run still in progress (or one that failed) has written nothing yet
            continue
        run = json.loads(lines[-1])
        if run.get("command") in command:
            runs.append((path.parent.name, path.stem, run))
    return runs


def _device(run: dict) -> str:
    return run.get("device_name") or run["device"]


def provenance(results_dir: Path) -> list[str]:
    """One line per results folder that records its machine (``env.txt``: the card's name and software)."""
    lines = []
    for env in sorted(results_dir.glob("*/env.txt")):
        facts = [line.strip() for line in env.read_text().splitlines() if line.strip()]
        card = next((f for f in facts if not f.startswith(("name,", "{"))), "")
        software = next((json.loads(f) for f in facts if f.startswith("{")), {})
        extra = ", ".join(f"{k} {software[k]}" for k in ("torch", "python") if k in software)
        lines.append(f"`{env.parent.name}/` runs: {card}" + (f" ({extra})" if extra else "") + ".")
    return lines


def render_bench(results_dir: Path) -> list[str]:
    """MAML meta-training throughput (``bench maml``): ours against learn2learn and higher."""
    lines: list[str] = []
    for _, stem, run in load_runs(results_dir, ("bench",)):
        rows = [r for r in run["results"] if "tasks_per_s" in r]
        l2l = {r["setting"]: r["tasks_per_s"] for r in rows if r["impl"] == "learn2learn"}
        rounds = next((r["rounds"] for r in rows if "rounds" in r), None)
        turns = (f" The implementations took turns, one step each, for {rounds} rounds: the median step, with the "
                 "slowest and fastest in brackets." if rounds else "")
        threads = f", {run['threads']} torch thread{'s' if run['threads'] > 1 else ''}" \
            if run.get("device") == "cpu" and "threads" in run else ""
        lines += ["", f"MAML meta-training throughput (`python -m metalearn_lib bench maml`), {run.get('device_name', '')} "
                  f"(torch {run.get('torch', '?')}{threads}): tasks per second and peak GPU memory; same Conv-4, same tasks, "
                  "one process" + ("; cuDNN's autotuner on (`--cudnn-benchmark`) for every implementation"
                                   if run.get("cudnn_benchmark") else "")
                  + f" ({stem}.json). *× l2l*: speed relative to learn2learn." + turns, "",
                  "| setting | implementation | tasks/s | peak MiB | × l2l |", "|---|---|---|---|---|"]
        for r in rows:
            peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else "–"
            ratio = f"{r['tasks_per_s'] / l2l[r['setting']]:.2f}" if r["setting"] in l2l else "–"
            spread = f" ({r['range'][0]:.1f}–{r['range'][1]:.1f})" if "range" in r else ""
            lines.append(f"| {r['setting']} | {r['impl']} | {r['tasks_per_s']:.1f}{spread} | {peak} | {ratio} |")
    return lines


def _cell(result: dict | None) -> str:
    return f"{result['accuracy']:.1f} ± {result['ci95']:.1f}" if result else "–"


def _training(run: dict) -> str:
    train = run.get("train") or run.get("checkpoint_train")
    if train:
        return f"{train['seconds']:.0f} s"
    # an `evaluate` of a checkpoint saved by a train run of the same benchmark script
    return "checkpoint" if str(run.get("model", "")).endswith(".pt") else "none"


def render(results_dir: Path) -> str:
    runs = load_runs(results_dir)
    episodic = [(d, s, r) for d, s, r in runs if r.get("protocol") == "episodes"]
    lake = [(d, s, r) for d, s, r in runs if r.get("protocol") == "lake-runs"]
    lines = ["Omniglot, mean accuracy (%) ± 95% confidence interval over random test episodes "
             "(the number of episodes is in each run's JSON). *training*: seconds of training, or "
             "*checkpoint* for a model trained by another run of the same script and evaluated again.", "",
             "| run | algorithm | split | device | training | " + " | ".join(SETTINGS) + " |",
             "|---|---|---|---|---|" + "---|" * len(SETTINGS)]
    for device, stem, run in episodic:
        cells = " | ".join(_cell(run["results"].get(s)) for s in SETTINGS)
        lines.append(f"| `{device}/{stem}` | {run['algorithm']} | {run['split']} | {_device(run)} | "
                     f"{_training(run)} | {cells} |")
    shown = sorted({run["algorithm"] for _, _, run in runs} & set(PAPERS))
    for algo in shown:
        cells = " | ".join(f"{PAPERS[algo][s]:.1f}" for s in SETTINGS)
        lines.append(f"| paper | {PAPER_NAMES[algo]} | their own | | | {cells} |")
    if lake:
        lines += ["", "Lake's 20 official within-alphabet 20-way one-shot runs, accuracy (%) ± 95% CI over the runs.", "",
                  "| run | algorithm | device | training | accuracy |", "|---|---|---|---|---|"]
        for device, stem, run in lake:
            lines.append(f"| `{device}/{stem}` | {run['algorithm']} | {_device(run)} | {_training(run)} | "
                         f"{_cell(run['results']['lake-runs'])} |")
        for who, acc in PAPERS_LAKE_RUNS.items():
            lines.append(f"| paper | {who} | | | {acc:.1f} |")
    sinusoid = [(d, s, r) for d, s, r in runs if r.get("dataset") == "sinusoid"]
    if sinusoid:
        lines += ["", "MAML's sinusoid regression: 5-shot mean squared error on new tasks after 1, 5 and 10 inner steps. "
                  "*Sets meeting the targets*: the tasks cut into test sets of the paper's size, and how many of "
                  "those sets have all three means at or below the targets. *Input*: what the network's first "
                  "layer sees, the paper's x in [-5, 5] or x scaled to [-1, 1] (`input_scale`, the command's default).",
                  "", "| run | algorithm | device | training | input | 1 step | 5 steps | 10 steps | "
                  "sets meeting the targets |", "|---|---|---|---|---|---|---|---|---|"]
        for device, stem, run in sinusoid:
            result = run["results"]["sinusoid-5shot"]
            lines.append(f"| `{device}/{stem}` | {run['algorithm']} | {_device(run)} | {_training(run)} | "
                         f"{_input_cell(run)} | " + " | ".join(_mse_cell(result, k) for k in ("1", "5", "10"))
                         + f" | {_sets_cell(result)} |")
        lines.append("| target | Finn et al. 2017 | | | x | " + " | ".join(f"{v:.2f}" for v in PAPER_SINUSOID.values())
                     + " | |")
    lines += render_bench(results_dir)
    notes = provenance(results_dir)
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def _input_cell(run: dict) -> str:
    """The sinusoid network's input: the paper's raw x, or x times ``input_scale``."""
    scale = run.get("options", {}).get("input_scale", 1)
    return "x" if scale == 1 else f"x / {1 / scale:g}" if scale < 1 else f"{scale:g} x"


def _mse_cell(result: dict, steps: str) -> str:
    """A sinusoid MSE cell: the mean, and how many tasks diverged when any did (the mean is then meaningless)."""
    mean = result["mse_after_steps"][steps]
    diverged = result.get("diverged_tasks", {}).get(steps, 0)
    # a mean beyond the divergence threshold says only that some task blew up
    text = "diverged" if mean is None or mean > DIVERGED_MSE else f"{mean:.2f}"
    if diverged:
        others = result.get("mean_without_diverged", {}).get(steps)
        text += (f" ({diverged} of {result['tasks']} tasks diverged; median {result['median'][steps]:.2f}"
                 + (f", mean of the others {others:.2f})" if others is not None else ")"))
    return text


def _sets_cell(result: dict) -> str:
    """How many of a run's test sets (of ``set_size`` tasks) meet all three targets; a set that diverged does not."""
    if "set_means" not in result:
        return "–"
    means = result["set_means"]
    sets = len(means["1"])
    met = sum(all(means[k][i] is not None and means[k][i] <= target for k, target in PAPER_SINUSOID.items())
              for i in range(sets))
    return f"{met} of {sets} (of {result['set_size']} tasks)"


def update(readme: Path, table: str) -> str:
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--print", action="store_true")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    table = render(args.root / "benchmarks" / "results")
    if args.print:
        print(table)
        return 0
    readme = args.root / "README.md"
    new = update(readme, table)
    if args.check:
        if new != readme.read_text():
            print("README.md results are stale: run `python -m metalearn_lib.tools.results_table`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

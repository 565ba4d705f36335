"""The pip, conda and Makefile installs agree, and the README's results are the runs' JSON."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from metalearn_lib.tools import results_table

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
        if match:
            out[match.group(1).lower()] = match.group(2)
    return out


def test_requirements_pin_the_tools_the_issue_names():
    pinned = pins()
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"
    assert pinned["jupyter-book"].startswith("1.")  # 2.x cannot build HTML offline
    for name in ("jupytext", "nbval", "jupyterlab", "matplotlib", "tqdm", "higher"):
        assert name in pinned, f"{name} is not pinned in requirements.txt"
    assert "learn2learn==0.2.0" in (ROOT / "Makefile").read_text()


def test_library_keeps_a_torch_range_satisfied_by_the_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(d for d in project["dependencies"] if d.startswith("torch>="))
    assert torch_req == "torch>=2.2"
    low = tuple(int(x) for x in torch_req.split(">=")[1].split("."))
    assert tuple(int(x) for x in pins()["torch"].split(".")[:2]) >= low


def test_conda_environment_installs_the_same_requirements():
    env = (ROOT / "environment.yml").read_text()
    assert "-r requirements.txt" in env and "-e ." in env
    assert "learn2learn==0.2.0" in env  # the extra step, documented where conda users look


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^make test\b", (ROOT / ".ci" / "run").read_text(), re.M)


def test_readme_results_are_rendered_from_the_saved_runs():
    table = results_table.render(ROOT / "benchmarks" / "results")
    assert table in (ROOT / "README.md").read_text(), "run `python -m metalearn_lib.tools.results_table`"
    assert "pixel-nn" in table


def test_results_table_reads_bench_and_provenance_and_skips_other_commands(tmp_path):
    gpu = tmp_path / "gpu"
    gpu.mkdir()
    run = {"command": "train", "algorithm": "protonet", "split": "vinyals", "protocol": "episodes", "device": "cuda",
           "device_name": "Some GPU", "results": {"5w1s": {"accuracy": 98.25, "ci95": 0.21}}, "train": {"seconds": 250.0}}
    bench = {"command": "bench", "algorithm": "maml", "device_name": "Some GPU", "torch": "2.x", "results": [
        {"impl": "metalearn_lib", "setting": "5w1s-mb32-1step-second", "tasks_per_s": 900.0, "peak_mib": 700.2},
        {"impl": "learn2learn", "setting": "5w1s-mb32-1step-second", "tasks_per_s": 60.0, "peak_mib": 84.0},
        {"impl": "higher", "setting": "5w1s-mb32-1step-second", "error": "not installed: higher"}]}
    (gpu / "protonet.json").write_text(json.dumps(run) + "\n")
    (gpu / "bench_maml.json").write_text(json.dumps(bench) + "\n")
    (gpu / "env.txt").write_text('name, memory.total [MiB]\nSome GPU, 80000 MiB\n{"torch": "2.x", "python": "3.12"}\n')
    table = results_table.render(tmp_path)
    assert "| `gpu/protonet` | protonet | vinyals | Some GPU | 250 s | 98.2 ± 0.2 |" in table
    assert "| 5w1s-mb32-1step-second | metalearn_lib | 900.0 | 700 | 15.00 |" in table
    assert "| 5w1s-mb32-1step-second | learn2learn | 60.0 | 84 | 1.00 |" in table
    assert "higher" not in table.split("× l2l")[1]  # a failed implementation is not a row
    assert "`gpu/` runs: Some GPU, 80000 MiB (torch 2.x, python 3.12)." in table
    assert table.count("| `gpu/") == 1  # the bench is not an accuracy row
    assert "took turns" not in table  # steps in one block per implementation: no rounds to describe

    # a CPU bench whose implementations took turns: the median with the slowest and fastest step
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    rows = [{"impl": impl, "setting": "20w1s-mb4-5step-first", "tasks_per_s": rate, "peak_mib": None, "rounds": 20,
             "range": [low, high]} for impl, rate, low, high in (("metalearn_lib", 3.37, 2.83, 4.06),
                                                                 ("learn2learn", 3.24, 2.89, 3.96))]
    (cpu / "bench_maml.json").write_text(json.dumps({"command": "bench", "algorithm": "maml", "device_name": "cpu",
                                                     "torch": "2.x", "results": rows}) + "\n")
    table = results_table.render(tmp_path)
    assert "took turns, one step each, for 20 rounds" in table
    assert "| 20w1s-mb4-5step-first | metalearn_lib | 3.4 (2.8–4.1) | – | 1.04 |" in table


def test_results_table_shows_sinusoid_runs_beside_the_targets(tmp_path):
    (tmp_path / "cpu").mkdir()
    run = {"command": "train", "algorithm": "maml", "dataset": "sinusoid", "device": "cpu", "train": {"seconds": 120.0},
           "results": {"sinusoid-5shot": {"mse_after_steps": {"1": 0.812, "5": 0.456, "10": 0.3941}, "tasks": 600}}}
    (tmp_path / "cpu" / "maml_sinusoid.json").write_text(json.dumps(run) + "\n")
    table = results_table.render(tmp_path)
    assert "| `cpu/maml_sinusoid` | maml | cpu | 120 s | x | 0.81 | 0.46 | 0.39 |" in table
    assert "| target | Finn et al. 2017 | | | x | 0.67 | 0.38 | 0.35 |" in table
    # a run with its input scaled to [-1, 1] says so
    run["options"] = {"input_scale": 0.2}
    (tmp_path / "cpu" / "maml_sinusoid.json").write_text(json.dumps(run) + "\n")
    assert "| `cpu/maml_sinusoid` | maml | cpu | 120 s | x / 5 | 0.81 |" in results_table.render(tmp_path)


def test_results_table_flags_a_sinusoid_run_with_diverged_tasks(tmp_path):
    (tmp_path / "cpu").mkdir()
    result = {"mse_after_steps": {"1": 0.64, "5": 3543.36, "10": None}, "median": {"1": 0.4, "5": 0.18, "10": 0.15},
              "diverged_tasks": {"1": 0, "5": 1, "10": 1}, "tasks": 600}
    run = {"command": "train", "algorithm": "maml", "dataset": "sinusoid", "device": "cpu", "train": {"seconds": 120.0},
           "results": {"sinusoid-5shot": result}}
    (tmp_path / "cpu" / "maml_sinusoid.json").write_text(json.dumps(run) + "\n")
    table = results_table.render(tmp_path)
    assert ("| 0.64 | diverged (1 of 600 tasks diverged; median 0.18) | diverged (1 of 600 tasks diverged; median 0.15) |"
            in table)
    # newer runs also record the mean of the tasks that did not diverge
    result["mean_without_diverged"] = {"1": 0.64, "5": 0.43, "10": 0.36}
    result["mse_after_steps"]["5"] = 0.81  # one task just past the threshold moves a mean of 600 only a little
    (tmp_path / "cpu" / "maml_sinusoid.json").write_text(json.dumps(run) + "\n")
    assert ("| 0.81 (1 of 600 tasks diverged; median 0.18, mean of the others 0.43) | diverged (1 of 600 tasks "
            "diverged; median 0.15, mean of the others 0.36) | – |" in results_table.render(tmp_path))
    # and the means of its test sets of 600: here three sets, of which only the second meets every target
    result.update(set_size=600, set_means={"1": [0.6, 0.6, 0.7], "5": [0.3, 0.38, 0.3], "10": [None, 0.3, 0.3]})
    (tmp_path / "cpu" / "maml_sinusoid.json").write_text(json.dumps(run) + "\n")
    assert "mean of the others 0.36) | 1 of 3 (of 600 tasks) |" in results_table.render(tmp_path)


def test_benchmark_scripts_parse_and_name_real_commands():
    """Every benchmark script is valid bash, and each ``train`` command it runs names a registered algorithm."""
    import subprocess

    from metalearn_lib.algorithms import ALGORITHMS

    scripts = sorted((ROOT / "benchmarks").glob("*.sh"))
    assert scripts
    for script in scripts:
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, f"{script.name}: {check.stderr}"
        for algo in re.findall(r"\btrain (\w+) --", script.read_text()):
            assert algo in ALGORITHMS, f"{script.name} trains unknown algorithm {algo!r}"

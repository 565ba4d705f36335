"""The pip, conda and Makefile installs agree, and the README's results are the runs' JSON."""

from __future__ import annotations

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

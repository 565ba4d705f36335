"""benchmarks/gpu_session.py: its table of training jobs and its refusals of unknown names (no GPU needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_session  # noqa: E402


def test_graph_jobs_are_their_plain_jobs_with_cuda_graph():
    table = gpu_session.jobs(200, "cuda", 1000)
    for name in gpu_session.EXTRA_GRAPH_JOBS + ["protonet_1shot_graph", "maml_5w_graph"]:
        plain, graphed = table[name.removesuffix("_graph")], table[name]
        assert graphed[-3:] == ["--cuda-graph", "--time-budget", "200"], graphed
        assert [a for a in graphed if a != "--cuda-graph"] == plain, name


@pytest.mark.parametrize("args, says", [(["--only", "nope"], "no training job named nope"),
                                        (["--chapters", "1", "--notebook", "nope"], "no chapter notebook named nope")])
def test_unknown_names_are_refused_before_anything_runs(tmp_path, args, says):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_session.py"), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert "04_optimization/sinusoid" in done.stderr or "protonet_1shot" in done.stderr   # the real names
    assert not out.exists()   # nothing started, nothing written

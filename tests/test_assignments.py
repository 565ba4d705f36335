"""Classroom assignments: release, and the autograder on solutions, stubs, partial work and cheats.

Every grading starts a Jupyter kernel and a test process, so the gradings run once, two at a time,
in a session fixture, and the tests below read their results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from metalearn_lib.assignments import ASSIGNMENTS
from metalearn_lib.assignments.grader import extract_definitions, grade
from metalearn_lib.assignments.release import read_notebook, release, strip_solutions, student_version

ROOT = Path(__file__).resolve().parents[1]

LABELS_OK = '''
def episode_labels(ways, per_class):
    return torch.arange(ways).repeat_interleave(per_class)
'''
CHECK_OK = '''
def check_request(classes, ways, shots, queries):
    if min(ways, shots, queries) <= 0 or not 2 <= ways <= classes.num_classes \\
            or shots + queries > int(classes.counts.min()):
        raise ValueError("impossible request")
'''
LABELS_WRONG = '''
def episode_labels(ways, per_class):
    return torch.arange(ways).repeat(per_class)  # interleaved the wrong way
'''
SAMPLER_OVERLAPPING = '''
def sample_episode(classes, ways, shots, queries, generator):
    picked = torch.randperm(classes.num_classes, generator=generator)[:ways]
    support, query = [], []
    for c in picked.tolist():
        order = torch.randperm(int(classes.counts[c]), generator=generator)
        support.append(classes[c][order[:shots]])
        query.append(classes[c][order[:queries]])  # wrong: starts again at the support images
    x_s, x_q = torch.cat(support), torch.cat(query)
    if x_s.dtype == torch.uint8:
        x_s, x_q = x_s.float() / 255, x_q.float() / 255
    return x_s, episode_labels(ways, shots), x_q, episode_labels(ways, queries)
'''
DISTANCE_WRONG = '''
def pair_distance(z1, z2):
    return (z1 - z2).abs().sum(1)  # L1, not Euclidean
'''


def notebook(path: Path, *cells: str) -> Path:
    """A small submission: one import cell, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import torch\nfrom torch import Tensor")]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="session")
def released(tmp_path_factory, data_root) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("released")
    release(out)
    return {a: out / f"{a}.ipynb" for a in ASSIGNMENTS}


@pytest.fixture(scope="session")
def submissions(tmp_path_factory, released) -> dict[str, tuple[Path, dict]]:
    """name -> (notebook, grade options) for every grading the tests need."""
    d = tmp_path_factory.mktemp("submissions")
    jobs = {f"solution/{a}": (spec.solution, {}) for a, spec in ASSIGNMENTS.items()}
    jobs |= {f"student/{a}": (path, {}) for a, path in released.items()}
    # Partly right (the sampler reuses support images as queries), graded through the command line; it
    # also defines helpers named like the grader's, and "expected values" of its own, which change nothing.
    jobs["partial-cli"] = (notebook(
        d / "a1_episode_sampler_partial.ipynb", LABELS_OK, CHECK_OK, SAMPLER_OVERLAPPING,
        "def close(*a, **k):\n    return None\n\ndef equal(*a, **k):\n    return None\n\n"
        "def fail(message):\n    return None\n\nclass TestFailure(Exception):\n    pass\n\n"
        "def part(points, name):\n    return lambda fn: fn\n\nTARGET = 0.0\nEXPECTED = [0, 1, 0, 1]"), {"cli": True})
    jobs["timeout"] = (notebook(d / "a1_episode_sampler_slow.ipynb", LABELS_OK, "import time\ntime.sleep(600)", CHECK_OK),
                       {"timeout": 20})
    # Edits the grader's helpers, the hidden tests' module and torch while its definitions load (and, in
    # top-level code that never reaches the grader, in the notebook's kernel).
    jobs["tamper-at-load"] = (notebook(
        d / "a3_siamese_patch.ipynb", DISTANCE_WRONG,
        "import metalearn_lib.assignments.checks as checks\n"
        "def _cheat(_=setattr(checks, 'close', lambda *a, **k: None)):\n    pass",
        "import metalearn_lib.assignments.tests.a3_siamese as hidden\n"
        "def _cheat2(_=setattr(hidden, 'ref_loss', lambda *a, **k: None)):\n    pass",
        "torch.allclose = lambda *a, **k: True  # top-level code: never reaches the grader\n"
        "def _cheat3(_=setattr(torch, 'allclose', lambda *a, **k: True)):\n    pass"), {})
    # Monkeypatches torch from inside a graded function.
    jobs["tamper-late"] = (notebook(
        d / "a3_siamese_late.ipynb",
        "def pair_distance(z1, z2):\n    torch.Tensor.__eq__ = lambda a, b: True\n"
        "    torch.allclose = lambda *a, **k: True\n    return (z1 - z2).abs().sum(1)"), {})

    def run(item):
        name, (path, options) = item
        if options.pop("cli", False):  # the command line, as an instructor runs it
            out = subprocess.run([sys.executable, "-m", "metalearn_lib", "assignments", "grade", str(path),
                                  "--timeout", "300"], capture_output=True, text=True, cwd=ROOT, timeout=900)
            assert out.returncode == 0, out.stderr
            return name, {"stdout": out.stdout, **json.loads(out.stdout.strip().split("\n")[-1])}
        return name, grade(path, **options)

    # Two at a time (the machine has two cores); the longest jobs go first.
    order = sorted(jobs.items(), key=lambda item: item[0] not in ("timeout", "solution/a2_prototypical",
                                                                   "solution/a4_maml", "solution/a3_siamese"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(run, order))
    return results


# --- release ---------------------------------------------------------------------------------------

def test_strip_solutions_keeps_signature_docstring_and_hints():
    source = ('def f(x):\n    """Doc."""\n    ### BEGIN SOLUTION\n    # HINT: add one\n    y = x + 1\n'
              '    return y\n    ### END SOLUTION\n\nprint(f)')
    out = strip_solutions(source)
    assert out == ('def f(x):\n    """Doc."""\n    # HINT: add one\n'
                   '    raise NotImplementedError("f: write your solution here")\n\nprint(f)')
    with pytest.raises(ValueError, match="without"):
        strip_solutions("### BEGIN SOLUTION\nx = 1")


def test_student_version_drops_hidden_tests_and_colab_link():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("[Open in Colab](x)", metadata={"tags": ["colab-link"]}),
                nbformat.v4.new_code_cell("assert secret == 1", metadata={"tags": ["hidden-tests"]}),
                nbformat.v4.new_code_cell("x = 1")]
    assert [c.source for c in student_version(nb).cells] == ["x = 1"]


def test_released_notebooks_have_no_solutions(released):
    for assignment_id, path in released.items():
        solution = read_notebook(ASSIGNMENTS[assignment_id].solution)
        student = read_notebook(path)
        text = "\n".join(c.source for c in student.cells)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        assert "raise NotImplementedError(" in text
        assert path.with_suffix(".md").is_file()
        # Markdown cells are untouched; code cells without solutions too.
        kept = [c.source for c in solution.cells if "colab-link" not in c.metadata.get("tags", [])
                and "BEGIN SOLUTION" not in c.source]
        assert all(source in [c.source for c in student.cells] for source in kept)


def test_extract_definitions_keeps_only_imports_defs_and_constants():
    chunks, notes = extract_definitions([(0, "import torch\nx = train()\nLIMIT = 3\ndef f():\n    return 1\n%time f()"),
                                         (1, "def broken(:\n")])
    assert chunks == [{"cell": 0, "source": "import torch\n\nLIMIT = 3\n\ndef f():\n    return 1"}]
    assert "syntax error" in notes[0]


# --- grading ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("assignment_id", list(ASSIGNMENTS))
def test_solution_scores_full_marks(submissions, assignment_id):
    result = submissions[f"solution/{assignment_id}"]
    assert result["score"] == result["max_score"] > 0, result["tests"]
    assert not result["failed_cells"] and not result["tampered"]


@pytest.mark.parametrize("assignment_id", list(ASSIGNMENTS))
def test_student_version_scores_zero_with_readable_messages(submissions, assignment_id):
    result = submissions[f"student/{assignment_id}"]
    assert result["score"] == 0 and not result["tampered"]
    assert all("not written yet" in t["message"] for t in result["tests"]), result["tests"]


def test_partial_credit_through_the_command_line(submissions):
    result = submissions["partial-cli"]
    failed = [t for t in result["tests"] if not t["passed"]]
    assert [t["name"] for t in failed] == ["support and query images are distinct images"]
    assert "appears twice" in failed[0]["message"] and not result["tampered"]
    assert result["score"] == 6 and result["max_score"] == 7  # the fake helpers and TARGET changed nothing
    assert "[PASS] episode_labels gives grouped labels (1/1)" in result["stdout"]
    assert "Total: 6 / 7" in result["stdout"]
    assert {"name", "passed", "points", "message"} <= set(result["tests"][0])


def test_timeout_keeps_points_earned_before(submissions):
    result = submissions["timeout"]
    assert "time limit" in result["stopped"]
    assert result["score"] == 1  # episode_labels, defined before the slow cell; check_request came after it


def test_tampering_at_load_gets_no_credit(submissions):
    result = submissions["tamper-at-load"]
    assert result["tampered"] and result["score"] == 0
    assert all(not t["passed"] and "no credit" in t["message"] for t in result["tests"])
    report = "\n".join(result["feedback"])
    assert "torch.allclose was replaced" in report and "checks.close was replaced" in report


def test_tampering_inside_a_graded_function_gets_no_credit(submissions):
    result = submissions["tamper-late"]
    assert result["tampered"] and result["score"] == 0
    assert "torch.allclose was replaced" in "\n".join(result["feedback"])


@pytest.mark.parametrize("args, message", [
    (["grade", "missing.ipynb"], "No such file"),
    (["grade", "NAME.ipynb"], "cannot tell which assignment"),
    (["release", "OUT", "--only", "a9_nothing"], "unknown assignment"),
])
def test_bad_requests_are_one_line_exit_2(tmp_path, capsys, args, message):
    from metalearn_lib.cli import main

    nameless = notebook(tmp_path / "homework.ipynb")
    args = [str(nameless) if a == "NAME.ipynb" else str(tmp_path / a) if a in ("OUT", "missing.ipynb") else a
            for a in args]
    assert main(["assignments", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().split("\n")) == 1

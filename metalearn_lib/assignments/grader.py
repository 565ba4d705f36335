"""Grade one submission: run the notebook in a fresh kernel, then the hidden tests in another process.

1. The notebook (``.ipynb`` or MyST ``.md``) runs cell by cell in a fresh Jupyter kernel (nbclient, no
   Jupyter server) under one time limit for the whole notebook; a cell that raises is recorded and the
   next cells still run, so earlier parts keep their points. When the time limit is hit or the kernel
   dies, the cells after that point are not graded.
2. From the cells that ran, the grader keeps only the imports, the ``def``/``class`` statements and
   upper-case constants with literal values (no training loops, no top-level code), and passes them,
   with the hidden tests' source read from this package *before* the notebook ran, to
   :mod:`.runner` in a new process. See that module for the order of events that keeps the tests out
   of the submission's reach.
3. Feedback per test, a total, and one JSON line on stdout.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import secrets
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from metalearn_lib.assignments import ASSIGNMENTS, PACKAGE_DIR, Assignment, get_assignment
from metalearn_lib.assignments.release import read_notebook

SETUP_TAG = "notebook-setup"
#: Names whose use in a submission is shown to the instructor (not penalised: the runner's checks decide).
SUSPICIOUS = re.compile(r"\b(_getframe|f_back|f_locals|f_globals|gc\.get_objects|ctypes|__builtins__|"
                        r"TorchFunctionMode|TorchDispatchMode|metalearn_lib\.assignments|sys\.modules|"
                        r"setattr\(\s*torch)\b")


def find_assignment(nb, path: Path, assignment: str | None = None) -> Assignment:
    """The assignment a notebook belongs to: ``--assignment``, the notebook metadata
    (``metalearn: {assignment: ID}``, for notebooks that carry it), or the id in the file name."""
    if assignment:
        return get_assignment(assignment)
    meta_id = (nb.metadata.get("metalearn") or {}).get("assignment")
    if meta_id in ASSIGNMENTS:
        return ASSIGNMENTS[meta_id]
    for assignment_id in ASSIGNMENTS:
        if path.stem.startswith(assignment_id) or assignment_id in path.stem:
            return ASSIGNMENTS[assignment_id]
    raise ValueError(f"{path}: cannot tell which assignment this is: its file name contains none of "
                     f"{', '.join(ASSIGNMENTS)}; rename it or pass --assignment ID")


def grader_files_digest() -> str:
    """A hash of this package's sources: a notebook that edits the grader on disk is caught."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_notebook(nb, workdir: Path, timeout: float) -> dict[str, Any]:
    """Execute ``nb`` in place, cell by cell, in a fresh kernel; report what ran and what failed."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    started = time.perf_counter()
    deadline = started + timeout
    report: dict[str, Any] = {"ran": [], "failed": {}, "stopped": None}
    client = NotebookClient(nb, timeout=max(1, int(timeout)), kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(workdir)}})
    code_number = -1
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                code_number += 1
                left = deadline - time.perf_counter()
                if left <= 0:
                    report["stopped"] = f"time limit of {timeout:g} s reached before code cell {code_number}"
                    break
                client.timeout = max(1, int(left))
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    report["stopped"] = (f"time limit of {timeout:g} s reached while code cell {code_number} ran; "
                                         f"it and the cells after it are not graded")
                    break
                except DeadKernelError:
                    report["stopped"] = (f"the kernel died while code cell {code_number} ran; it and the cells "
                                         f"after it are not graded")
                    break
                report["ran"].append((code_number, cell.source))
                errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                if errors:
                    report["failed"][code_number] = f"{errors[0].get('ename')}: {errors[0].get('evalue')}"[:300]
    except Exception as error:  # noqa: BLE001 - a kernel that cannot start, or dies on shutdown
        if report["stopped"] is None:
            report["stopped"] = f"the notebook could not be run: {type(error).__name__}: {error}"
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _keep(node: ast.stmt) -> bool:
    if isinstance(node, ast.ImportFrom) and node.module == "__future__":
        return False
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets):
        try:
            ast.literal_eval(node.value)
            return True
        except ValueError:
            return False
    return False


def extract_definitions(cells: list[tuple[int, str]]) -> tuple[list[dict], list[str]]:
    """The imports, ``def``/``class`` statements and literal UPPER_CASE constants of ``cells``."""
    chunks, notes = [], []
    for number, source in cells:
        # IPython syntax (magics, shell escapes) is not Python: blank those lines, keeping line numbers.
        lines = [line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
                 for line in source.split("\n")]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError as error:
            notes.append(f"code cell {number} has a syntax error (line {error.lineno}): its definitions are not graded")
            continue
        kept = [node for node in tree.body if _keep(node)]
        if kept:
            chunks.append({"cell": number, "source": "\n\n".join(ast.unparse(node) for node in kept)})
    return chunks, notes


class TestProcess:
    """The runner process, started early so that its imports overlap the notebook's run."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="metalearn-grade-")
        self.errors = tempfile.TemporaryFile()
        self.read_fd, write_fd = os.pipe()
        # -I (isolated: no PYTHONPATH, no user site, no cwd on the path) keeps the submission's folder out
        # of the runner's imports; the library is then found where the grader itself found it, so a
        # checkout on PYTHONPATH grades as well as an installed package.
        library = str(Path(__file__).resolve().parents[2])
        boot = (f"import sys; sys.path.insert(0, {library!r}); "
                "from metalearn_lib.assignments.runner import main; sys.exit(main())")
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", boot, str(write_fd)],
                                     cwd=self.tmp.name, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=self.errors, pass_fds=(write_fd,))
        os.close(write_fd)

    def run(self, assignment: Assignment, tests_source: str, chunks: list[dict], timeout: float,
            test_timeout: float) -> dict[str, Any]:
        """Send the submission and the tests; collect the events (tests, notes, tampering) until done."""
        token = secrets.token_hex(16)
        payload = json.dumps({"token": token, "student": chunks, "tests_source": tests_source,
                              "tests_file": f"<hidden tests {assignment.id}>", "test_timeout": test_timeout})
        events: list[dict] = []
        timed_out = False
        try:
            self.proc.stdin.write(payload.encode())
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        selector = selectors.DefaultSelector()
        selector.register(self.read_fd, selectors.EVENT_READ)
        deadline, buffer = time.monotonic() + timeout, ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not selector.select(timeout=left):
                continue
            data = os.read(self.read_fd, 65536).decode(errors="replace")
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split("\n")
            for line in lines:
                if line.startswith(token):
                    events.append(json.loads(line[len(token):]))
        selector.close()
        stderr = self.close()
        return {"events": events, "timed_out": timed_out, "returncode": self.proc.returncode, "stderr": stderr}

    def close(self) -> str:
        """Stop the process (if still running) and clean up; return the tail of its stderr."""
        if self.proc.poll() is None:
            try:
                if not self.proc.stdin.closed:
                    self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.close(self.read_fd)
        except OSError:
            pass
        self.errors.seek(0)
        tail = self.errors.read().decode(errors="replace")[-2000:]
        self.errors.close()
        self.tmp.cleanup()
        return tail


def test_names(tests_source: str) -> list[tuple[str, float]]:
    """(name, points) of each hidden test, read from the test file's ``@part(points, name)`` decorators."""
    found = []
    for node in ast.parse(tests_source).body:
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "part":
                    found.append((ast.literal_eval(dec.args[1]), float(ast.literal_eval(dec.args[0]))))
    return found


def grade(path: str | Path, timeout: float = 600, test_timeout: float = 300, assignment: str | None = None,
          echo: bool = False) -> dict[str, Any]:
    """Grade the notebook at ``path``; return the result (the JSON line's content)."""
    path = Path(path).resolve()
    nb = read_notebook(path)
    spec = find_assignment(nb, path, assignment)
    tests_source = spec.tests.read_text(encoding="utf-8")  # read before any student code runs
    digest = grader_files_digest()
    expected = test_names(tests_source)
    feedback: list[str] = []

    # The opening setup cell only installs the library on Colab and picks the device: run it, but its
    # %pip line is not Python, so it is dropped from the definitions like any other magic.
    tester = TestProcess()
    try:
        run = run_notebook(nb, path.parent, timeout)
    except BaseException:
        tester.close()
        raise
    feedback.append(f"notebook ran in {run['seconds']} s; {len(run['ran'])} code cell(s) executed, "
                    f"{len(run['failed'])} raised an error")
    for number, error in run["failed"].items():
        feedback.append(f"  code cell {number} raised {error}")
    if run["stopped"]:
        feedback.append(f"  {run['stopped']}")

    results: dict[str, dict] = {}
    tampered: list[str] = []
    if grader_files_digest() != digest:
        tampered = ["the grader's own files changed on disk while your notebook ran"]
        tester.close()
    else:
        cells = [(n, s) for n, s in run["ran"]]
        chunks, notes = extract_definitions(cells)
        feedback += [f"  {note}" for note in notes]
        flags = sorted({m.group(0) for chunk in chunks for m in SUSPICIOUS.finditer(chunk["source"])})
        if flags:
            feedback.append(f"  note for the instructor: the submission uses {', '.join(flags)}")
        outcome = tester.run(spec, tests_source, chunks, timeout=max(test_timeout, 30) * 2, test_timeout=test_timeout)
        for event in outcome["events"]:
            if "note" in event:
                feedback.append(f"  {event['note']}")
            elif "tampered" in event:
                tampered = event["tampered"]
            elif "test" in event and event["test"] not in results:
                results[event["test"]] = event
        done = any(event.get("done") for event in outcome["events"])
        if not done and not tampered:
            why = ("the hidden tests ran out of time" if outcome["timed_out"]
                   else f"the test process stopped (exit code {outcome['returncode']})")
            feedback.append(f"  {why}; tests that did not finish score 0")
            if os.environ.get("METALEARN_GRADER_DEBUG") or not outcome["events"]:
                # nothing ran at all: most likely the grader's own environment, so show why
                feedback.append(outcome["stderr"])

    tests = []
    for name, points in expected:
        event = results.get(name)
        if tampered:
            tests.append({"name": name, "passed": False, "points": 0, "max_points": points,
                          "message": "no credit: the submission changed torch or the grader"})
        elif event is None:
            tests.append({"name": name, "passed": False, "points": 0, "max_points": points,
                          "message": "not run (see the notes above)"})
        else:
            passed = event.get("passed") is True
            tests.append({"name": name, "passed": passed, "points": points if passed else 0, "max_points": points,
                          "message": str(event.get("message", ""))})
    if tampered:
        feedback.append("  INTEGRITY CHECK FAILED, no credit: " + "; ".join(tampered[:5])
                        + (f" (and {len(tampered) - 5} more)" if len(tampered) > 5 else ""))
    for test in tests:
        test["points"], test["max_points"] = _number(test["points"]), _number(test["max_points"])
    score = _number(sum(t["points"] for t in tests))
    max_score = _number(sum(points for _, points in expected))
    return {"assignment": spec.id, "notebook": str(path), "score": score, "max_score": max_score,
            "tampered": bool(tampered), "notebook_seconds": run["seconds"], "failed_cells": sorted(run["failed"]),
            "stopped": run["stopped"], "tests": tests, "feedback": feedback}


def _number(x: float) -> float | int:
    """``7`` rather than ``7.0`` for whole numbers of points."""
    return int(x) if float(x).is_integer() else float(x)


def format_report(result: dict[str, Any]) -> str:
    """Readable feedback: the notes, one line per test, the total."""
    lines = [f"Assignment {result['assignment']}: {result['notebook']}", *result["feedback"], ""]
    for test in result["tests"]:
        mark = "PASS" if test["passed"] else "FAIL"
        detail = test["message"] if test["message"] != "passed" else ""
        lines.append(f"[{mark}] {test['name']} ({test['points']:g}/{test['max_points']:g})"
                     + (f": {detail}" if detail else ""))
    lines.append(f"\nTotal: {result['score']:g} / {result['max_score']:g}")
    return "\n".join(lines)


def json_line(result: dict[str, Any]) -> str:
    keep = ("assignment", "notebook", "score", "max_score", "tampered", "notebook_seconds", "failed_cells", "stopped",
            "tests")
    return json.dumps({k: result[k] for k in keep})

"""Run the hidden tests against a submission, in a process of its own (started by :mod:`.grader`).

    python -I -m metalearn_lib.assignments.runner FD    (a JSON payload on stdin; results on pipe FD)

Order of events, chosen so that a submission cannot alter the grading:

1. torch, the library modules the tests use and :mod:`.checks` (whose helpers hold references to the
   real torch functions) are imported, then a *snapshot* is taken: the attribute dictionaries of those
   modules, of ``torch.Tensor``, ``torch.nn.Module`` and a few classes, and of ``builtins``.
2. The submission's imports and ``def``/``class`` statements (nothing else: no training loop, no
   top-level asserts), extracted by the grader from the executed cells, run one statement at a time
   in a fresh module ``submission``.
3. The snapshot is compared: a replaced ``torch.allclose``, ``torch.Tensor.__eq__``, a patched helper
   or a torch function mode left active is *tampering*, and the submission gets no points.
4. Only then is the test file executed, from the source text the grader read from its own package
   before the notebook ran (so the submission never sees the expected values), into a namespace that
   is not in ``sys.modules``. Each test calls the submission's functions through the helpers; the
   snapshot is compared again after every test.

Results go to a pipe whose descriptor the grader passed, one line per event, each prefixed with a
random token. This is isolation against accidents and casual cheating, not a security sandbox: code
that sets out to attack this very process can. Run untrusted submissions in a container.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import signal
import sys
import time
import types


class _TestTimeout(BaseException):  # BaseException: a student's `except Exception` cannot swallow it
    pass


def _snapshot_targets():
    import torch
    import torch.autograd
    import torch.linalg
    import torch.nn
    import torch.nn.functional
    import torch.optim
    import torch.testing

    import metalearn_lib.data.base
    import metalearn_lib.data.omniglot
    import metalearn_lib.data.sinusoid
    import metalearn_lib.episodes
    import metalearn_lib.models.conv4
    import metalearn_lib.assignments.checks  # noqa: F401 - imported before the submission, then watched

    # By name: `metalearn_lib.data.omniglot` as an attribute is the function that the package re-exports.
    names = ["torch", "torch.nn", "torch.nn.functional", "torch.testing", "torch.autograd", "torch.linalg",
             "torch.optim", "metalearn_lib.assignments.checks", "metalearn_lib.data", "metalearn_lib.data.base",
             "metalearn_lib.data.omniglot", "metalearn_lib.data.sinusoid", "metalearn_lib.episodes",
             "metalearn_lib.models.conv4"]
    modules = [builtins, json, math, *(sys.modules[name] for name in names)]
    classes = [torch.Tensor, torch.nn.Module, torch.nn.Parameter, torch.nn.Linear, torch.nn.Conv2d,
               torch.optim.Optimizer, torch.optim.Adam, torch.optim.SGD, metalearn_lib.episodes.EpisodeSampler,
               metalearn_lib.data.base.ClassImages, metalearn_lib.models.conv4.Conv4]
    return modules, classes


def _same(now, before) -> bool:
    """``now`` is ``before``, or torch's own wrapper of it (torch wraps some functions lazily: importing
    torch._dynamo wraps ``torch.manual_seed``, the first optimizer wraps its class's ``step``)."""
    if now is before:
        return True
    code = getattr(now, "__code__", None)
    return (getattr(now, "__wrapped__", None) is before and code is not None
            and code.co_filename.startswith(_TORCH_DIR))


class Guard:
    """Remembers what the tests rely on and reports any change to it."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        modules, classes = _snapshot_targets()
        self.modules = {m.__name__: (m, dict(vars(m))) for m in modules}
        self.classes = {f"{c.__module__}.{c.__qualname__}": (c, dict(vars(c))) for c in classes}

    def changes(self) -> list[str]:
        found = []
        for name, (module, before) in self.modules.items():
            if sys.modules.get(name) is not module and name != "builtins":
                found.append(f"module {name} was replaced in sys.modules")
            now = vars(module)
            found += [f"{name}.{key} was {'replaced' if key in now else 'deleted'}"
                      for key, value in before.items() if not _same(now.get(key, _MISSING), value)]
        for name, (cls, before) in self.classes.items():
            now = vars(cls)
            found += [f"{name}.{key} was {'replaced' if key in now else 'deleted'}"
                      for key, value in before.items() if not _same(now.get(key, _MISSING), value)]
            found += [f"{name}.{key} was added" for key in now if key not in before]
        if builtins.__dict__ is not vars(builtins):  # pragma: no cover - cannot happen, kept for clarity
            found.append("builtins replaced")
        if self.torch._C._len_torch_function_stack():
            found.append("a torch function mode (torch.overrides.TorchFunctionMode) was left active")
        if self.torch._C._len_torch_dispatch_stack():
            found.append("a torch dispatch mode was left active")
        return found


_MISSING = object()
_TORCH_DIR = "\0"  # set in main() once torch is imported


def load_submission(chunks: list[dict]) -> tuple[types.ModuleType, list[str]]:
    """Run the submission's statements one by one in a fresh module; return it and what failed."""
    module = types.ModuleType("submission")
    module.__file__ = "<submission>"
    sys.modules["submission"] = module  # so that pickling and dataclasses in student code work
    problems = []
    for chunk in chunks:
        tree = ast.parse(chunk["source"])
        for node in tree.body:
            code = compile(ast.Module(body=[node], type_ignores=[]), f"<cell {chunk['cell']}>", "exec")
            try:
                exec(code, module.__dict__)
            except BaseException as error:  # noqa: BLE001 - report and go on with the other statements
                problems.append(f"cell {chunk['cell']}, line {node.lineno}: {type(error).__name__}: {error}")
    return module, problems


def main() -> int:
    # The grader starts this process while the notebook still runs: the imports and the snapshot happen
    # first, then the process waits for the payload (the submission's definitions and the tests).
    import torch

    torch.set_num_threads(1)  # light on a shared CPU, and reproducible
    global _TORCH_DIR
    _TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
    guard = Guard()
    out = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    raw = sys.stdin.read()
    if not raw.strip():
        return 0  # the grader had nothing to test
    payload = json.loads(raw)
    token = payload["token"]

    def emit(**event) -> None:
        out.write(token + json.dumps(event) + "\n")
        out.flush()

    from metalearn_lib.assignments.checks import TestFailure  # bound before any student code runs

    _emit, _time, _alarm, _signal = emit, time.perf_counter, signal.alarm, signal.signal
    submission, problems = load_submission(payload["student"])
    for problem in problems:
        _emit(note=f"while loading your definitions: {problem}")
    changed = guard.changes()
    if changed:
        _emit(tampered=changed)
        return 0

    tests: dict = {"__name__": "hidden_tests", "__builtins__": builtins}
    exec(compile(payload["tests_source"], payload["tests_file"], "exec"), tests)
    cases = [fn for fn in tests.values() if callable(fn) and hasattr(fn, "points") and hasattr(fn, "test_name")]

    def on_alarm(signum, frame):
        raise _TestTimeout()

    _signal(signal.SIGALRM, on_alarm)
    for case in cases:
        started = _time()
        _alarm(max(1, int(payload["test_timeout"])))
        try:
            detail = case(submission)
            passed, message = True, detail if isinstance(detail, str) else "passed"
        except TestFailure as failure:
            passed, message = False, str(failure)
        except _TestTimeout:
            passed, message = False, f"took longer than {payload['test_timeout']} s"
        except BaseException as error:  # noqa: BLE001 - an unexpected error fails this test only
            passed, message = False, f"{type(error).__name__}: {error}"
        finally:
            _alarm(0)
        changed = guard.changes()
        if changed:
            _emit(tampered=changed)
            return 0
        _emit(test=case.test_name, passed=passed, max_points=case.points, points=case.points if passed else 0,
              message=message, seconds=round(_time() - started, 2))
    _emit(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

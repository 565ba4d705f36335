"""Helpers for the hidden tests, bound to pristine torch functions.

The runner imports this module *before* the student's code, so the names below are the real torch
functions even if a submission later replaces ``torch.allclose`` or ``torch.Tensor.__eq__``; the runner
also checks that neither torch nor this module was changed (see :mod:`.runner`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

_Tensor = torch.Tensor
_allclose = torch.allclose
_equal = torch.equal
_isfinite = torch.isfinite
_all = torch.all
_abs = torch.abs
_max = torch.max
_type, _isinstance, _callable, _getattr, _float = type, isinstance, callable, getattr, float


class TestFailure(AssertionError):
    """A hidden test failed; the message is shown to the student."""


def fail(message: str) -> None:
    raise TestFailure(message)


def part(points: float, name: str) -> Callable:
    """Mark a hidden test: ``@part(2, "prototypes are class means")``; tests run in file order."""
    def mark(fn: Callable) -> Callable:
        fn.points, fn.test_name = points, name
        return fn
    return mark


def function(sub: Any, name: str) -> Callable:
    """The student's top-level function or class ``name``, or a failure that says it is missing."""
    fn = _getattr(sub, name, None)
    if fn is None:
        fail(f"`{name}` is not defined: keep its `def` line from the notebook (the grader reads only the "
             f"imports and the `def`/`class` statements of your code cells)")
    if not _callable(fn):
        fail(f"`{name}` should be a function, got {_type(fn).__name__}")
    return fn


def call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call a student function; ``NotImplementedError`` (the stub) and other errors become failures."""
    name = _getattr(fn, "__name__", "your function")
    try:
        return fn(*args, **kwargs)
    except TestFailure:
        raise
    except NotImplementedError:
        fail(f"`{name}` is not written yet (it raises NotImplementedError)")
    except Exception as error:  # noqa: BLE001 - any student error is a failed test, with its message
        fail(f"`{name}` raised {_type(error).__name__}: {error}")


def tensor(x: Any, what: str, shape: tuple | None = None) -> Tensor:
    """``x`` if it is a plain ``torch.Tensor`` (no subclass, which could fake comparisons) of ``shape``."""
    if _type(x) is not _Tensor:
        fail(f"{what} should be a torch.Tensor, got {_type(x).__name__}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        fail(f"{what} should have shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def close(got: Any, want: Tensor, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Fail unless ``got`` is a plain tensor of ``want``'s shape with values close to it."""
    got = tensor(got, what, tuple(want.shape))
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if not _all(_isfinite(got)):
        fail(f"{what} contains NaN or infinite values")
    if not _allclose(got, want, atol=atol, rtol=rtol):
        worst = _float(_max(_abs(got - want)))
        fail(f"{what} is wrong: largest difference from the expected value is {worst:.3g}")


def equal(got: Any, want: Tensor, what: str) -> None:
    got = tensor(got, what, tuple(want.shape))
    if not _equal(got.cpu().long(), want.cpu().long()):
        fail(f"{what} is wrong: expected {want.tolist()}, got {got.tolist()}")


# --------------------------------------------------------------- shared by the MAML and Reptile tests

def mlp_params(hidden: int, seed: int, requires_grad: bool = False) -> list[Tensor]:
    """The six float64 tensors of a 1 -> hidden -> hidden -> 1 MLP, seeded."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(hidden, 1), (hidden,), (hidden, hidden), (hidden,), (1, hidden), (1,)]
    return [(torch.randn(*s, generator=g, dtype=torch.float64) * 0.5).requires_grad_(requires_grad) for s in shapes]


def mlp_forward(params: list[Tensor], x: Tensor) -> Tensor:
    w1, b1, w2, b2, w3, b3 = params
    F = torch.nn.functional
    return F.linear(torch.relu(F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2)), w3, b3)


def sinusoid_tasks(tasks: int, seed: int, shots: int = 10, queries: int = 10, double: bool = True):
    """A seeded meta-batch of sinusoid tasks (float64 unless ``double=False``)."""
    from metalearn_lib.data.sinusoid import SinusoidSampler

    t = SinusoidSampler(shots=shots, queries=queries, seed=seed).sample_batch(tasks)
    if double:
        for name in ("x_support", "y_support", "x_query", "y_query"):
            setattr(t, name, getattr(t, name).double())
    return t


def tensor_list(out: Any, what: str, n: int = 6) -> list:
    """``out`` as a list of ``n`` tensors (one per parameter), or a test failure saying so."""
    if not _isinstance(out, (list, tuple)) or len(out) != n:
        fail(f"{what} should return a list of {n} tensors (one per parameter)")
    return list(out)

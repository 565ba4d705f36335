"""Classroom assignments: student notebooks generated from solutions, and an autograder.

    python -m metalearn_lib assignments list
    python -m metalearn_lib assignments release OUTDIR
    python -m metalearn_lib assignments grade NOTEBOOK [--timeout S] [--assignment ID]

The solution notebooks ``chapters/assignments/<id>.md`` are the source of truth. Their solution regions
are marked as in nbgrader (``### BEGIN SOLUTION`` ... ``### END SOLUTION``); :mod:`.release` replaces each
with a ``raise NotImplementedError`` stub. The hidden tests live in this package
(``metalearn_lib/assignments/tests/<id>.py``), never in a notebook; :mod:`.grader` runs a submission,
then runs the hidden tests in a separate, isolated process (:mod:`.runner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
TESTS_DIR = PACKAGE_DIR / "tests"
#: Where the solution notebooks live in a checkout (the package alone, e.g. pip-installed, has none).
SOLUTIONS_DIR = PACKAGE_DIR.parents[1] / "chapters" / "assignments"


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str

    @property
    def solution(self) -> Path:
        return SOLUTIONS_DIR / f"{self.id}.md"

    @property
    def tests(self) -> Path:
        return TESTS_DIR / f"{self.id}.py"


ASSIGNMENTS: dict[str, Assignment] = {a.id: a for a in (
    Assignment("a1_episode_sampler", "An N-way K-shot episode sampler"),
    Assignment("a2_prototypical", "Prototypes, Euclidean logits, and training a Prototypical Network"),
    Assignment("a3_siamese", "The contrastive loss and one-shot verification"),
    Assignment("a4_maml", "MAML: the inner loop and the second-order meta-gradient"),
    Assignment("a5_reptile", "The Reptile update"),
)}


def get_assignment(assignment_id: str) -> Assignment:
    if assignment_id not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {assignment_id!r}: choose one of {', '.join(ASSIGNMENTS)}")
    return ASSIGNMENTS[assignment_id]

"""Student versions of the solution notebooks: solution regions become stubs, hidden tests go.

A solution region is marked as in nbgrader::

    def prototypes(embeddings, labels, ways):
        \"\"\"Mean embedding of each class.\"\"\"
        ### BEGIN SOLUTION
        # HINT: index the embeddings of class k with labels == k
        return torch.stack([embeddings[labels == k].mean(0) for k in range(ways)])
        ### END SOLUTION

and becomes, in the student version, ::

    def prototypes(embeddings, labels, ways):
        \"\"\"Mean embedding of each class.\"\"\"
        # HINT: index the embeddings of class k with labels == k
        raise NotImplementedError("prototypes: write your solution here")

Lines before the region (signature, docstring) and ``# HINT:`` lines inside it are kept. Cells tagged
``hidden-tests`` or ``solution-only`` are removed, and so is the "Open in Colab" cell, whose link opens
the solution notebook. Everything else is copied unchanged.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jupytext
import nbformat

from metalearn_lib.assignments import ASSIGNMENTS, Assignment

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
REMOVED_TAGS = {"hidden-tests", "solution-only", "colab-link"}
_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(\w+)|^\s*class\s+(\w+)")


def read_notebook(path: str | Path):
    """A notebook from a MyST Markdown (jupytext) or ``.ipynb`` file."""
    path = Path(path)
    if path.suffix == ".md":
        return jupytext.read(path, fmt="md:myst")
    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    raise ValueError(f"{path}: expected a .md (MyST) or .ipynb notebook")


def strip_solutions(source: str, where: str = "cell") -> str:
    """``source`` with every solution region replaced by its ``# HINT:`` lines and a stub."""
    out: list[str] = []
    lines = source.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != BEGIN:
            if line.strip() == END:
                raise ValueError(f"{where}: {END} without {BEGIN}")
            out.append(line)
            i += 1
            continue
        indent = line[:len(line) - len(line.lstrip())]
        owner = next((m.group(1) or m.group(2) for prev in reversed(out) if (m := _DEF.match(prev))), None)
        hints = []
        i += 1
        while i < len(lines) and lines[i].strip() != END:
            if lines[i].strip().startswith("# HINT"):
                hints.append(indent + lines[i].strip())
            i += 1
        if i == len(lines):
            raise ValueError(f"{where}: {BEGIN} without {END}")
        what = f"{owner}: write" if owner else "write"
        out += hints + [f'{indent}raise NotImplementedError("{what} your solution here")']
        i += 1  # skip END
    return "\n".join(out)


def has_solution(source: str) -> bool:
    return any(line.strip() == BEGIN for line in source.split("\n"))


def student_version(nb):
    """A copy of the solution notebook ``nb`` as handed to students."""
    new = copy.deepcopy(nb)
    cells = []
    for index, cell in enumerate(new.cells):
        if REMOVED_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        if cell.cell_type == "code" and has_solution(cell.source):
            cell.source = strip_solutions(cell.source, where=f"cell {index}")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    new.cells = cells
    return new


def release(outdir: str | Path, assignments: list[Assignment] | None = None) -> list[Path]:
    """Write each assignment's student notebook to ``outdir`` as ``<id>.md`` and ``<id>.ipynb``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for assignment in assignments or list(ASSIGNMENTS.values()):
        if not assignment.solution.is_file():
            raise FileNotFoundError(f"{assignment.solution}: solution notebook missing (release needs a checkout "
                                    f"of the book, where chapters/assignments/ holds the solutions)")
        nb = student_version(read_notebook(assignment.solution))
        md, ipynb = outdir / f"{assignment.id}.md", outdir / f"{assignment.id}.ipynb"
        jupytext.write(nb, md, fmt="md:myst")
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"cell-{i}"
        ipynb.write_text(jupytext.writes(nb, fmt="ipynb"), encoding="utf-8")
        written += [md, ipynb]
    return written

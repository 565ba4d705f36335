"""pytest: run the chapter notebooks (MyST Markdown, read through jupytext) under nbval.

Every ``chapters/**/*.md`` whose front matter declares a jupytext notebook with a kernelspec is
collected as an nbval notebook in *lax* mode, whatever the command line says: each code cell is a
test item, the cells run in order in one kernel (started in the notebook's folder), a cell that
raises (a failed ``assert`` included) fails, and outputs are not compared. Plain Markdown pages
(``intro.md``) are not collected. The ``.ipynb`` copies that ``make sync-notebooks`` writes beside
each source for Colab are ignored, so no notebook runs twice, and so is whatever under chapters/
is named ``_*`` or ``.*`` (``_build``, ``_vendor``, checkpoints), as in the sync tool.

Per-cell timeout: nbval's ``--nbval-cell-timeout`` (default 2000 s). With pytest-xdist, use
``--dist loadfile`` so that all cells of a notebook go to the same worker (and kernel).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import jupytext
from nbval.plugin import IPyNbCell, IPyNbFile, find_comment_markers, find_metadata_tags

from metalearn_lib.tools.sync_notebooks import CHAPTERS, is_notebook_source, is_set_aside

CHAPTERS_DIR = Path(__file__).resolve().parent / CHAPTERS


class MystNotebook(IPyNbFile):
    """nbval's notebook collector, reading a jupytext text notebook, always in lax mode."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compare_outputs = False  # as with --nbval-lax: cells must run, outputs are not checked

    def collect(self):
        # IPyNbFile.collect reads the file as .ipynb JSON; this is the same loop over a jupytext read.
        self.nb = jupytext.read(self.path, fmt="md:myst")
        code_cells = (cell for cell in self.nb.cells if cell.cell_type == "code")
        for cell_num, cell in enumerate(code_cells):
            options = defaultdict(bool, find_metadata_tags(cell.metadata))
            options.update(dict(find_comment_markers(cell.source)))
            options.setdefault("check", self.compare_outputs)
            yield IPyNbCell.from_parent(self, name=f"Cell {cell_num}", cell_num=cell_num,
                                        cell=cell, options=options)


def pytest_ignore_collect(collection_path: Path, config):
    path = collection_path.resolve()
    if CHAPTERS_DIR in path.parents and is_set_aside(path.relative_to(CHAPTERS_DIR)):
        return True  # chapters/_build (executed copies, HTML sources), _vendor, checkpoints
    if collection_path.suffix == ".ipynb" and collection_path.with_suffix(".md").is_file():
        return True  # the Colab copy of a notebook whose .md source is collected
    return None


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix == ".md" and is_notebook_source(file_path):
        return MystNotebook.from_parent(parent, path=file_path)
    return None

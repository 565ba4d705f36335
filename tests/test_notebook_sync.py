"""The chapter notebooks' standard opening cells and their .ipynb copies (metalearn_lib.tools.sync_notebooks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from notebook_text import FRONT_MATTER

from metalearn_lib.tools.sync_notebooks import main, notebook_sources, sync

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOK = FRONT_MATTER + """
# A chapter

```{code-cell} ipython3
x = 1
assert x == 1
```
"""


def test_repository_notebooks_are_in_sync():
    assert notebook_sources(ROOT), "no chapter notebook found"
    assert sync(ROOT, check=True) == [], "run `make sync-notebooks` and commit the result"


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A small book: book.yml naming a repository, one notebook source and one plain page."""
    (tmp_path / "book.yml").write_text(
        "repository:\n  url: https://github.com/someone/some-book\n  branch: dev\n", encoding="utf-8")
    chapter = tmp_path / "chapters" / "01_topic"
    chapter.mkdir(parents=True)
    (chapter / "nb.md").write_text(NOTEBOOK, encoding="utf-8")
    (tmp_path / "chapters" / "intro.md").write_text("# Intro\n\nNot a notebook.\n", encoding="utf-8")
    return tmp_path


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_sync_writes_opening_and_ipynb_and_is_idempotent(book: Path):
    source, ipynb = book / "chapters/01_topic/nb.md", book / "chapters/01_topic/nb.ipynb"
    assert len(sync(book, check=True)) == 2  # opening cells missing, .ipynb missing
    assert not ipynb.exists()  # --check wrote nothing
    assert len(sync(book)) == 2
    text = source.read_text(encoding="utf-8")
    assert ("[Open in Colab](https://colab.research.google.com/github/someone/some-book"
            "/blob/dev/chapters/01_topic/nb.ipynb)") in text
    assert '%pip install -q "metalearn-lib @ git+https://github.com/someone/some-book@dev"' in text
    got = cells(ipynb)
    assert [c["cell_type"] for c in got] == ["markdown", "code", "markdown", "code"]
    assert all(c["outputs"] == [] for c in got if c["cell_type"] == "code")
    assert not (book / "chapters/intro.ipynb").exists()  # plain pages are left alone
    before = (text, ipynb.read_text(encoding="utf-8"))
    assert sync(book) == [] and sync(book, check=True) == []
    assert (source.read_text(encoding="utf-8"), ipynb.read_text(encoding="utf-8")) == before


def test_check_detects_each_kind_of_drift(book: Path, capsys):
    sync(book)
    source, ipynb = book / "chapters/01_topic/nb.md", book / "chapters/01_topic/nb.ipynb"
    synced = source.read_text(encoding="utf-8")

    # a hand-edited setup cell (its .ipynb copy is built with the right one, so it is not flagged)
    source.write_text(synced.replace("device, scale = setup_notebook()", "device = 'cpu'"), encoding="utf-8")
    assert sync(book, check=True) == ["chapters/01_topic/nb.md: opening cells out of date"]
    assert main([str(book), "--check"]) == 1
    assert "chapters/01_topic/nb.md: opening cells out of date" in capsys.readouterr().out
    assert source.read_text(encoding="utf-8") != synced  # --check changed nothing
    sync(book)
    assert source.read_text(encoding="utf-8") == synced

    # a chapter edit not carried over to the Colab copy
    source.write_text(synced.replace("x = 1\n", "x = 2\n"), encoding="utf-8")
    assert sync(book, check=True) == ["chapters/01_topic/nb.ipynb: differs from its .md source"]

    # the Colab copy deleted, or saved with outputs
    sync(book)
    ipynb.unlink()
    assert sync(book, check=True) == ["chapters/01_topic/nb.ipynb: missing"]
    sync(book)
    nb = json.loads(ipynb.read_text(encoding="utf-8"))
    nb["cells"][-1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["1\n"]}]
    ipynb.write_text(json.dumps(nb), encoding="utf-8")
    assert sync(book, check=True) == ["chapters/01_topic/nb.ipynb: differs from its .md source"]

    # the repository moves: book.yml is the one place that says so, and every link follows
    sync(book)
    book_yml = book / "book.yml"
    book_yml.write_text(book_yml.read_text(encoding="utf-8").replace("dev", "main"), encoding="utf-8")
    assert len(sync(book, check=True)) == 2
    sync(book)
    assert "/blob/main/chapters/01_topic/nb.ipynb" in source.read_text(encoding="utf-8")

    # a generated copy whose source was removed
    source.unlink()
    assert sync(book, check=True) == ["chapters/01_topic/nb.ipynb: its .md source is gone"]
    sync(book)
    assert not ipynb.exists()
    assert main([str(book), "--check"]) == 0


def test_misplaced_or_duplicated_opening_cells_are_moved_to_the_top(book: Path):
    sync(book)
    source = book / "chapters/01_topic/nb.md"
    synced = source.read_text(encoding="utf-8")
    body_start = synced.index("# A chapter")
    opening = synced[synced.index("+++"):body_start]
    # opening cells pasted again at the end of the notebook
    source.write_text(synced + "\n" + opening, encoding="utf-8")
    assert sync(book, check=True)[0] == "chapters/01_topic/nb.md: opening cells out of date"
    sync(book)
    assert source.read_text(encoding="utf-8") == synced

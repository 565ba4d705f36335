"""The book's notebooks executed several at a time into the cache the Sphinx build reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from notebook_text import FRONT_MATTER

from metalearn_lib.tools.execute_book import execute_book, read_notebook, schedule, toc_notebooks
from metalearn_lib.tools.sync_notebooks import notebook_sources

ROOT = Path(__file__).resolve().parents[1]

FRONT = FRONT_MATTER + """
# {title}

```{{code-cell}} ipython3
:tags: [setup]

import os
print("threads", os.environ.get("OMP_NUM_THREADS"))
{body}
```
"""


def test_the_table_of_contents_names_every_notebook_once():
    paths = toc_notebooks(ROOT / "chapters", ROOT / "chapters" / "_toc.yml")
    assert len(paths) == len(set(paths))
    assert sorted(paths) == notebook_sources(ROOT)   # none left out, no plain page run as a notebook


def test_the_book_config_reads_the_cache():
    book = yaml.safe_load((ROOT / "book.yml").read_text())
    assert book["execute"]["execute_notebooks"] == "cache"


def test_longest_first_unknown_first(tmp_path):
    a, b, c = (tmp_path / f"{n}.md" for n in "abc")
    times = tmp_path / "times.json"
    assert schedule([a, b, c], times) == [a, b, c]          # no earlier run: the table's order
    times.write_text(json.dumps({str(a): 5.0, str(c): 50.0}))
    assert schedule([a, b, c], times) == [b, c, a]


def _book(tmp_path: Path, execute: str = "cache") -> tuple[Path, Path]:
    book = tmp_path / "book"
    book.mkdir()
    (book / "intro.md").write_text("# Intro\n")
    (book / "good.md").write_text(FRONT.format(title="Good", body="x = 6 * 7\nprint(x)"))
    (book / "bad.md").write_text(FRONT.format(title="Bad", body="assert 1 + 1 == 3, 'arithmetic'"))
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: good\n  - file: bad\n")
    config = tmp_path / "book.yml"
    config.write_text(yaml.safe_dump({"execute": {"execute_notebooks": execute, "timeout": 120},
                                      "parse": {"myst_enable_extensions": ["dollarmath"]}}))
    return book, config


def test_notebooks_are_cached_as_the_build_reads_them_and_a_failure_is_reported(tmp_path):
    from jupyter_cache import get_cache

    book, config = _book(tmp_path)
    cache_dir = book / "_build" / ".jupyter_cache"
    lines: list[str] = []
    with pytest.raises(RuntimeError, match=r"1 notebook\(s\) failed: bad.md"):
        execute_book(book, config, book / "_toc.yml", 2, cache_dir, printer=lines.append)
    assert any("AssertionError" in line and "arithmetic" in line for line in lines)
    cache = get_cache(str(cache_dir))
    record = cache.match_cache_notebook(read_notebook(book / "good.md", ["dollarmath"]))  # the build's lookup
    outputs = [o.get("text", "") for cell in cache.get_cache_bundle(record.pk).nb.cells for o in cell.get("outputs", [])]
    assert "threads 1\n42\n" in "".join(outputs)                     # one torch thread in each kernel
    with pytest.raises(KeyError):                                    # the failed one is not cached
        cache.match_cache_notebook(read_notebook(book / "bad.md", ["dollarmath"]))
    assert set(json.loads((cache_dir.parent / "execution_times.json").read_text())) == \
        {str(book / "good.md"), str(book / "bad.md")}


def test_a_config_that_would_run_everything_again_is_refused(tmp_path):
    book, config = _book(tmp_path, execute="force")
    with pytest.raises(ValueError, match="execute_notebooks to cache"):
        execute_book(book, config, book / "_toc.yml", 2, book / "_build" / ".jupyter_cache")

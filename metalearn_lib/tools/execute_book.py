"""Execute every notebook of the book, several at a time, into Jupyter Book's execution cache.

    python -m metalearn_lib.tools.execute_book [--config book.yml] [--jobs 2]

Jupyter Book 1.x executes notebooks one after another, and on this book's 2-core machine a notebook
mostly keeps one core busy: a kernel's start, Python, small tensors. ``make book`` therefore runs this
first: it empties ``chapters/_build/.jupyter_cache`` (so that every notebook runs at every build),
executes the notebooks of ``_toc.yml`` ``--jobs`` at a time, each kernel with one torch thread
(``OMP_NUM_THREADS=1``; two threads in each of two kernels on two cores would be several times
slower), and stores each executed notebook in that cache. ``book.yml``'s ``execute_notebooks: cache``
then makes the Sphinx build take every notebook's outputs from the cache instead of running it again.

A notebook is matched to its cached copy by a hash of its code cells and their metadata, so it is
read here with MyST-NB's own reader, the one the build uses. A notebook that fails (a cell raises, as
a failed ``assert`` does, or a cell runs past ``execute.timeout``) is reported with its traceback and
the command exits with code 1: the build stops before Sphinx starts. The longest notebooks start
first, by their times in the last run (``chapters/_build/execution_times.json``), else in the
order of the table of contents.

The notebooks run at the scale that ``METALEARN_SCALE`` names (quick on a CPU), as in the build.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def toc_notebooks(book_dir: Path, toc: Path) -> list[Path]:
    """The notebook sources named in the table of contents, in its order (plain Markdown pages left out)."""
    from metalearn_lib.tools.sync_notebooks import is_notebook_source

    files: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    files.append(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(toc.read_text(encoding="utf-8")))
    paths = []
    for name in files:
        path = book_dir / (name if name.endswith(".md") else name + ".md")
        if not path.is_file():
            raise FileNotFoundError(f"{toc} names {name}, but {path} does not exist")
        if is_notebook_source(path):
            paths.append(path)
    return paths


def read_notebook(path: Path, extensions: list[str]) -> Any:
    """``path`` read as the book build reads it (MyST-NB's reader for text notebooks)."""
    from myst_nb.core.read import read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    config = MdParserConfig(enable_extensions=set(extensions))
    return read_myst_markdown_notebook(path.read_text(encoding="utf-8"), config=config, add_source_map=True,
                                       path=str(path))


def execute_one(path: str, extensions: list[str], timeout: int) -> tuple[str, str, float, str | None]:
    """Run one notebook in its own folder: (path, executed notebook as JSON, seconds, traceback or None)."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    nb = read_notebook(Path(path), extensions)
    start = time.perf_counter()
    result = single_nb_execution(nb, cwd=str(Path(path).parent), timeout=timeout, allow_errors=False,
                                 meta_override=True)
    seconds = time.perf_counter() - start
    error = None if result.err is None else (result.exc_string or repr(result.err))
    return path, nbformat.writes(nb), seconds, error


def schedule(paths: list[Path], times_file: Path) -> list[Path]:
    """Longest first by the last run's times; notebooks without a time keep the table's order, first."""
    try:
        last = json.loads(times_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        last = {}
    known = sorted((p for p in paths if str(p) in last), key=lambda p: -float(last[str(p)]))
    return [p for p in paths if str(p) not in last] + known


def execute_book(book_dir: Path, config: Path, toc: Path, jobs: int, cache_dir: Path,
                 printer=print) -> None:
    """Execute every notebook into ``cache_dir``. Raises RuntimeError if any failed."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    book = yaml.safe_load(config.read_text(encoding="utf-8"))
    execute = book.get("execute", {})
    if execute.get("execute_notebooks") != "cache":
        raise ValueError(f"{config} must set execute.execute_notebooks to cache, or the build runs every notebook "
                         f"again; it says {execute.get('execute_notebooks')!r}")
    extensions = list(book.get("parse", {}).get("myst_enable_extensions", []))
    timeout = int(execute.get("timeout", 1800))
    paths = toc_notebooks(book_dir, toc)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = get_cache(str(cache_dir))
    cache.clear_cache()  # every notebook runs at every build
    times_file = cache_dir.parent / "execution_times.json"
    order = schedule(paths, times_file)
    os.environ["OMP_NUM_THREADS"] = "1"  # the kernels inherit it
    times: dict[str, float] = {}
    failures: list[tuple[str, str]] = []
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:  # its workers take the notebooks in this order
        futures = [pool.submit(execute_one, str(path), extensions, timeout) for path in order]
        for future in as_completed(futures):
            path, text, seconds, error = future.result()
            name = str(Path(path).relative_to(book_dir))
            times[path] = round(seconds, 1)
            if error is not None:
                failures.append((name, error))
                printer(f"{seconds:7.1f} s  {name}  FAILED")
                continue
            cache.cache_notebook_bundle(CacheBundleIn(nbformat.reads(text, as_version=4), path,
                                                      data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            printer(f"{seconds:7.1f} s  {name}")
    times_file.write_text(json.dumps(times, indent=1) + "\n", encoding="utf-8")
    printer(f"{len(paths)} notebooks, {jobs} at a time: {time.perf_counter() - start:.0f} s "
            f"(their own times add up to {sum(times.values()):.0f} s)")
    if failures:
        for name, error in failures:
            printer(f"\n{name} failed:\n{error}")
        raise RuntimeError(f"{len(failures)} notebook(s) failed: {', '.join(name for name, _ in failures)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalearn_lib.tools.execute_book", description=__doc__.split("\n")[0])
    parser.add_argument("--book", default=str(ROOT / "chapters"), help="the book's source folder (default chapters/)")
    parser.add_argument("--config", default=str(ROOT / "book.yml"))
    parser.add_argument("--toc", default=None, help="default: BOOK/_toc.yml")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks at a time (default 2)")
    parser.add_argument("--cache", default=None, help="default: BOOK/_build/.jupyter_cache, where the build looks")
    args = parser.parse_args(argv)
    book_dir = Path(args.book).resolve()
    try:
        execute_book(book_dir, Path(args.config), Path(args.toc) if args.toc else book_dir / "_toc.yml", args.jobs,
                     Path(args.cache) if args.cache else book_dir / "_build" / ".jupyter_cache")
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

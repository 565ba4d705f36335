"""Keep every chapter notebook's standard opening and its Colab copy in step.

    python -m metalearn_lib.tools.sync_notebooks [--check] [ROOT]      (or: make sync-notebooks)

The chapters are MyST Markdown notebooks (``chapters/<NN_topic>/<name>.md``, jupytext ``md:myst``
with a ``kernelspec`` in the front matter). This tool owns their first two cells:

1. a markdown cell (tag ``colab-link``) holding a plain ``[Open in Colab](...)`` link to the
   notebook's paired ``.ipynb`` on GitHub (a text link, not a badge: the HTML book loads nothing
   remote);
2. a code cell (tag ``notebook-setup``) that installs the companion library on Colab and calls
   :func:`metalearn_lib.notebook.setup_notebook`.

Both are rebuilt from the ``repository`` section of ``book.yml`` (url and branch), the single place
that names the repository. Cells found anywhere in a notebook with those tags, or beginning with
the link or the setup comment, are replaced, so running the tool twice changes nothing. The paired
``.ipynb`` beside each source (what Colab opens) is rewritten from the source with empty outputs
and deterministic cell ids; generated ``.ipynb`` files whose source is gone are removed.

``--check`` writes nothing, lists every file that is out of step and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import jupytext
import nbformat
import yaml

CHAPTERS = "chapters"
LINK_TAG = "colab-link"
SETUP_TAG = "notebook-setup"
LINK_TEXT = "[Open in Colab]("
SETUP_COMMENT = "# Setup: on Colab, install the companion library; everywhere, use the GPU when present."
SETUP_TEMPLATE = f"""{SETUP_COMMENT}
import sys
if "google.colab" in sys.modules:
    %pip install -q "metalearn-lib @ git+https://github.com/{{owner}}/{{name}}@{{branch}}"
from metalearn_lib.notebook import setup_notebook
device, scale = setup_notebook()"""


@dataclass(frozen=True)
class Repository:
    owner: str
    name: str
    branch: str

    @classmethod
    def from_book(cls, root: Path) -> "Repository":
        """Read ``repository: url/branch`` from ``ROOT/book.yml``."""
        config = yaml.safe_load((root / "book.yml").read_text(encoding="utf-8"))
        repo = config.get("repository") or {}
        url, branch = repo.get("url", ""), repo.get("branch", "")
        parsed = urlparse(url)
        parts = [p for p in parsed.path.split("/") if p]
        if parsed.netloc != "github.com" or len(parts) != 2 or not branch:
            raise SystemExit(f"book.yml: repository.url must be https://github.com/OWNER/REPO and "
                             f"repository.branch set (Colab opens notebooks from GitHub); got {url!r}, {branch!r}")
        return cls(parts[0], parts[1].removesuffix(".git"), branch)

    def colab_url(self, path_in_repo: str) -> str:
        return (f"https://colab.research.google.com/github/{self.owner}/{self.name}"
                f"/blob/{self.branch}/{path_in_repo}")


def front_matter(path: Path) -> dict:
    """The YAML front matter of a Markdown file ({} when there is none or it is not a mapping)."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---\n", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def is_notebook_source(path: Path) -> bool:
    """A ``.md`` file whose front matter declares it a jupytext notebook with a kernel."""
    if path.suffix != ".md" or not path.is_file():
        return False
    meta = front_matter(path)
    return "jupytext" in meta and "kernelspec" in meta


def is_set_aside(path_in_chapters: Path) -> bool:
    """Whether a path under chapters/ is, or lies in, something named ``_*`` or ``.*`` (``_build``,
    ``_vendor``, ``.ipynb_checkpoints``): no chapter notebook lives there."""
    return any(part.startswith(("_", ".")) for part in path_in_chapters.parts)


def notebook_sources(root: Path) -> list[Path]:
    """Every notebook source under ``ROOT/chapters`` that is not set aside."""
    chapters = root / CHAPTERS
    return sorted(p for p in chapters.rglob("*.md")
                  if not is_set_aside(p.relative_to(chapters)) and is_notebook_source(p))


def opening_cells(repo: Repository, ipynb_in_repo: str) -> list:
    link = nbformat.v4.new_markdown_cell(f"[Open in Colab]({repo.colab_url(ipynb_in_repo)})",
                                         metadata={"tags": [LINK_TAG]})
    setup = nbformat.v4.new_code_cell(SETUP_TEMPLATE.format(owner=repo.owner, name=repo.name, branch=repo.branch),
                                      metadata={"tags": [SETUP_TAG]})
    return [link, setup]


def is_opening_cell(cell) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    source = cell.get("source", "").lstrip()
    return (LINK_TAG in tags or SETUP_TAG in tags
            or (cell.cell_type == "markdown" and source.startswith(LINK_TEXT))
            or (cell.cell_type == "code" and source.startswith(SETUP_COMMENT)))


def cell_key(cell) -> tuple:
    return cell.cell_type, cell.source, dict(cell.get("metadata", {}))


def with_opening(nb, cells: list):
    """A copy of ``nb`` whose first cells are ``cells`` and that has no other opening cell."""
    new = copy.deepcopy(nb)
    new.cells = [*cells, *(c for c in nb.cells if not is_opening_cell(c))]
    return new


def ipynb_text(nb) -> str:
    """The Colab copy: same cells, no outputs, cell ids from their position (stable across runs)."""
    out = copy.deepcopy(nb)
    for i, cell in enumerate(out.cells):
        cell["id"] = f"cell-{i}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return jupytext.writes(out, fmt="ipynb")


def is_generated_ipynb(path: Path) -> bool:
    try:
        cells = nbformat.read(path, as_version=4).cells
    except Exception:  # unreadable: not ours to delete
        return False
    return bool(cells) and LINK_TAG in cells[0].get("metadata", {}).get("tags", [])


def sync(root: Path, check: bool = False) -> list[str]:
    """Bring every notebook under ``root`` in step (or, with ``check``, only report).

    Returns one line per file that was (or, with ``check``, would be) changed.
    """
    root = root.resolve()
    repo = Repository.from_book(root)
    report = []
    sources = notebook_sources(root)
    for source in sources:
        ipynb = source.with_suffix(".ipynb")
        rel = source.relative_to(root).as_posix()
        nb = jupytext.read(source, fmt="md:myst")
        wanted = with_opening(nb, opening_cells(repo, ipynb.relative_to(root).as_posix()))
        if [cell_key(c) for c in wanted.cells] != [cell_key(c) for c in nb.cells]:
            report.append(f"{rel}: opening cells {'out of date' if check else 'rewritten'}")
            if not check:
                jupytext.write(wanted, source, fmt="md:myst")
        text = ipynb_text(wanted)
        if not ipynb.exists() or ipynb.read_text(encoding="utf-8") != text:
            what = "missing" if not ipynb.exists() else "differs from its .md source"
            report.append(f"{ipynb.relative_to(root).as_posix()}: {what}" + ("" if check else ", written"))
            if not check:
                ipynb.write_text(text, encoding="utf-8")
    paired = {s.with_suffix(".ipynb") for s in sources}
    for ipynb in sorted((root / CHAPTERS).rglob("*.ipynb")):
        if ipynb in paired or is_set_aside(ipynb.relative_to(root / CHAPTERS)) or not is_generated_ipynb(ipynb):
            continue
        report.append(f"{ipynb.relative_to(root).as_posix()}: its .md source is gone"
                      + ("" if check else ", removed"))
        if not check:
            ipynb.unlink()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sync the chapter notebooks' opening cells and .ipynb copies.")
    parser.add_argument("root", nargs="?", type=Path, default=Path("."),
                        help="repository root holding book.yml and chapters/ (default: the current folder)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; list what is out of sync and exit 1 if anything is")
    args = parser.parse_args(argv)
    report = sync(args.root, check=args.check)
    for line in report:
        print(line)
    if args.check:
        if report:
            print(f"{len(report)} file(s) out of sync: run `make sync-notebooks`.", file=sys.stderr)
            return 1
        print(f"{len(notebook_sources(args.root.resolve()))} notebook(s) in sync.")
    elif not report:
        print("Nothing to change.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

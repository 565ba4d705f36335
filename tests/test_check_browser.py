"""The browser check of the built HTML book (metalearn_lib.tools.check_browser).

A mini book is built with the project's real book.yml (execution off) and Jupyter Book, then opened
in headless Chromium: it must pass, and copies of its page with unrendered math, a broken image or
a request to the network must each fail with the right message.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw, ImageStat

from metalearn_lib.tools.check_browser import Book, check_colab, find_browser, main
from metalearn_lib.tools.sync_notebooks import sync
from notebook_text import FRONT_MATTER

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"

TOC = """format: jb-book
root: intro
chapters:
  - file: 01_demo/demo
"""

INTRO = """# Mini book

A one-page book for testing the browser check.
"""

DEMO = FRONT_MATTER + """
# Demo

Each class is summarised by a prototype $c_k = \\frac{1}{K}\\sum_i f_\\theta(x_i)$, the mean of its
support embeddings.

$$
p(y = k \\mid x) = \\frac{\\exp(-d(f_\\theta(x), c_k))}{\\sum_{k'} \\exp(-d(f_\\theta(x), c_{k'}))}
$$

![A figure](figure.png)

```{code-cell} ipython3
print("not executed")
```
"""

BIB = """@article{stub2026,
  title = {A stub},
  author = {Nobody, A.},
  journal = {Nowhere},
  year = {2026},
}
"""


def build_mini_book(root: Path) -> Path:
    config = yaml.safe_load((ROOT / "book.yml").read_text(encoding="utf-8"))
    config["execute"]["execute_notebooks"] = "off"
    (root / "book.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    chapters = root / "chapters"
    (chapters / "01_demo").mkdir(parents=True)
    shutil.copytree(ROOT / "chapters" / "_vendor", chapters / "_vendor")
    (chapters / "_toc.yml").write_text(TOC, encoding="utf-8")
    (chapters / "intro.md").write_text(INTRO, encoding="utf-8")
    (chapters / "references.bib").write_text(BIB, encoding="utf-8")
    (chapters / "01_demo" / "demo.md").write_text(DEMO, encoding="utf-8")
    image = Image.new("RGB", (160, 90), "white")
    ImageDraw.Draw(image).ellipse((40, 10, 120, 80), fill=(30, 90, 200))
    image.save(chapters / "01_demo" / "figure.png")
    sync(root)  # the real Colab-link and setup cells, and the paired .ipynb the link names
    result = subprocess.run([str(JUPYTER_BOOK), "build", "-W", "--keep-going", str(chapters),
                             "--config", str(root / "book.yml"), "--toc", str(chapters / "_toc.yml")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return chapters / "_build" / "html"


@pytest.fixture(scope="module")
def mini_book(tmp_path_factory) -> Path:
    if find_browser() is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    return build_mini_book(tmp_path_factory.mktemp("book"))


def test_built_book_passes_and_screenshots(mini_book: Path, tmp_path: Path, capsys):
    shots = tmp_path / "shots"
    assert main([str(mini_book), "--screenshots", str(shots), "--search", "prototype"]) == 0, capsys.readouterr()
    assert "Browser check: 5 page(s)" in capsys.readouterr().out  # index, intro, demo, genindex, search
    demo = shots / "01_demo__demo.png"
    with Image.open(demo) as image:
        assert image.size == (1280, 900)
        assert ImageStat.Stat(image.convert("L")).var[0] > 0
    assert (shots / "search.png").is_file()


def test_broken_pages_fail_with_their_reason(mini_book: Path, tmp_path: Path, capsys):
    html = tmp_path / "html"
    shutil.copytree(mini_book, html)
    page = (html / "01_demo" / "demo.html").read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml-full.js" in page and "figure.png" in page
    variants = {
        "no_math.html": page.replace("_static/mathjax/tex-chtml-full.js", "_static/mathjax/missing.js"),
        "no_image.html": page.replace("figure.png", "missing.png").replace(
            "</article>", '<a href="nowhere.html">gone</a></article>', 1),
        "remote.html": page.replace("</head>", '<script src="http://example.com/x.js"></script></head>', 1),
        "throws.html": page.replace("</head>", '<script>throw new Error("boom")</script></head>', 1),
    }
    for name, text in variants.items():
        assert text != page, name
        (html / "01_demo" / name).write_text(text, encoding="utf-8")
    pages = [f"01_demo/{name}" for name in variants]
    config = mini_book.parents[2] / "book.yml"  # the copy lies outside the mini repository
    assert main([str(html), "--config", str(config), "--pages", *pages, "--search", "", "--timeout", "6"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()

    def about(name: str) -> str:
        return "\n".join(line for line in lines if line.startswith(f"01_demo/{name}:"))

    assert "math elements not rendered by MathJax" in about("no_math.html"), out
    assert "local file did not load" in about("no_math.html") and "missing.js" in about("no_math.html"), out
    assert "image did not load: ../_images/missing.png" in about("no_image.html"), out
    assert "link to missing file 01_demo/nowhere.html" in about("no_image.html"), out
    assert "requested from the network: http://example.com/x.js" in about("remote.html"), out
    assert "JavaScript error: Error: boom" in about("throws.html"), out
    assert len(about("throws.html").splitlines()) == 1, out
    # Each variant fails for its own reason only.
    assert "image" not in about("no_math.html") and "network" not in about("no_math.html"), out
    assert "MathJax" not in about("no_image.html") and "network" not in about("no_image.html"), out
    assert "MathJax" not in about("remote.html") and "image" not in about("remote.html"), out


def test_colab_links_follow_book_yml(tmp_path: Path):
    (tmp_path / "book.yml").write_text(
        "repository:\n  url: https://github.com/owner/repo\n  branch: dev\n  path_to_book: chapters\n",
        encoding="utf-8")
    chapters = tmp_path / "chapters" / "01_x"
    chapters.mkdir(parents=True)
    (chapters / "nb.md").write_text(DEMO, encoding="utf-8")
    (chapters / "nb.ipynb").write_text("{}", encoding="utf-8")
    (chapters / "plain.md").write_text(INTRO, encoding="utf-8")
    html = tmp_path / "chapters" / "_build" / "html"
    html.mkdir(parents=True)
    book = Book.find(html)
    assert book.colab_prefix == "https://colab.research.google.com/github/owner/repo/blob/dev/"
    good = "https://colab.research.google.com/github/owner/repo/blob/dev/chapters/01_x/nb.ipynb"
    assert check_colab("01_x/nb.html", [good], book) == []
    assert check_colab("01_x/plain.html", [], book) == []
    [missing] = check_colab("01_x/nb.html", [], book)
    assert "without its Open in Colab link" in missing
    wrong_branch = good.replace("/dev/", "/main/")
    assert any("does not start with" in p for p in check_colab("01_x/nb.html", [wrong_branch], book))
    gone = good.replace("nb.ipynb", "gone.ipynb")
    assert any("not a notebook in the repository" in p for p in check_colab("01_x/plain.html", [gone], book))
    with pytest.raises(ValueError, match="no book.yml"):
        Book.find(Path("/"))

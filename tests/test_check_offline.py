"""The offline check of the built HTML book (metalearn_lib.tools.check_offline)."""

from __future__ import annotations

from pathlib import Path

import yaml

from metalearn_lib.tools.check_offline import check, main

ROOT = Path(__file__).resolve().parents[1]

PAGE = """<!DOCTYPE html>
<html><head>
<link rel="stylesheet" href="_static/theme.css" />
<link rel="preconnect" href="https://fonts.googleapis.com" />
<script src="_static/mathjax/tex-chtml-full.js"></script>
<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
<script>const THEBE_JS_URL = "https://unpkg.com/thebe@0.8.2/lib/index.js";</script>
<script>document.documentElement.dataset.mode = "";</script>
<style>@import url("https://fonts.googleapis.com/css2?family=Lato");</style>
</head><body>
<p>See <a href="https://arxiv.org/abs/1703.03400">MAML</a> and <a href="//example.org/x">this</a>.</p>
<img src="//img.example.org/badge.svg" alt="badge">
<img src="_images/figure.png" alt="figure">
<svg xmlns="http://www.w3.org/2000/svg"><image href="https://example.org/a.png"/></svg>
<div style="background: url('https://example.org/bg.png')"></div>
</body></html>
"""

CSS = """/* Fonts from https://fonts.google.com are not used: */
@font-face { font-family: X; src: url(https://fonts.gstatic.com/x.woff2) format("woff2"); }
@font-face { font-family: Y; src: url("../fonts/y.woff2"); }
.icon { background: url(data:image/svg+xml;base64,AAAA); }
"""


def test_finds_every_remote_load_and_nothing_else(tmp_path: Path):
    (tmp_path / "index.html").write_text(PAGE, encoding="utf-8")
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "theme.css").write_text(CSS, encoding="utf-8")
    found = check(tmp_path)
    text = "\n".join(found)
    for remote in ("fonts.googleapis.com'", "cdn.jsdelivr.net", "unpkg.com/thebe", "css2?family=Lato",
                   "img.example.org", "example.org/a.png", "example.org/bg.png", "fonts.gstatic.com"):
        assert remote in text, remote
    assert len(found) == 8, text
    assert "arxiv.org" not in text and "example.org/x" not in text  # hyperlinks are fine
    for local in ("tex-chtml-full.js", "figure.png", "y.woff2", "data:image", "www.w3.org"):
        assert local not in text, local
    assert main([str(tmp_path)]) == 1


def test_clean_book_passes(tmp_path: Path):
    (tmp_path / "index.html").write_text('<html><head><script src="_static/a.js"></script></head>'
                                         '<body><a href="https://github.com/">repo</a></body></html>',
                                         encoding="utf-8")
    assert check(tmp_path) == []
    assert main([str(tmp_path)]) == 0
    assert main([str(tmp_path / "missing")]) == 2


def test_book_config_serves_vendored_mathjax_and_no_remote_code():
    book = yaml.safe_load((ROOT / "book.yml").read_text(encoding="utf-8"))
    sphinx = book["sphinx"]["config"]
    # mathjax_path is relative to the built _static/, which receives each html_static_path folder's content
    served = [ROOT / "chapters" / folder / sphinx["mathjax_path"] for folder in sphinx["html_static_path"]]
    assert any(path.is_file() for path in served), served
    fonts = ROOT / "chapters/_vendor/mathjax/output/chtml/fonts/woff-v2"
    assert len(list(fonts.glob("MathJax_*.woff"))) >= 20
    # not under chapters/_static: Jupyter Book would add every .js file there to every page
    assert not list((ROOT / "chapters").glob("_static/**/tex-*.js"))
    assert "sphinx_thebe" not in sphinx["extensions"]
    launch = book["launch_buttons"]
    assert launch["thebe"] is False and not any(launch[k] for k in launch if k.endswith("_url"))

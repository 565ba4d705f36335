"""Check that the built HTML book loads nothing from the network.

    python -m metalearn_lib.tools.check_offline [HTML_DIR]      (default: chapters/_build/html)

Reads every ``.html`` and ``.css`` file under ``HTML_DIR`` and lists each reference that a browser
would fetch from a remote host (``http://``, ``https://`` or protocol-relative ``//``) while
showing a page: ``src``/``srcset``/``data``/``poster`` attributes, ``<link href>`` (stylesheets,
preloads, icons, preconnects), ``href`` of SVG ``<image>``/``<use>``/``<script>``, a
``<meta http-equiv="refresh">`` target, ``url(...)``/``@import`` in CSS, ``style`` attributes and
``<style>`` blocks, and URLs written into inline ``<script>`` code. Ordinary ``<a href>``
hyperlinks are fine: following one is the reader's choice. Exits 1 if anything is found.
"""

from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

REMOTE = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
URL_IN_TEXT = re.compile(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s"'`<>)]*""", re.IGNORECASE)
CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)|@import\s+['"]([^'"]+)""", re.IGNORECASE)
FETCHING_ATTRS = ("src", "data", "poster", "background")
HREF_FETCHING_TAGS = ("link", "image", "use", "script", "feimage")
SCRIPT_URL_IGNORE = ("//www.w3.org/",)  # XML namespace names, never fetched


def remote_in_css(text: str) -> list[str]:
    found = []
    for match in CSS_URL.finditer(CSS_COMMENT.sub("", text)):
        url = match.group(1) or match.group(2)
        if REMOTE.match(url):
            found.append(url.strip())
    return found


class _Scanner(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, str]] = []
        self._in: str | None = None  # "script" or "style" while inside one

    def _add(self, what: str):
        self.found.append((self.getpos()[0], what))

    def handle_starttag(self, tag, attrs):
        attrs = {k.lower(): (v or "") for k, v in attrs}
        for name in FETCHING_ATTRS:
            if REMOTE.match(attrs.get(name, "")):
                self._add(f"<{tag} {name}={attrs[name]!r}>")
        for candidate in attrs.get("srcset", "").split(","):
            if REMOTE.match(candidate):
                self._add(f"<{tag} srcset={candidate.strip()!r}>")
        for name in ("href", "xlink:href"):
            if tag in HREF_FETCHING_TAGS and REMOTE.match(attrs.get(name, "")):
                self._add(f"<{tag} {name}={attrs[name]!r}>")
        if tag == "meta" and attrs.get("http-equiv", "").lower() == "refresh":
            target = attrs.get("content", "").partition("url=")[2]
            if REMOTE.match(target):
                self._add(f"<meta refresh to {target!r}>")
        for url in remote_in_css(attrs.get("style", "")):
            self._add(f"<{tag} style=...url({url!r})>")
        if tag in ("script", "style"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "style":
            for url in remote_in_css(data):
                self._add(f"<style> url({url!r})")
        elif self._in == "script":
            for url in URL_IN_TEXT.findall(data):
                if not re.sub(r"^(?:https?:)?", "", url, flags=re.IGNORECASE).startswith(SCRIPT_URL_IGNORE):
                    self._add(f"<script> code naming {url!r}")


def scan_html(text: str) -> list[tuple[int, str]]:
    scanner = _Scanner()
    scanner.feed(text)
    scanner.close()
    return scanner.found


def check(html_dir: Path) -> list[str]:
    """One line per remote load found under ``html_dir``, as ``path:line: what``."""
    problems = []
    for path in sorted(html_dir.rglob("*")):
        if path.suffix not in (".html", ".css") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(html_dir).as_posix()
        if path.suffix == ".html":
            problems += [f"{rel}:{line}: {what}" for line, what in scan_html(text)]
        else:
            problems += [f"{rel}: url({url!r})" for url in remote_in_css(text)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List remote loads in the built HTML book.")
    parser.add_argument("html_dir", nargs="?", type=Path, default=Path("chapters/_build/html"))
    args = parser.parse_args(argv)
    if not (args.html_dir / "index.html").is_file():
        print(f"{args.html_dir}: no built book here (run `make book`)", file=sys.stderr)
        return 2
    problems = check(args.html_dir)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} remote load(s): the HTML book must work offline.", file=sys.stderr)
        return 1
    pages = sum(1 for _ in args.html_dir.rglob("*.html"))
    print(f"Offline check: {pages} HTML pages and their CSS load nothing remote.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

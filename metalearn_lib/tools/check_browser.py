"""Open the built HTML book in headless Chromium and check what a reader would see.

    python -m metalearn_lib.tools.check_browser [HTML_DIR] [--pages a.html b.html ...]
                                                [--screenshots DIR] [--search WORD]

``HTML_DIR`` defaults to ``chapters/_build/html``; ``--pages`` (paths relative to it) defaults to
every page of the book. The browser is Debian's ``chromium``, driven over the Chrome DevTools
Protocol (one websocket, the ``websocket-client`` package). For each page it checks that

* nothing is requested from the network: every request the page makes is ``file:``, ``data:``,
  ``blob:`` or ``about:`` (the browser is also told to resolve no host name and to block
  ``http(s)``/``ws(s)`` URLs, so a page that tries fails at once and sends nothing);
* every local file the page loads exists (stylesheets, scripts, fonts, images);
* MathJax rendered all the math: each ``div.math``/``span.math`` holds an ``mjx-container`` and
  there is no ``mjx-merror`` (a TeX error);
* every ``<img>`` loaded, and no script threw an uncaught exception;
* every ``<a href>`` into the book (sidebar, body, previous/next) names a file that exists, and the
  sidebar has navigation links;
* a notebook page (its source ``chapters/<path>.md`` is a jupytext notebook) has an "Open in Colab"
  link ``https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/chapters/<path>.ipynb``,
  with OWNER/REPO/BRANCH from ``book.yml``'s ``repository`` section, and that ``.ipynb`` exists in
  the repository (the link is not followed); any other Colab link must also name an existing one;
* with ``--screenshots DIR``, the page's screenshot (``DIR/<path with / as __>.png``) is not blank.

Then it opens ``search.html?q=WORD`` and waits until Sphinx lists at least one result.
Prints one line per problem and exits 1 if there is any; exits 2 when it cannot run (no built
book, no ``book.yml`` above ``HTML_DIR``, no Chromium).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from metalearn_lib.tools.sync_notebooks import is_notebook_source

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
LOCAL_SCHEMES = ("file", "data", "blob", "about")
SKIP_DIRS = ("_static", "_sources", "_images", "_downloads")
WINDOW = (1280, 900)
COLAB = "https://colab.research.google.com/github/"
META_REFRESH = re.compile(r"""<meta\s+http-equiv=["']?refresh["']?\s+content=["'][^"']*url=([^"'>\s]+)""",
                          re.IGNORECASE)

# Page state, read in the page after load. Lazy images are switched to eager so that those below
# the fold load too; decode() rejects for an image that did not load (naturalWidth is 0 for an SVG
# without intrinsic size even when it loaded, so SVGs are judged by decode() alone).
STATE_JS = r"""
(async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  const broken = [];
  await Promise.all(imgs.map(async (img) => {
    let ok = true;
    try { await img.decode(); } catch (e) { ok = false; }
    const svg = /\.svg(\?|#|$)/i.test(img.currentSrc || img.src);
    if (!ok || !img.complete || (img.naturalWidth === 0 && !svg)) broken.push(img.getAttribute('src') || '(no src)');
  }));
  const math = Array.from(document.querySelectorAll('div.math, span.math'));
  const unrendered = math.filter(e => !e.querySelector('mjx-container'));
  const errors = Array.from(document.querySelectorAll('mjx-merror, merror'));
  const sidebar = document.querySelectorAll('.bd-sidebar-primary a[href], nav.bd-docs-nav a[href]').length;
  return {
    ready: document.readyState,
    math: math.length,
    unrendered: unrendered.length,
    firstUnrendered: unrendered.length ? unrendered[0].textContent.trim().slice(0, 80) : '',
    mathErrors: errors.map(e => (e.getAttribute('data-mjx-error') || e.textContent).trim().slice(0, 80)),
    brokenImages: broken,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    sidebarLinks: sidebar,
  };
})()
"""

SEARCH_JS = r"""
(() => {
  const items = document.querySelectorAll('#search-results ul.search li, ul.search li');
  const status = document.querySelector('#search-results p.search-summary, #search-results > p');
  return {hits: items.length, status: status ? status.textContent.trim() : ''};
})()
"""


class BrowserError(RuntimeError):
    """Chromium could not be started or stopped answering."""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _local_http(url: str, method: str = "GET", timeout: float = 10.0) -> dict:
    # The DevTools endpoint is on 127.0.0.1: never go through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, method=method), timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


class Browser:
    """Headless Chromium with remote debugging, as a context manager that always kills it."""

    def __init__(self, binary: str, timeout: float = 30.0):
        self.binary, self.timeout = binary, timeout
        self.process: subprocess.Popen | None = None
        self.profile: str | None = None
        self.port: int | None = None

    def __enter__(self) -> "Browser":
        self.profile = tempfile.mkdtemp(prefix="check_browser-")
        self._stderr = open(Path(self.profile) / "stderr.txt", "w+b")
        args = [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", "--allow-file-access-from-files",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                "--disable-dev-shm-usage",
                # Nothing leaves the machine: no host name resolves (IP literals are blocked per page).
                "--host-resolver-rules=MAP * ~NOTFOUND", "about:blank"]
        try:
            # Own session: the browser and every helper process it forks form one process group.
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=self._stderr, start_new_session=True)
            self.port = self._read_port()
        except BaseException:
            self.close()
            raise
        return self

    def _read_port(self) -> int:
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"{self.binary} exited with code {self.process.returncode}: {self._tail()}")
            if port_file.is_file():
                first = port_file.read_text().split("\n", 1)[0].strip()
                if first.isdigit():
                    return int(first)
            time.sleep(0.05)
        raise BrowserError(f"{self.binary} wrote no DevToolsActivePort within {self.timeout:.0f} s: {self._tail()}")

    def _tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "(no output)"

    def new_page(self) -> "Page":
        target = _local_http(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT",
                             timeout=self.timeout)
        return Page(target["webSocketDebuggerUrl"], timeout=self.timeout)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.process is not None:
            # Helpers (zygote, renderers) may outlive the main process by a moment: end the group.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
        self.process = None

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Page:
    """One browser tab, spoken to over its DevTools websocket. Records every request it makes."""

    ws_url: str
    timeout: float = 30.0
    requests: list[str] = field(default_factory=list)
    failed_files: list[str] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)

    def __post_init__(self):
        import websocket  # websocket-client

        self._ws = websocket.create_connection(self.ws_url, timeout=self.timeout, suppress_origin=True)
        self._id = 0
        self._in_flight: dict[str, str] = {}
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Network.enable")
        # Belt and braces with --host-resolver-rules: requests to IP literals fail too. Blocked
        # requests are still reported to us (requestWillBeSent) before they fail.
        self.send("Network.setBlockedURLs", urls=["http://*", "https://*", "ws://*", "wss://*", "ftp://*"])
        self.send("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                  deviceScaleFactor=1, mobile=False)

    def close(self) -> None:
        self._ws.close()

    def _receive(self, deadline: float) -> dict:
        import websocket

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self._ws.settimeout(remaining)
        try:
            message = json.loads(self._ws.recv())
        except websocket.WebSocketTimeoutException as exc:
            raise TimeoutError from exc
        except (websocket.WebSocketException, OSError) as exc:
            raise BrowserError(f"lost the connection to Chromium ({exc.__class__.__name__}: {exc})") from exc
        if "method" in message:
            self._on_event(message)
        return message

    def _on_event(self, message: dict) -> None:
        method, params = message["method"], message.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            self.requests.append(url)
            self._in_flight[params["requestId"]] = url
        elif method == "Network.loadingFinished":
            self._in_flight.pop(params["requestId"], None)
        elif method == "Network.loadingFailed":
            url = self._in_flight.pop(params["requestId"], "")
            if url.startswith("file:") and not params.get("canceled"):
                self.failed_files.append(url)
        else:
            self.events.append(message)

    def send(self, method: str, wait: float | None = None, **params) -> dict:
        """Call ``method`` with ``params``; its result (events read meanwhile are recorded)."""
        self._id += 1
        my_id = self._id
        import websocket

        try:
            self._ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        except (websocket.WebSocketException, OSError) as exc:
            raise BrowserError(f"lost the connection to Chromium ({exc.__class__.__name__}: {exc})") from exc
        deadline = time.monotonic() + (wait or self.timeout)
        while True:
            try:
                message = self._receive(deadline)
            except TimeoutError:
                raise BrowserError(f"no answer to {method} within {wait or self.timeout:.0f} s") from None
            if message.get("id") == my_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message', message['error'])}")
                return message.get("result", {})

    def wait_event(self, name: str, timeout: float) -> dict | None:
        """The first event called ``name`` (received before or now), or None after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == name:
                    return self.events.pop(i)["params"]
            try:
                self._receive(deadline)
            except TimeoutError:
                return None

    def settle(self, idle: float = 0.3, timeout: float = 5.0) -> None:
        """Read events until no request has been in flight for ``idle`` s (at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self._in_flight:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= idle:
                return
            try:
                self._receive(min(deadline, time.monotonic() + idle))
            except TimeoutError:
                pass

    def navigate(self, url: str, timeout: float) -> str | None:
        """Load ``url`` and wait for its load event; the error text when it failed."""
        self.requests.clear()
        self.failed_files.clear()
        self.events.clear()
        self._in_flight.clear()
        result = self.send("Page.navigate", wait=timeout, url=url)
        if result.get("errorText"):
            return result["errorText"]
        if self.wait_event("Page.loadEventFired", timeout) is None:
            return f"no load event within {timeout:.0f} s"
        return None

    def evaluate(self, expression: str, timeout: float = 10.0):
        result = self.send("Runtime.evaluate", wait=timeout + 5, expression=expression, returnByValue=True,
                           awaitPromise=True, timeout=timeout * 1000)
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails'].get('text', '')}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> str | None:
        """Save a PNG of the viewport; a problem description when it is blank."""
        from PIL import Image, ImageStat

        data = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        with Image.open(io.BytesIO(data)) as image:
            variance = ImageStat.Stat(image.convert("L")).var[0]
        return None if variance > 0 else f"screenshot {path} is blank (one colour)"


@dataclass(frozen=True)
class Book:
    """Where the book's sources live and where its Colab links must point."""

    root: Path          # repository root (holds book.yml)
    source_dir: Path    # root / path_to_book
    path_to_book: str
    colab_prefix: str   # https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/

    @classmethod
    def find(cls, html_dir: Path, config: Path | None = None) -> "Book":
        if config is None:
            for folder in [html_dir.resolve(), *html_dir.resolve().parents]:
                if (folder / "book.yml").is_file():
                    config = folder / "book.yml"
                    break
            else:
                raise ValueError(f"no book.yml in {html_dir} or above it: pass --config PATH/book.yml")
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        repo = data.get("repository") or {}
        url, branch = str(repo.get("url", "")), str(repo.get("branch", ""))
        parsed = urllib.parse.urlparse(url)
        parts = [p for p in parsed.path.split("/") if p]
        if parsed.netloc != "github.com" or len(parts) != 2 or not branch:
            raise ValueError(f"{config}: repository.url must be https://github.com/OWNER/REPO and "
                             f"repository.branch must be set; got {url!r}, {branch!r}")
        path_to_book = str(repo.get("path_to_book", "chapters")).strip("/")
        root = config.resolve().parent
        return cls(root, root / path_to_book, path_to_book,
                   f"{COLAB}{parts[0]}/{parts[1].removesuffix('.git')}/blob/{branch}/")


def default_pages(html_dir: Path) -> list[str]:
    return sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
                  if not set(p.relative_to(html_dir).parts[:-1]) & set(SKIP_DIRS))


def _file_of(url: str) -> Path | None:
    """The local path a ``file:`` URL names (query and fragment dropped), else None."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        return None
    return Path(urllib.parse.unquote(parsed.path))


def _shown(path: Path, html_dir: Path) -> str:
    """``path`` relative to the book when it lies inside it."""
    try:
        return path.relative_to(html_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def _is_network(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme.lower() not in LOCAL_SCHEMES


def _wait_state(page: Page, timeout: float) -> dict:
    """Poll the page until MathJax has rendered every formula (or ``timeout`` s have passed)."""
    deadline = time.monotonic() + timeout
    while True:
        state = page.evaluate(STATE_JS, timeout=max(1.0, deadline - time.monotonic()))
        if (state["unrendered"] == 0 and state["ready"] == "complete") or time.monotonic() >= deadline:
            return state
        page.settle(idle=0.2, timeout=0.5)


def check_links(rel: str, links: list[str], html_dir: Path) -> list[str]:
    problems, seen = [], set()
    for url in links:
        path = _file_of(url)
        if path is None or path in seen:
            continue
        seen.add(path)
        if not path.exists():
            problems.append(f"{rel}: link to missing file {_shown(path, html_dir)}")
    return problems


def check_colab(rel: str, links: list[str], book: Book) -> list[str]:
    problems = []
    colab = sorted({u for u in links if u.startswith("https://colab.research.google.com/")})
    for url in colab:
        if not url.startswith(book.colab_prefix):
            problems.append(f"{rel}: Colab link {url} does not start with {book.colab_prefix} (book.yml repository)")
            continue
        in_repo = url[len(book.colab_prefix):].split("#")[0].split("?")[0]
        if not in_repo.endswith(".ipynb") or not (book.root / in_repo).is_file():
            problems.append(f"{rel}: Colab link names {in_repo}, which is not a notebook in the repository")
    source = book.source_dir / Path(rel).with_suffix(".md")
    if is_notebook_source(source):
        wanted = f"{book.colab_prefix}{book.path_to_book}/{Path(rel).with_suffix('.ipynb').as_posix()}"
        if wanted not in colab:
            problems.append(f"{rel}: notebook page without its Open in Colab link {wanted}")
    return problems


def check_page(page: Page, html_dir: Path, rel: str, book: Book, screenshots: Path | None,
               timeout: float) -> list[str]:
    path = (html_dir / rel).resolve()
    if not path.is_file():
        return [f"{rel}: no such page"]
    text = path.read_text(encoding="utf-8", errors="replace")
    redirect = META_REFRESH.search(text)
    if redirect and len(text) < 2000:  # a redirect stub (index.html): its target must exist
        target = urllib.parse.urljoin(path.as_uri(), redirect.group(1))
        if _is_network(target):
            return [f"{rel}: redirects to the network ({target})"]
        return [] if _file_of(target).exists() else [f"{rel}: redirects to missing {redirect.group(1)}"]
    try:
        return _check_loaded_page(page, html_dir, path, rel, book, screenshots, timeout)
    except BrowserError as exc:  # a page that hangs the tab: say so and go on with the next one
        return [f"{rel}: {exc}"]


def _check_loaded_page(page: Page, html_dir: Path, path: Path, rel: str, book: Book, screenshots: Path | None,
                       timeout: float) -> list[str]:
    error = page.navigate(path.as_uri(), timeout)
    if error:
        return [f"{rel}: did not load ({error})"]
    problems = []
    state = _wait_state(page, timeout)
    page.settle()
    for url in dict.fromkeys(page.requests):
        if _is_network(url):
            problems.append(f"{rel}: requested from the network: {url}")
    for event in page.events:
        if event["method"] == "Runtime.exceptionThrown":
            details = event["params"]["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            problems.append(f"{rel}: JavaScript error: {text.splitlines()[0] if text else '(no message)'}")
    for url in dict.fromkeys(page.failed_files):
        problems.append(f"{rel}: local file did not load: {_shown(_file_of(url), html_dir)}")
    if state["unrendered"]:
        problems.append(f"{rel}: {state['unrendered']} of {state['math']} math elements not rendered by MathJax "
                        f"after {timeout:.0f} s (first: {state['firstUnrendered']!r})")
    for message in state["mathErrors"]:
        problems.append(f"{rel}: MathJax error: {message}")
    for src in state["brokenImages"]:
        problems.append(f"{rel}: image did not load: {src}")
    if state["sidebarLinks"] == 0:
        problems.append(f"{rel}: no navigation links in the sidebar")
    problems += check_links(rel, state["links"], html_dir)
    problems += check_colab(rel, state["links"], book)
    if screenshots is not None:
        shot = page.screenshot(screenshots / (rel.removesuffix(".html").replace("/", "__") + ".png"))
        if shot:
            problems.append(f"{rel}: {shot}")
    return problems


def check_search(page: Page, html_dir: Path, word: str, screenshots: Path | None, timeout: float) -> list[str]:
    search = html_dir / "search.html"
    if not search.is_file():
        return ["search.html: missing (the book has no search page)"]
    error = page.navigate(f"{search.resolve().as_uri()}?q={urllib.parse.quote(word)}", timeout)
    if error:
        return [f"search.html: did not load ({error})"]
    deadline = time.monotonic() + timeout
    state = page.evaluate(SEARCH_JS)
    while state["hits"] == 0 and time.monotonic() < deadline:
        page.settle(idle=0.2, timeout=0.5)
        state = page.evaluate(SEARCH_JS)
    page.settle()
    problems = [f"search.html: requested from the network: {u}" for u in dict.fromkeys(page.requests)
                if _is_network(u)]
    if state["hits"] == 0:
        problems.append(f"search.html?q={word}: no search results after {timeout:.0f} s ({state['status']!r})")
    if screenshots is not None:
        shot = page.screenshot(screenshots / "search.png")
        if shot:
            problems.append(f"search.html: {shot}")
    return problems


def check(html_dir: Path, pages: list[str] | None = None, screenshots: Path | None = None,
          search: str | None = "prototype", config: Path | None = None, browser: str | None = None,
          timeout: float = 15.0, log=None) -> list[str]:
    """One line per problem found in ``pages`` of the book built in ``html_dir`` (all pages if None).

    Raises ``ValueError`` when the check cannot run (no book.yml found, no Chromium).
    """
    html_dir = Path(html_dir)
    book = Book.find(html_dir, config)
    binary = browser or find_browser()
    if binary is None:
        raise ValueError(f"no Chromium found (tried {', '.join(BROWSERS)}): install Debian's chromium package")
    pages = default_pages(html_dir) if pages is None else pages
    problems: list[str] = []
    with Browser(binary) as chromium:
        page = chromium.new_page()
        try:
            for rel in pages:
                start = time.monotonic()
                found = check_page(page, html_dir, rel, book, screenshots, timeout)
                problems += found
                if log:
                    log(f"{rel}: {'ok' if not found else f'{len(found)} problem(s)'} "
                        f"({time.monotonic() - start:.1f} s)")
            if search:
                try:
                    problems += check_search(page, html_dir, search, screenshots, timeout)
                except BrowserError as exc:
                    problems.append(f"search.html: {exc}")
        finally:
            page.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the built HTML book in headless Chromium.")
    parser.add_argument("html_dir", nargs="?", type=Path, default=Path("chapters/_build/html"))
    parser.add_argument("--pages", nargs="+", metavar="PAGE", help="pages relative to HTML_DIR (default: all)")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="save a PNG of each page here")
    parser.add_argument("--search", default="prototype", metavar="WORD",
                        help="word to search for in search.html (default: prototype; '' skips)")
    parser.add_argument("--config", type=Path, help="book.yml (default: the first one in HTML_DIR or above)")
    parser.add_argument("--browser", help="Chromium binary (default: chromium on PATH)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait per page (default: 15)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each page's result and time")
    args = parser.parse_args(argv)
    if not (args.html_dir / "index.html").is_file():
        print(f"{args.html_dir}: no built book here (run `make book`)", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        problems = check(args.html_dir, args.pages, args.screenshots, args.search or None, args.config,
                         args.browser, args.timeout,
                         log=(lambda line: print(line, file=sys.stderr)) if args.verbose else None)
    except (ValueError, BrowserError) as exc:
        print(f"check_browser: {exc}", file=sys.stderr)
        return 2
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} problem(s) seen in the browser.", file=sys.stderr)
        return 1
    count = len(args.pages or default_pages(args.html_dir))
    print(f"Browser check: {count} page(s) and search rendered offline in Chromium "
          f"({time.monotonic() - start:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

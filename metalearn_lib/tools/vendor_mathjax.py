"""Refresh the MathJax copy that the offline HTML book serves.

    python -m metalearn_lib.tools.vendor_mathjax [ROOT] [--tarball mathjax-3.2.2.tgz]

Fetches the npm package ``mathjax@3.2.2`` with ``npm pack`` (or uses a tarball already at hand),
checks it against the integrity hash pinned below, and replaces ``ROOT/chapters/_vendor/mathjax``
with the few files the book needs: the single-file TeX + CommonHTML component (all TeX extensions
built in, so nothing is loaded on demand) and the CommonHTML web fonts, which MathJax looks for
beside that file. ``book.yml`` copies the folder to ``_static/mathjax`` and points ``mathjax_path``
at it, so no page asks a CDN for anything.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "mathjax"
VERSION = "3.2.2"
# npm's dist.integrity for mathjax@3.2.2
INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
# What is kept, as paths inside the package's es5/ folder (and the licence from its top).
COMPONENT = "tex-chtml-full.js"
FONTS = "output/chtml/fonts/woff-v2/"
DEST = Path("chapters") / "_vendor" / "mathjax"


def integrity_of(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def npm_pack(workdir: Path) -> Path:
    """Download the package tarball with the npm client into ``workdir``."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not on PATH; install Node.js/npm or pass --tarball.")
    out = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=workdir,
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()
    return workdir / out[-1]


def wanted(name: str) -> str | None:
    """Map a tarball member name to its path under DEST, or None to drop it."""
    if name == "package/LICENSE":
        return "LICENSE"
    prefix = "package/es5/"
    if not name.startswith(prefix):
        return None
    rel = name[len(prefix):]
    if rel == COMPONENT or (rel.startswith(FONTS) and rel.endswith(".woff")):
        return rel
    return None


def vendor(root: Path, tarball: Path) -> list[Path]:
    got = integrity_of(tarball)
    if got != INTEGRITY:
        raise SystemExit(f"{tarball}: integrity {got} is not the pinned {INTEGRITY}")
    dest = root / DEST
    if dest.exists():
        shutil.rmtree(dest)
    written = []
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            rel = wanted(member.name) if member.isfile() else None
            if rel is None:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            written.append(target)
    (dest / "SOURCE.txt").write_text(
        f"npm package {PACKAGE}@{VERSION} ({INTEGRITY}), Apache-2.0 (see LICENSE).\n"
        f"Kept: es5/{COMPONENT} and es5/{FONTS}*.woff, with es5/ stripped from the paths.\n"
        "Regenerate with: python -m metalearn_lib.tools.vendor_mathjax\n")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path("."),
                        help="repository root (default: the current folder)")
    parser.add_argument("--tarball", type=Path, help="use this mathjax-3.2.2.tgz instead of npm pack")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or npm_pack(Path(tmp))
        written = vendor(args.root.resolve(), tarball)
    if not any(p.name == COMPONENT for p in written):
        raise SystemExit(f"{COMPONENT} was not in the package")
    print(f"MathJax {VERSION}: {len(written)} files in {args.root / DEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where data and caches live, and the one download routine (with checksums)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

DATA_ENV = "METALEARN_DATA"
CACHE_ENV = "METALEARN_CACHE"


class DataNotFoundError(FileNotFoundError):
    """Raised when a data set is neither on disk nor allowed to be downloaded."""


def cache_dir() -> Path:
    """Per-user cache folder: ``$METALEARN_CACHE``, else ``$XDG_CACHE_HOME/metalearn_lib``, else ``~/.cache/metalearn_lib``."""
    if os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
        path = base / "metalearn_lib"
    return path


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the ``root`` argument, else ``$METALEARN_DATA``, else ``<cache>/data``."""
    if root is not None:
        return Path(root).expanduser().resolve()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser().resolve()
    return cache_dir() / "data"


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right MD5 is already there."""
    if dest.exists() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URLs
                shutil.copyfileobj(response, tmp)
        except OSError as error:
            Path(tmp.name).unlink(missing_ok=True)
            raise DataNotFoundError(f"could not download {url}: {error}. Are you online? "
                                    f"Otherwise put the files under {dest.parent} or set {DATA_ENV}.") from error
    got = md5sum(Path(tmp.name))
    if got != md5:
        Path(tmp.name).unlink(missing_ok=True)
        raise DataNotFoundError(f"{url} downloaded with MD5 {got}, expected {md5}: the file is corrupt or changed; try again.")
    os.replace(tmp.name, dest)
    return dest


def download_and_extract(url: str, folder: Path, md5: str) -> None:
    """Download a zip into ``folder`` (checked by MD5) and extract it there."""
    archive = fetch(url, folder / url.rsplit("/", 1)[-1], md5)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)


def atomic_torch_save(obj, path: Path) -> None:
    """Write a cache file so that concurrent readers (pytest-xdist workers) never see half of it."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)

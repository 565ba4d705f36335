"""Lake's 20 official 20-way one-shot classification runs (Lake et al., 2015, Science).

Each run has 20 *training* images (one drawing of each of 20 characters from one alphabet of the
evaluation set) and 20 *test* images (another drawing of each), with an answer key
``class_labels.txt``. Within an alphabet the characters look alike, which makes this the hardest
standard Omniglot test. People score 95.5%; Koch et al.'s Siamese network 92%.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metalearn_lib.data.omniglot import OFFICIAL, load_png
from metalearn_lib.data.paths import DATA_ENV, DataNotFoundError, data_root, fetch

RUNS_URL = f"{OFFICIAL}/one-shot-classification/all_runs.zip"
RUNS_MD5 = "e8996daecdf12afeeb4a53a179f06b19"


@dataclass
class LakeRun:
    """One run: one support image per class (labels 0..19) and 20 queries with their true labels."""

    name: str
    x_support: Tensor  # [20, 1, H, W], float in [0, 1], strokes 1
    y_support: Tensor  # [20]
    x_query: Tensor    # [20, 1, H, W]
    y_query: Tensor    # [20]

    @property
    def ways(self) -> int:
        return len(self.y_support)


def lake_runs(image_size: int = 28, root: str | os.PathLike | None = None, download: bool = False) -> list[LakeRun]:
    """The 20 runs, read from ``<root>/lake-small/all_runs.zip`` (downloaded there if asked)."""
    archive = data_root(root) / "lake-small" / "all_runs.zip"
    if not archive.exists():
        if not download:
            raise DataNotFoundError(f"Lake's one-shot runs not found at {archive}. Set {DATA_ENV} to the folder that "
                                    f"holds lake-small/all_runs.zip, pass root=..., or download=True.")
        fetch(RUNS_URL, archive, RUNS_MD5)
    runs = []
    with zipfile.ZipFile(archive) as zf:
        names = sorted({n.split("/")[0] for n in zf.namelist() if n.startswith("run")})
        for run in names:
            def image(member: str) -> Tensor:
                return torch.from_numpy(load_png(io.BytesIO(zf.read(member)), image_size).astype(np.float32) / 255)[None]

            train_members = sorted(n for n in zf.namelist() if n.startswith(f"{run}/training/") and n.endswith(".png"))
            index = {m: i for i, m in enumerate(train_members)}
            pairs = [line.split() for line in zf.read(f"{run}/class_labels.txt").decode().splitlines() if line.strip()]
            runs.append(LakeRun(
                name=run,
                x_support=torch.stack([image(m) for m in train_members]),
                y_support=torch.arange(len(train_members)),
                x_query=torch.stack([image(test) for test, _ in pairs]),
                y_query=torch.tensor([index[train] for _, train in pairs]),
            ))
    return runs

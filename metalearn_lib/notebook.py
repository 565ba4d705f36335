"""What every notebook's setup cell calls: device, scale switch, seeds, plot style."""

from __future__ import annotations

import os
import random

import torch

SCALES = ("quick", "full")


def get_device(prefer: str | None = None) -> torch.device:
    """``cuda`` when a GPU is present (or ``prefer`` says so), else ``cpu``."""
    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def get_scale() -> str:
    """The scale switch: ``quick`` (minutes on a laptop CPU) or ``full`` (the papers' settings, GPU).

    ``METALEARN_SCALE`` overrides; otherwise ``full`` on a GPU and ``quick`` on a CPU.
    """
    scale = os.environ.get("METALEARN_SCALE", "").strip().lower()
    if scale:
        if scale not in SCALES:
            raise ValueError(f"METALEARN_SCALE={scale!r} is not a scale; set it to one of {SCALES}.")
        return scale
    return "full" if torch.cuda.is_available() else "quick"


def seed_everything(seed: int = 0) -> None:
    """Seed Python, torch (and numpy when installed) so a notebook run repeats itself."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a dependency, but stay importable without it
        pass


def setup_notebook(seed: int = 0, verbose: bool = True) -> tuple[torch.device, str]:
    """Pick the device and scale, seed everything and set a readable plot style."""
    device, scale = get_device(), get_scale()
    seed_everything(seed)
    try:
        import matplotlib.pyplot as plt

        plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                             "axes.spines.top": False, "axes.spines.right": False})
    except ImportError:  # pragma: no cover
        pass
    if verbose:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        print(f"device: {device} [{name}]   scale: {scale}   torch {torch.__version__}")
    return device, scale

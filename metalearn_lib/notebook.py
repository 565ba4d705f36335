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


#: The tolerance of checks on a GPU. cuDNN runs float32 convolutions in TF32 (a 10-bit mantissa) by
#: default, and two code paths for the same quantity (a hand-built loop, the library's batched version)
#: pick different kernels. On an H200 the book's Conv-4 checks differed by up to 1.6e-4 (MAML's adapted
#: logits) and 1.2e-4 (ANIL's meta-gradient); a real mistake changes values by far more than 1e-3.
GPU_TOLERANCE = 1e-3


def check_tolerance(device: torch.device | str, rtol: float = 1.3e-6, atol: float = 1e-5) -> dict[str, float]:
    """``rtol`` and ``atol`` for ``torch.testing.assert_close`` when a notebook checks that what it built
    equals the library's version: the given float32 tolerances on a CPU, at least :data:`GPU_TOLERANCE`
    on a GPU (see there why)."""
    if torch.device(device).type == "cpu":
        return {"rtol": rtol, "atol": atol}
    return {"rtol": max(rtol, GPU_TOLERANCE), "atol": max(atol, GPU_TOLERANCE)}

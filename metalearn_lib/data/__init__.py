"""Data: real Omniglot and its splits, Lake's one-shot runs, sinusoid tasks, image folders, Fashion-MNIST."""

from metalearn_lib.data.base import ClassImages
from metalearn_lib.data.fashion_mnist import fashion_mnist
from metalearn_lib.data.folder import image_folder
from metalearn_lib.data.lake_runs import LakeRun, lake_runs
from metalearn_lib.data.omniglot import SPLITS, SUBSETS, load_omniglot_sets, omniglot, omniglot_folder, omniglot_small
from metalearn_lib.data.paths import DATA_ENV, CACHE_ENV, DataNotFoundError, cache_dir, data_root
from metalearn_lib.data.sinusoid import SinusoidSampler, SinusoidTask

__all__ = ["ClassImages", "image_folder", "LakeRun", "lake_runs", "SPLITS", "SUBSETS", "load_omniglot_sets",
           "omniglot", "omniglot_folder", "omniglot_small", "DATA_ENV", "CACHE_ENV", "DataNotFoundError",
           "cache_dir", "data_root", "SinusoidSampler", "SinusoidTask", "fashion_mnist"]

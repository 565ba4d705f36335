"""metalearn_lib: the companion library of *Meta-Learning for Few-Shot Image Classification*.

The pieces follow the order in which the book builds them (after learn2learn's separation):

- :mod:`metalearn_lib.data`        real Omniglot, its splits, Lake's one-shot runs, sinusoids, image folders
- :mod:`metalearn_lib.episodes`    N-way K-shot episodes and meta-batches of them
- :mod:`metalearn_lib.models`      the Conv-4 backbone (module and functional use)
- :mod:`metalearn_lib.algorithms`  one file per algorithm, all behind one small interface
- :mod:`metalearn_lib.training`    the one training loop; :mod:`metalearn_lib.evaluation` the one evaluator
- :mod:`metalearn_lib.cli`         ``python -m metalearn_lib train|evaluate ...``
"""

__version__ = "0.1.0"

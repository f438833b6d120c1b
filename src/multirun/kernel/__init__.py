"""The ensemble correlation kernel, streamed over models as one GEMM per chunk.

Layout (read in this order):

* :mod:`~multirun.kernel.reference`: the write-up's formula in memory (``normalize``,
  ``ensemble_kernel``) and the exact ``log_probabilities``;
* :mod:`~multirun.kernel.shards`: :class:`ShardedLogits`, logit shards memory-mapped as
  one (models, examples, classes) stack;
* :mod:`~multirun.kernel.engine`: the streaming engine and its :class:`KernelOptions`;
* :mod:`~multirun.kernel.search`: ``neighbours``, ``subset_neighbours``, ``dense_kernel``
  and the neighbour files;
* :mod:`~multirun.kernel.build` and ``fused.cpp``: the fused CPU loops, built once per
  machine (``python -m multirun.kernel.build``).

The cosine-similarity baseline lives with the k-NN code (:func:`multirun.knn.cosine_neighbours`).
"""

from __future__ import annotations

import sys
import types

from multirun.kernel import build
from multirun.kernel.engine import PRECISIONS, KernelOptions
from multirun.kernel.reference import (
    STD_FLOOR,
    ensemble_kernel,
    log_probabilities,
    normalize,
)
from multirun.kernel.search import (
    dense_kernel,
    load_neighbours,
    neighbours,
    save_neighbours,
    subset_neighbours,
)
from multirun.kernel.shards import SUPPORTED_DTYPES, ShardedLogits

__all__ = [
    "PRECISIONS", "STD_FLOOR", "SUPPORTED_DTYPES", "KernelOptions", "ShardedLogits",
    "cosine_neighbours", "dense_kernel", "ensemble_kernel", "load_neighbours",
    "log_probabilities", "neighbours", "normalize", "save_neighbours", "subset_neighbours",
]


def cosine_neighbours(*args, **kwargs):
    """:func:`multirun.knn.cosine_neighbours` (kept importable from here)."""
    from multirun.knn import cosine_neighbours as cosine

    return cosine(*args, **kwargs)


def _fused():
    """The compiled CPU kernels, or None (:func:`multirun.kernel.build.fused`)."""
    return build.fused()


class _Package(types.ModuleType):
    """``multirun.kernel._fused_module`` reads and sets :mod:`build`'s cached extension
    (None: not tried yet, False: off), so that tests and benchmarks switch the fused loops
    off here."""

    @property
    def _fused_module(self):
        return build._fused_module

    @_fused_module.setter
    def _fused_module(self, value):
        build._fused_module = value


sys.modules[__name__].__class__ = _Package

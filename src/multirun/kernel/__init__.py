"""The ensemble correlation kernel, streamed over models as one GEMM per chunk.

Layout (read in this order):

* :mod:`~multirun.kernel.reference`: the write-up's formula in memory (``normalize``,
  ``ensemble_kernel``) and the exact ``log_probabilities``;
* :mod:`~multirun.kernel.shards`: :class:`ShardedLogits`, logit shards memory-mapped as
  one (models, examples, classes) stack;
* :mod:`~multirun.kernel.engine`: the streaming engine and its :class:`KernelOptions`;
* :mod:`~multirun.kernel.search`: ``neighbours``, ``subset_neighbours``, ``dense_kernel``;
* :mod:`~multirun.kernel.files`: the neighbour files (``save_neighbours``,
  ``load_neighbours``; numpy only);
* :mod:`~multirun.kernel.build` and ``fused.cpp``: the fused CPU loops, built once per
  machine (``python -m multirun.kernel.build``).

The cosine-similarity baseline lives with the k-NN code (:func:`multirun.knn.cosine_neighbours`).

The names below are loaded on first use: the jobs that only read neighbour files and logit
shards (k-NN, figures, studies, checks) import :mod:`~multirun.kernel.files` and
:mod:`~multirun.kernel.shards` and never pay for torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what is where; multirun.codehash reads these imports as the package's code
    from multirun.kernel.engine import PRECISIONS, KernelOptions
    from multirun.kernel.files import load_neighbours, save_neighbours
    from multirun.kernel.reference import (
        STD_FLOOR,
        ensemble_kernel,
        log_probabilities,
        normalize,
    )
    from multirun.kernel.search import dense_kernel, neighbours, subset_neighbours
    from multirun.kernel.shards import SUPPORTED_DTYPES, ShardedLogits

__all__ = [
    "PRECISIONS", "STD_FLOOR", "SUPPORTED_DTYPES", "KernelOptions", "ShardedLogits",
    "cosine_neighbours", "dense_kernel", "ensemble_kernel", "load_neighbours",
    "log_probabilities", "neighbours", "normalize", "save_neighbours", "subset_neighbours",
]

# the modules of the names above, the numpy-only ones first
_MODULES = ("files", "shards", "reference", "engine", "search")


def __getattr__(name: str):
    """Load ``name`` from its module on first use (the numpy-only modules are tried first).
    Any other name (a submodule: ``from multirun.kernel import build``) is not here yet."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for sub in _MODULES:
        module = importlib.import_module(f"{__name__}.{sub}")
        globals().update({k: v for k, v in vars(module).items() if k in __all__})
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cosine_neighbours(*args, **kwargs):
    """:func:`multirun.knn.cosine_neighbours` (kept importable from here)."""
    from multirun.knn import cosine_neighbours as cosine

    return cosine(*args, **kwargs)


def _fused():
    """The compiled CPU kernels, or None (:func:`multirun.kernel.build.fused`)."""
    from multirun.kernel import build

    return build.fused()


class _Package(types.ModuleType):
    """``multirun.kernel._fused_module`` reads and sets :mod:`build`'s cached extension
    (None: not tried yet, False: off), so that tests and benchmarks switch the fused loops
    off here."""

    @property
    def _fused_module(self):
        from multirun.kernel import build

        return build._fused_module

    @_fused_module.setter
    def _fused_module(self, value):
        from multirun.kernel import build

        build._fused_module = value


sys.modules[__name__].__class__ = _Package

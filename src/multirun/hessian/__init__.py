"""Hessian spectra of the training loss: the operator, Lanczos/SLQ, effective dimensionality.

Three modules, one idea each:

* :mod:`multirun.hessian.operator`: :class:`HessianOperator`, the Hessian of the mean
  cross-entropy as HVPs (conventions: eval mode, parameter selection, precision);
* :mod:`multirun.hessian.lanczos`: :func:`lanczos` / :func:`spectrum` (top and bottom
  eigenvalues) and :func:`slq` (stochastic Lanczos quadrature);
* :mod:`multirun.hessian.effdim`: effective dimensionality, from eigenvalues (a lower
  bound when they are the converged top ones) and over the whole spectrum by SLQ, and
  :func:`spectral_density` (numpy only).

The names below are loaded on first use: the jobs that read stored spectra (effective
dimensions, figures) import :mod:`~multirun.hessian.effdim` and never pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what is where; multirun.codehash reads these imports as the package's code
    from multirun.hessian.effdim import (
        effective_dimension,
        effective_dimension_probes,
        effective_dimension_slq,
        effective_dimensions,
        load_effdim_csv,
        load_spectrum,
        spectral_density,
    )
    from multirun.hessian.lanczos import (
        converged_mask,
        lanczos,
        lanczos_block,
        operator_spectrum,
        rademacher_probes,
        slq,
        spectrum,
    )
    from multirun.hessian.operator import HVP_METHODS, PARAM_SELECTIONS, HessianOperator

__all__ = [
    "HVP_METHODS",
    "PARAM_SELECTIONS",
    "HessianOperator",
    "converged_mask",
    "effective_dimension",
    "effective_dimension_probes",
    "effective_dimension_slq",
    "effective_dimensions",
    "lanczos",
    "lanczos_block",
    "load_effdim_csv",
    "load_spectrum",
    "operator_spectrum",
    "rademacher_probes",
    "slq",
    "spectral_density",
    "spectrum",
]


def __getattr__(name: str):
    """Load ``name`` from its module on first use (effdim, numpy only, is tried first)."""
    for sub in ("effdim", "operator", "lanczos"):
        module = importlib.import_module(f"{__name__}.{sub}")
        # every public name the module has, at once: the function lanczos, not the module
        globals().update({k: v for k, v in vars(module).items() if k in __all__})
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

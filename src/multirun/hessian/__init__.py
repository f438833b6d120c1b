"""Hessian spectra of the training loss: the operator, Lanczos/SLQ, effective dimensionality.

Three modules, one idea each:

* :mod:`multirun.hessian.operator`: :class:`HessianOperator`, the Hessian of the mean
  cross-entropy as HVPs (conventions: eval mode, parameter selection, precision);
* :mod:`multirun.hessian.lanczos`: :func:`lanczos` / :func:`spectrum` (top and bottom
  eigenvalues) and :func:`slq` / :func:`spectral_density` (stochastic Lanczos quadrature);
* :mod:`multirun.hessian.effdim`: effective dimensionality, from eigenvalues (a lower
  bound when they are the converged top ones) and over the whole spectrum by SLQ.
"""

from multirun.hessian.effdim import (
    effective_dimension,
    effective_dimension_probes,
    effective_dimension_slq,
    effective_dimensions,
    load_effdim_csv,
)
from multirun.hessian.lanczos import (
    converged_mask,
    lanczos,
    lanczos_block,
    operator_spectrum,
    rademacher_probes,
    slq,
    spectral_density,
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
    "operator_spectrum",
    "rademacher_probes",
    "slq",
    "spectral_density",
    "spectrum",
]

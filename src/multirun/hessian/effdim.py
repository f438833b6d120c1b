"""Effective dimensionality ``N_eff(H, z) = sum_i lambda_i / (lambda_i + z)``, and the SLQ
density: numpy only, from the arrays that :mod:`multirun.hessian.lanczos` stored."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from multirun.contracts import ContractError, load_npz, load_table, remake


# -- effective dimensionality ---------------------------------------------------------------
def effective_dimension(eigenvalues: np.ndarray, z: float) -> float:
    """``N_eff(H, z) = sum_i lambda_i / (lambda_i + z)`` over the given eigenvalues, as they are.

    Pass the raw converged eigenvalues (``spec["ritz_values"][spec["ritz_converged"]]``).
    Negative eigenvalues are *not* altered: one in (-z, 0) contributes a negative term.
    Raises ContractError if z <= 0 or some ``lambda_i + z == 0``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    if not (math.isfinite(z) and z > 0):
        raise ContractError(f"hessian.z must be finite and > 0, got {z}")
    if not np.isfinite(lam).all():
        raise ContractError("effective_dimension got NaN/inf eigenvalues; pass converged ones only")
    den = lam + z
    if np.any(den == 0):
        raise ContractError(f"an eigenvalue equals -z={-z}; N_eff is undefined at this z")
    return float(np.sum(lam / den))


def effective_dimensions(eigenvalues: np.ndarray, zs: Sequence[float]) -> np.ndarray:
    """:func:`effective_dimension` for each z in ``zs``: (len(zs),) float64."""
    return np.array([effective_dimension(eigenvalues, float(z)) for z in zs])


def effective_dimension_probes(
    nodes: np.ndarray, weights: np.ndarray, dim: int, z: float
) -> np.ndarray:
    """Per-probe SLQ estimates of ``tr(H (H + z I)^-1)``, the whole spectrum's N_eff.

    For probe ``i`` with Gauss quadrature nodes ``theta_ij`` and weights ``tau_ij^2``
    (:func:`multirun.hessian.slq`), the estimate is ``P * sum_j tau_ij^2 f(theta_ij)`` with
    ``f(t) = t / (t + z)``: a Hutchinson sample of the trace (Rademacher probes, exact when
    the Lanczos run spans the probe's Krylov space). Negative nodes are kept as they are.

    Args:
        nodes, weights: (probes, m) or (m,) float64; weight-0 entries (padding of a
            Lanczos run that broke down) contribute nothing.
        dim: P, the operator's dimension.
        z: the regulariser, finite and > 0.

    Returns:
        (probes,) float64.

    Raises:
        ContractError: z <= 0, NaN/inf nodes or weights, or a weighted node at ``-z``.
    """
    if not (math.isfinite(z) and z > 0):
        raise ContractError(f"hessian.z must be finite and > 0, got {z}")
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if nodes.shape != weights.shape:
        raise ContractError(f"SLQ nodes {nodes.shape} and weights {weights.shape} differ in shape")
    if not (np.isfinite(nodes).all() and np.isfinite(weights).all()):
        raise ContractError("SLQ nodes or weights hold NaN/inf")
    used = weights != 0
    den = np.where(used, nodes + z, 1.0)
    if np.any(den == 0):
        raise ContractError(f"an SLQ node equals -z={-z}; N_eff is undefined at this z")
    return int(dim) * (weights * np.where(used, nodes / den, 0.0)).sum(axis=1)


def effective_dimension_slq(
    nodes: np.ndarray, weights: np.ndarray, dim: int, z: float
) -> tuple[float, float]:
    """Whole-spectrum ``N_eff(H, z)`` by SLQ: (mean over probes, its standard error).

    The standard error is ``std(ddof=1) / sqrt(probes)`` of
    :func:`effective_dimension_probes` (NaN with one probe): the probe noise. The
    quadrature error (too few Lanczos steps) is not in it.
    """
    per = effective_dimension_probes(nodes, weights, dim, z)
    se = float(per.std(ddof=1) / math.sqrt(len(per))) if len(per) > 1 else float("nan")
    return float(per.mean()), se


SPECTRUM_KEYS = ("ritz_values", "ritz_converged", "top", "bottom", "loss", "num_params", "width",
                 "depth", "seed", "test_loss", "test_accuracy", "weight_decay", "slq_nodes",
                 "slq_weights")


def load_spectrum(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A spectrum file ``hessian/*.npz`` (rule hessian), checked against its contract.

    Every key of :data:`SPECTRUM_KEYS` is present, and the Ritz values (K,), the SLQ nodes
    and weights (probes, m) are finite. ``top``/``bottom`` (top_k,) are NaN past the Ritz
    values found, by design. Raises ContractError naming the file and its remake command.
    """
    s = load_npz(path, SPECTRUM_KEYS)
    bad = [k for k in ("ritz_values", "slq_nodes", "slq_weights") if not np.isfinite(s[k]).all()]
    if bad:
        raise ContractError(f"{path}: {', '.join(bad)} hold NaN or inf: the file is damaged; "
                            f"{remake(path)}")
    return s


def load_effdim_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of an ``effdim/*.csv`` table, every column but ``spectrum`` as float.

    ``spectrum`` (the spectrum file's name) is dropped, so rows go straight to the
    width-sweep and width x depth plots.
    """
    return [{k: float(v) for k, v in r.items() if k != "spectrum"}
            for r in load_table(path, "effdim")]


# -- spectral density ---------------------------------------------------------------------
def spectral_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-broadened SLQ density on ``grid``.

    ``phi(t) = mean_probe sum_i w_i N(t; theta_i, sigma^2)``; integrates to 1 over the real
    line (each probe's weights sum to 1). Args: ``nodes``, ``weights`` (probes, m) or (m,);
    ``grid`` (G,); ``sigma`` > 0 in eigenvalue units. Returns (G,) float64.
    """
    if not sigma > 0:
        raise ContractError(f"hessian.slq.sigma must be > 0, got {sigma}")
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    grid = np.asarray(grid, dtype=np.float64)
    out = np.zeros(grid.shape)
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi))
    for th, w in zip(nodes, weights, strict=True):
        out += (w[None, :] * np.exp(-0.5 * ((grid[:, None] - th[None, :]) / sigma) ** 2)).sum(axis=1)
    return out * norm / len(nodes)

"""Lanczos (top/bottom eigenvalues) and stochastic Lanczos quadrature on a symmetric operator.

Lanczos vectors and the tridiagonal are float64 and fully reorthogonalised; Ritz values
are reported as they are, negative ones included, with the residual bound
``|beta_m * s_{m,i}|`` and a converged flag relative to the spectral norm estimate
(see :mod:`multirun.hessian.operator` for the operator's conventions).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from multirun.contracts import ContractError
from multirun.hessian.operator import HessianOperator


# -- Lanczos ------------------------------------------------------------------------------
def lanczos(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    *,
    steps: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    v0: Tensor | None = None,
    device: torch.device | str | None = None,
    breakdown_tol: float = 1e-10,
) -> dict:
    """Lanczos tridiagonalisation with full reorthogonalisation (Gram-Schmidt twice).

    Args:
        matvec: ``v (dim,) dtype -> H v (dim,)`` for a symmetric H.
        dim: P.
        steps: Lanczos iterations m (clamped to ``dim``); m matvecs are done.
        seed: seeds the Gaussian start vector when ``v0`` is not given.
        dtype: of the basis and the tridiagonal (float64 unless you know better).
        v0: optional start vector (dim,), normalised here.
        device: where the basis lives (default: ``v0``'s device, else CPU).
        breakdown_tol: stop early when ``beta_j <= breakdown_tol * ||T||`` (invariant subspace).

    Returns:
        dict with ``alpha`` (m,), ``beta`` (m-1,) the tridiagonal; ``beta_last`` (float) the
        norm of the residual after step m; ``ritz_values`` (m,) ascending;
        ``ritz_residuals`` (m,) ``|beta_last * s_{m,i}|``; ``ritz_weights`` (m,) squared first
        components ``s_{1,i}^2`` (Gauss quadrature weights, sum to 1); ``num_matvecs`` (int);
        ``breakdown`` (bool). Arrays are float64 numpy.
    """
    if v0 is None:
        gen = torch.Generator().manual_seed(int(seed))
        v0 = torch.randn(int(dim), generator=gen, dtype=torch.float64)
    return lanczos_block(lambda Q: matvec(Q[0])[None], v0[None], steps=steps, dtype=dtype,
                         device=device, breakdown_tol=breakdown_tol)[0]


def lanczos_block(
    apply: Callable[[Tensor], Tensor],
    starts: Tensor,
    *,
    steps: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    breakdown_tol: float = 1e-10,
) -> list[dict]:
    """Independent Lanczos runs, one per start vector, advanced in lockstep.

    ``apply`` maps a block of vectors (b', P) to their products (b', P); each step applies
    it once to the still-active runs (b' <= b HVPs), so an operator with a vectorised
    ``matmat`` shares work between runs (SLQ probes). Each run is exactly
    :func:`lanczos` of its start vector. Memory: b x steps x P ``dtype``.

    Args: ``starts`` (b, P); other arguments as :func:`lanczos`. Returns one dict per run.
    """
    if int(steps) < 1:
        raise ContractError(f"hessian.steps must be >= 1, got {steps}")
    b, dim = starts.shape
    steps = min(int(steps), int(dim))
    device = torch.device(device) if device is not None else starts.device
    Q = starts.to(device, dtype)
    norms = torch.linalg.vector_norm(Q, dim=1)
    if not (torch.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError("lanczos start vector is zero or not finite")
    V = torch.zeros(b, steps, dim, dtype=dtype, device=device)
    V[:, 0] = Q / norms[:, None]
    alpha = np.zeros((b, steps))
    beta = np.zeros((b, steps))  # beta[i, j] couples v_j and v_{j+1}; beta[i, m-1] is beta_last
    anorm = np.zeros(b)
    m = np.full(b, steps)
    active = list(range(b))
    for j in range(steps):
        rows = slice(None) if len(active) == b else torch.tensor(active, device=device)
        Vact = V[rows]  # (b', steps, P): a view while every run is active
        W = apply(Vact[:, j]).to(device, dtype)
        a = (W * Vact[:, j]).sum(dim=1)
        W = W - a[:, None] * Vact[:, j]
        if j > 0:
            W = W - torch.as_tensor(beta[active, j - 1], dtype=dtype, device=device)[:, None] * Vact[:, j - 1]
        basis = Vact[:, : j + 1]
        for _ in range(2):  # full reorthogonalisation against the whole basis, twice
            h = torch.bmm(basis, W[:, :, None])[:, :, 0]  # (b', j+1)
            W = W - torch.bmm(h[:, None, :], basis)[:, 0]
            a = a + h[:, j]
        bnorm = torch.linalg.vector_norm(W, dim=1)
        a_np, b_np = a.cpu().numpy(), bnorm.cpu().numpy()
        still = []
        for r, i in enumerate(active):
            alpha[i, j], beta[i, j] = a_np[r], b_np[r]
            prev = beta[i, j - 1] if j > 0 else 0.0
            anorm[i] = max(anorm[i], math.sqrt(a_np[r] ** 2 + b_np[r] ** 2 + prev**2))
            if j + 1 < steps:
                if b_np[r] <= breakdown_tol * anorm[i]:
                    m[i] = j + 1
                    continue
                V[i, j + 1] = W[r] / b_np[r]
                still.append(i)
        active = still
        if not active:
            break
    out = []
    for i in range(b):
        mi = int(m[i])
        a_i, b_i, last = alpha[i, :mi], beta[i, : mi - 1], float(beta[i, mi - 1])
        if mi > 1:
            theta, S = scipy.linalg.eigh_tridiagonal(a_i, b_i)
        else:
            theta, S = a_i.copy(), np.ones((1, 1))
        out.append({
            "alpha": a_i,
            "beta": b_i,
            "beta_last": last,
            "ritz_values": theta,
            "ritz_residuals": np.abs(last * S[-1, :]),
            "ritz_weights": S[0, :] ** 2,
            "num_matvecs": mi,
            "breakdown": bool(mi < steps),
        })
    return out


def converged_mask(ritz_values: np.ndarray, ritz_residuals: np.ndarray, tol: float) -> np.ndarray:
    """``residual <= tol * max|theta|`` (bool, same shape); the convergence rule of :func:`spectrum`."""
    scale = float(np.max(np.abs(ritz_values))) if len(ritz_values) else 0.0
    return np.asarray(ritz_residuals) <= tol * scale


def _pad(a: np.ndarray, k: int, fill) -> np.ndarray:
    out = np.full(k, fill, dtype=np.asarray(a).dtype if len(a) else np.asarray([fill]).dtype)
    out[: min(k, len(a))] = a[:k]
    return out


def _check_spectrum_args(top_k: int, steps: int, tol: float) -> None:
    """ContractErrors naming ``hessian.top_k`` / ``hessian.steps`` for impossible settings."""
    if int(steps) < 1:
        raise ContractError(f"hessian.steps must be >= 1, got {steps}")
    if int(top_k) < 1:
        raise ContractError(f"hessian.top_k must be >= 1, got {top_k}")
    if int(top_k) > int(steps):
        raise ContractError(f"hessian.top_k={top_k} is larger than hessian.steps={steps}: Lanczos "
                            "gives at most `steps` Ritz values; raise hessian.steps or lower hessian.top_k")
    if not tol > 0:
        raise ContractError(f"hessian tol must be > 0, got {tol}")


def spectrum(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    top_k: int,
    steps: int,
    batch_size: int,
    params: str = "all",
    seed: int = 0,
    device: torch.device | str = "cpu",
    tol: float = 1e-6,
    source: str = "",
    method: str = "auto",
) -> dict[str, np.ndarray]:
    """Top and bottom Hessian eigenvalues of the mean training loss by Lanczos.

    Args:
        model, x, y, batch_size, params, device: see :class:`HessianOperator`.
        top_k: eigenvalues reported from each end (<= steps).
        steps: Lanczos iterations (clamped to the parameter count).
        seed: seeds the start vector.
        tol: convergence threshold, relative to the largest |Ritz value|.
        source: the checkpoint's name, quoted in errors.
        method: HVP method of :class:`HessianOperator` (``auto`` | ``fwdrev`` | ``revrev``).

    Returns:
        ``top`` (top_k,) descending, ``top_residuals``, ``top_converged`` (bool);
        ``bottom`` (top_k,) ascending, ``bottom_residuals``, ``bottom_converged``;
        ``ritz_values`` (m,) ascending, ``ritz_residuals``, ``ritz_converged``;
        ``alpha`` (m,), ``beta`` (m-1,); scalars ``num_hvps``, ``num_params``, ``loss``,
        ``beta_last``, ``tol``. If Lanczos stops early (m < top_k: the Krylov space is
        exhausted) the missing entries are NaN and not converged. Floats are float64.

    Raises:
        ContractError: ``top_k > steps`` or either < 1 (names ``hessian.top_k`` /
            ``hessian.steps``), or the loss at the checkpoint is NaN/inf (names ``source``).
    """
    _check_spectrum_args(top_k, steps, tol)
    op = HessianOperator(model, x, y, batch_size=batch_size, params=params, device=device,
                         method=method)
    return operator_spectrum(op, top_k=top_k, steps=steps, seed=seed, tol=tol, source=source)


def operator_spectrum(
    op: HessianOperator, *, top_k: int, steps: int, seed: int = 0, tol: float = 1e-6,
    source: str = "",
) -> dict[str, np.ndarray]:
    """:func:`spectrum` of an operator already built (so SLQ can share it); same result keys.

    ``num_hvps`` counts only the HVPs of this call. Raises as :func:`spectrum`.
    """
    _check_spectrum_args(top_k, steps, tol)
    start = op.num_matvecs
    loss = op.loss()
    if not math.isfinite(loss):
        where = f" ({source})" if source else ""
        what = "NaN" if math.isnan(loss) else "infinite"
        raise ContractError(f"the checkpoint's loss is {what} on the Hessian examples{where}: "
                            "the run diverged; its Hessian is undefined. Retrain it or drop it.")
    if int(top_k) > op.dim:
        raise ContractError(f"hessian.top_k={top_k} is larger than the {op.dim} parameters selected")
    lz = lanczos(op.matvec, op.dim, steps=int(steps), seed=seed, device=op.device)
    theta, res = lz["ritz_values"], lz["ritz_residuals"]
    conv = converged_mask(theta, res, tol)
    k = int(top_k)
    return {
        "top": _pad(theta[::-1], k, np.nan),
        "top_residuals": _pad(res[::-1], k, np.nan),
        "top_converged": _pad(conv[::-1], k, False),
        "bottom": _pad(theta, k, np.nan),
        "bottom_residuals": _pad(res, k, np.nan),
        "bottom_converged": _pad(conv, k, False),
        "ritz_values": theta,
        "ritz_residuals": res,
        "ritz_converged": conv,
        "alpha": lz["alpha"],
        "beta": lz["beta"],
        "beta_last": np.float64(lz["beta_last"]),
        "num_hvps": np.int64(op.num_matvecs - start),
        "num_params": np.int64(op.dim),
        "loss": np.float64(loss),
        "tol": np.float64(tol),
    }


# -- stochastic Lanczos quadrature --------------------------------------------------------
def rademacher_probes(dim: int, probes: int, seed: int = 0) -> Tensor:
    """(probes, dim) float64 of +-1, drawn on the CPU from ``seed`` (device independent)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, 2, (probes, dim), generator=gen).to(torch.float64) * 2 - 1


def slq(
    operator: HessianOperator, *, probes: int, steps: int, seed: int = 0, block: int | None = None
) -> dict[str, np.ndarray]:
    """Stochastic Lanczos quadrature of the spectral density of ``operator``.

    One Lanczos run of ``steps`` per Rademacher probe (``rademacher_probes(dim, probes, seed)``),
    ``block`` probes advanced in lockstep through :meth:`HessianOperator.matmat` (default: as
    many as fit in ~1 GiB of float64 basis; 1 = one probe after the other; the result is
    the same, lockstep shares the primal forward/backward of forward-over-reverse HVPs).
    Each run's Ritz values are Gauss quadrature nodes and the squared first components of
    the Ritz vectors their weights, so ``sum_i w_i f(theta_i) ~ z^T f(H) z / P``.

    Returns:
        ``nodes`` (probes, m) and ``weights`` (probes, m) float64 (m = min(steps, P));
        ``trace_slq`` = P * mean_probe sum_i w_i theta_i; ``trace_hutchinson`` = mean_probe z^T H z
        (the same probes; equal to trace_slq up to rounding, since Gauss quadrature integrates
        degree-1 exactly: their difference checks the quadrature, not the probe noise);
        ``trace_hutchinson_stderr`` its standard error over probes (the probe noise);
        ``second_moment`` = mean_probe sum_i w_i theta_i^2 (estimates tr(H^2)/P);
        ``num_hvps``. A probe whose Lanczos run breaks down early is padded with weight 0.
    """
    if int(probes) < 1:
        raise ContractError(f"hessian.slq.probes must be >= 1, got {probes}")
    if block is not None and int(block) < 1:
        raise ContractError(f"slq block must be >= 1, got {block}")
    if int(steps) < 1:
        raise ContractError(f"hessian.slq.steps must be >= 1, got {steps}")
    P = operator.dim
    m = min(int(steps), P)
    probes = int(probes)
    if block is None:  # as many probes at once as fit in ~1 GiB of basis vectors
        block = max(1, min(probes, (1 << 30) // (8 * m * P)))
    Z = rademacher_probes(P, probes, seed)
    nodes = np.zeros((probes, m))
    weights = np.zeros((probes, m))
    quad = np.zeros(probes)
    start = operator.num_matvecs
    for first in range(0, probes, int(block)):
        group = Z[first : first + int(block)].to(operator.device)
        runs = lanczos_block(lambda Q: operator.matmat(Q.T).T, group, steps=m)
        for i, lz in enumerate(runs, start=first):
            k = len(lz["ritz_values"])
            nodes[i, :k], weights[i, :k] = lz["ritz_values"], lz["ritz_weights"]
            nodes[i, k:] = lz["ritz_values"][-1]
            quad[i] = P * lz["alpha"][0]  # z^T H z with ||z||^2 = P
    moments1 = (weights * nodes).sum(axis=1)
    stderr = float(quad.std(ddof=1) / math.sqrt(len(quad))) if len(quad) > 1 else float("nan")
    return {
        "nodes": nodes,
        "weights": weights,
        "trace_slq": np.float64(P * moments1.mean()),
        "trace_hutchinson": np.float64(quad.mean()),
        "trace_hutchinson_stderr": np.float64(stderr),
        "second_moment": np.float64((weights * nodes**2).sum(axis=1).mean()),
        "num_hvps": np.int64(operator.num_matvecs - start),
        "num_params": np.int64(P),
    }

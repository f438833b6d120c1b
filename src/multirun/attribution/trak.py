"""TRAK (Park et al. 2023, Algorithm 1): attribution from projected per-example gradients.

For each model m of an ensemble (trained on the full training set):

* ``f(z; theta) = z_y - logsumexp_{c != y} z_c`` (``log p_y / (1 - p_y)``), the model output;
* ``Phi_m`` (N, k): rows ``P_m^T grad_theta f(x_i, y_i; theta_m)`` for the training
  examples, ``P_m`` a (d, k) Gaussian random projection drawn per model (``proj_dim=None``:
  no projection, ``P = I``); ``g_m(t)`` likewise for test example t;
* the after-kernel attribution ``tau_m(t) = g_m(t) (Phi_m^T Phi_m + ridge I)^-1 Phi_m^T``;
* ``Q_m = 1 - p_i`` (N,), the loss's derivative with respect to f on training example i.

The ensemble over M models: ``tau(t)[i] = mean_m tau_m(t)[i] * mean_m Q_m[i]`` (the
paper's estimator without its optional soft-thresholding). ``ridge = 0`` is the paper's
choice; (Phi^T Phi) is k x k with k < N, and is solved in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from multirun.contracts import ContractError


def _output(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """One example's ``z_y - logsumexp_{c != y} z_c`` from its (C,) logits."""
    is_label = torch.arange(logits.shape[-1], device=logits.device) == label
    given = torch.where(is_label, logits, torch.zeros_like(logits)).sum()
    return given - torch.logsumexp(logits.masked_fill(is_label, -torch.inf), 0)


def per_example_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, d) gradients of f on each example (parameters flattened in named order) and (B,) p_y."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(p, xi, yi):
        return _output(functional_call(model, (p, buffers), (xi[None],))[0], yi)

    grads = vmap(grad(f), in_dims=(None, 0, 0))(params, x, y)
    flat = torch.cat([g.reshape(len(x), -1) for g in grads.values()], 1)
    with torch.no_grad():
        logits = functional_call(model, (params, buffers), (x,))
        p = torch.softmax(logits.double(), -1).gather(1, y[:, None])[:, 0]
    return flat, p


def projection(num_params: int, proj_dim: int | None, seed: int, model_index: int,
               dtype=torch.float32) -> torch.Tensor | None:
    """Model ``model_index``'s (d, k) Gaussian projection, from its own stream (None: no projection)."""
    if proj_dim is None:
        return None
    words = np.random.SeedSequence([int(seed), int(model_index), 0x7A4B]).generate_state(2)
    g = torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))
    return torch.randn(num_params, int(proj_dim), generator=g, dtype=dtype)


def features(model: nn.Module, x: torch.Tensor, y: torch.Tensor, proj: torch.Tensor | None, *,
             chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradients (N, k) (or (N, d) without ``proj``) and p_y (N,), ``chunk`` at a time."""
    feats, ps = [], []
    for start in range(0, len(x), chunk):
        g, p = per_example_gradients(model, x[start:start + chunk], y[start:start + chunk])
        feats.append(g if proj is None else g @ proj.to(g.dtype))
        ps.append(p)
    return torch.cat(feats), torch.cat(ps)


def trak_scores(models: Sequence[nn.Module], x_train: torch.Tensor, y_train: torch.Tensor,
                x_test: torch.Tensor, y_test: torch.Tensor, *, proj_dim: int | None = 512,
                seed: int = 0, ridge: float = 0.0, counts: Sequence[int] | None = None,
                chunk: int = 256) -> dict[int, np.ndarray]:
    """TRAK scores (T, N_train) float32 of the first ``n`` models, for each n in ``counts``.

    ``models``: the ensemble, used in order (the scores of n models reuse those of n - 1).
    ``counts``: default ``[len(models)]``.
    """
    counts = sorted({int(c) for c in (counts or [len(models)])})
    if not counts or counts[0] < 1 or counts[-1] > len(models):
        raise ContractError(f"trak: model counts {counts} must lie in [1, {len(models)}]")
    y_train, y_test = torch.as_tensor(y_train), torch.as_tensor(y_test)
    tau = np.zeros((len(x_test), len(x_train)), dtype=np.float64)
    q = np.zeros(len(x_train), dtype=np.float64)
    out = {}
    for m, model in enumerate(models[:counts[-1]]):
        d = sum(p.numel() for p in model.parameters())
        proj = projection(d, proj_dim, seed, m, dtype=next(model.parameters()).dtype)
        phi, p_train = features(model, x_train, y_train, proj, chunk=chunk)
        g_test, _ = features(model, x_test, y_test, proj, chunk=chunk)
        phi64 = phi.double().numpy()
        gram = phi64.T @ phi64 + ridge * np.eye(phi64.shape[1])
        try:
            kernel = np.linalg.solve(gram, phi64.T)  # (k, N)
        except np.linalg.LinAlgError as err:
            raise ContractError(f"trak: Phi^T Phi of model {m} is singular (k={phi64.shape[1]}, "
                                f"N={len(x_train)}); lower subsets.trak.proj_dim or set a "
                                "ridge > 0") from err
        tau += g_test.double().numpy() @ kernel
        q += 1.0 - p_train.numpy()
        if m + 1 in counts:
            n = m + 1
            out[n] = ((tau / n) * (q / n)[None, :]).astype(np.float32)
    return out

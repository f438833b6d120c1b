"""The Hessian of the mean training loss as a matrix-free operator (HVPs).

The Hessian is that of the *mean* cross-entropy over the given examples,

    L(theta) = (1/N) sum_n CE(f(x_n; theta), y_n),   H = d^2 L / d theta^2,

computed exactly over uneven batches (each batch's mean loss is weighted by
``n_batch / N``), so the batch size only trades memory for speed and never
changes the operator.

Conventions
-----------
* **Eval mode.** The network is evaluated in ``eval()`` mode: BatchNorm uses its
  running statistics and dropout is off. In train mode the loss of a batch is
  not a sum of per-example losses (batch statistics couple the examples) and
  would change with the batch size; the eval-mode Hessian is the curvature of
  the function the trained model actually computes. The module's own
  ``training`` flag is restored after every call.
* **Parameters.** ``params="all"`` differentiates every parameter;
  ``params="weights"`` only tensors with ``ndim >= 2`` (biases and
  normalisation scales become constants). Vectors are flat, in
  ``model.named_parameters()`` order.
* **HVPs.** Forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``)
  where the model supports forward-mode AD, double backward otherwise
  (``method="auto"`` tries the former once and falls back).
* **Precision.** HVPs run in the model's own dtype (cast the model and pass
  ``float64`` data for a float64 operator); Lanczos vectors and the tridiagonal
  are always ``float64``.

Lanczos, SLQ and the eigenvalue conventions are in :mod:`multirun.hessian.lanczos`.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multirun.contracts import ContractError

PARAM_SELECTIONS = ("all", "weights")
HVP_METHODS = ("auto", "fwdrev", "revrev")


class HessianOperator:
    """The Hessian ``H`` (P x P) of the mean cross-entropy of ``model`` on ``(x, y)``.

    Args:
        model: the network; its parameters are read (copied to ``device``) at
            construction and never modified. Later changes to the model are not seen.
        x: inputs (N, ...), floating; cast to the parameters' dtype.
        y: integer class labels (N,).
        batch_size: examples per forward pass (memory knob; the operator is exact).
        params: ``"all"`` or ``"weights"`` (tensors with ndim >= 2).
        device: where HVPs run; data are moved there once.
        method: ``"auto"`` | ``"fwdrev"`` (jvp of grad) | ``"revrev"`` (double backward).

    Attributes:
        dim: P, the number of parameters included.
        num_matvecs: HVPs done so far (one per ``matvec``, ``b`` per ``matmat`` of b columns).
        names: names of the included parameter tensors, in vector order.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int,
        params: str = "all",
        device: torch.device | str = "cpu",
        method: str = "auto",
    ) -> None:
        if params not in PARAM_SELECTIONS:
            raise ContractError(f"hessian.params must be one of {PARAM_SELECTIONS}, got {params!r}")
        if method not in HVP_METHODS:
            raise ContractError(f"hessian method must be one of {HVP_METHODS}, got {method!r}")
        if int(batch_size) < 1:
            raise ContractError(f"hessian.batch_size must be >= 1, got {batch_size}")
        if len(x) != len(y) or len(y) == 0:
            raise ContractError(f"hessian data: x has {len(x)} rows and y has {len(y)}; "
                                "need the same number, at least one")
        self.model = model
        self.device = torch.device(device)
        self.method = method
        named = list(model.named_parameters())
        chosen = [(n, p) for n, p in named if params == "all" or p.ndim >= 2]
        if not chosen:
            raise ContractError(f"hessian.params={params!r} selects no parameter of the model")
        self.names = [n for n, _ in chosen]
        self._params = {n: p.detach().to(self.device) for n, p in chosen}
        frozen = {n: p.detach().to(self.device) for n, p in named if n not in self._params}
        frozen.update({n: b.to(self.device) for n, b in model.named_buffers()})
        self._frozen = frozen
        self._shapes = [p.shape for p in self._params.values()]
        self._numels = [p.numel() for p in self._params.values()]
        self.dtype = next(iter(self._params.values())).dtype
        self.dim = int(sum(self._numels))
        self.num_matvecs = 0

        x = torch.as_tensor(x)
        y = torch.as_tensor(y)
        if x.is_floating_point():
            x = x.to(self.dtype)
        x, y = x.to(self.device), y.to(self.device, torch.long)
        n = len(y)
        bs = int(batch_size)
        self.num_examples = n
        self._batches = [(x[i : i + bs], y[i : i + bs], min(bs, n - i) / n) for i in range(0, n, bs)]

    # -- flat vectors <-> parameter dicts ------------------------------------------------
    def _unflatten(self, v: Tensor) -> dict[str, Tensor]:
        parts = torch.split(v.to(self.device, self.dtype), self._numels)
        return {n: t.view(s) for n, t, s in zip(self._params, parts, self._shapes, strict=True)}

    @staticmethod
    def _flatten(tensors) -> Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def _batch_loss(self, p: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        out = torch.func.functional_call(self.model, (p, self._frozen), (xb,))
        return F.cross_entropy(out, yb)

    def _eval_mode(self):
        return _EvalMode(self.model)

    # -- the operator -------------------------------------------------------------------
    def loss(self) -> float:
        """Mean cross-entropy on all examples (exact over uneven batches)."""
        total = 0.0
        with self._eval_mode(), torch.no_grad():
            for xb, yb, w in self._batches:
                total += w * float(self._batch_loss(self._params, xb, yb))
        return total

    def gradient(self) -> Tensor:
        """Gradient of the mean loss, (P,) float64 on ``device``."""
        g = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        grad_fn = torch.func.grad(self._batch_loss)
        with self._eval_mode():
            for xb, yb, w in self._batches:
                g += w * self._flatten(grad_fn(self._params, xb, yb).values()).double()
        return g

    def _hvp_fwdrev(self, v: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        grad_fn = torch.func.grad(self._batch_loss)
        with warnings.catch_warnings():  # torch's jvp decompositions use torch.jit.script once
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            _, hv = torch.func.jvp(lambda q: grad_fn(q, xb, yb), (self._params,), (v,))
        return self._flatten(hv.values())

    def _hvp_revrev(self, v: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        q = {n: t.detach().requires_grad_(True) for n, t in self._params.items()}
        with torch.enable_grad():
            loss = self._batch_loss(q, xb, yb)
            g = torch.autograd.grad(loss, list(q.values()), create_graph=True,
                                    allow_unused=True, materialize_grads=True)
            dot = sum((gi * v[n]).sum() for gi, n in zip(g, q, strict=True))
            if not dot.requires_grad:  # loss is linear in every parameter
                return torch.zeros(self.dim, dtype=self.dtype, device=self.device)
            hv = torch.autograd.grad(dot, list(q.values()), allow_unused=True,
                                     materialize_grads=True)
        return self._flatten(hv)

    def _hvp(self, v: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        if self.method == "auto":
            try:
                out = self._hvp_fwdrev(v, xb, yb)
                self.method = "fwdrev"
                return out
            except torch.OutOfMemoryError:  # a real failure, not a missing rule: say so
                raise
            except (RuntimeError, NotImplementedError):  # an op without forward-mode AD
                self.method = "revrev"
        if self.method == "fwdrev":
            return self._hvp_fwdrev(v, xb, yb)
        return self._hvp_revrev(v, xb, yb)

    def matvec(self, v: Tensor) -> Tensor:
        """``H @ v``: v (P,) float64 (any device) -> (P,) float64 on v's device."""
        v = torch.as_tensor(v)
        if v.shape != (self.dim,):
            raise ValueError(f"matvec expects a vector of shape ({self.dim},), got {tuple(v.shape)}")
        vd = self._unflatten(v)
        out = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        with self._eval_mode():
            for xb, yb, w in self._batches:
                out += w * self._hvp(vd, xb, yb).double()
        self.num_matvecs += 1
        return out.to(v.device)

    def matmat(self, V: Tensor) -> Tensor:
        """``H @ V`` for a block of vectors: V (P, b) float64 -> (P, b) float64.

        With forward-over-reverse the b tangents go through one vectorised
        (``torch.func.vmap``) pass per batch, which feeds wider GEMMs to the
        hardware; counts as b HVPs.
        """
        V = torch.as_tensor(V)
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"matmat expects (P={self.dim}, b), got {tuple(V.shape)}")
        b = V.shape[1]
        if self.method == "auto":  # settle the method on one column first
            first = self.matvec(V[:, 0])
            if b == 1:
                return first[:, None]
            return torch.cat([first[:, None], self.matmat(V[:, 1:])], dim=1)
        if self.method == "revrev":
            return torch.stack([self.matvec(V[:, i]) for i in range(b)], dim=1)
        Vd = torch.func.vmap(self._unflatten)(V.T.contiguous().to(self.device))
        out = torch.zeros(b, self.dim, dtype=torch.float64, device=self.device)
        with self._eval_mode():
            for xb, yb, w in self._batches:
                hv = torch.func.vmap(self._hvp_fwdrev, in_dims=(0, None, None))(Vd, xb, yb)
                out += w * hv.double()
        self.num_matvecs += b
        return out.T.to(V.device)

    def as_linear_operator(self) -> scipy.sparse.linalg.LinearOperator:
        """A float64 ``scipy.sparse.linalg.LinearOperator`` (P x P) calling :meth:`matvec`."""

        def mv(v: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
            return self.matvec(t).cpu().numpy()

        return scipy.sparse.linalg.LinearOperator(
            (self.dim, self.dim), matvec=mv, rmatvec=mv, dtype=np.float64)


class _EvalMode:
    """Context manager: put a module in eval mode, restore every submodule's flag after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc) -> None:
        for m, flag in self.flags:
            m.training = flag

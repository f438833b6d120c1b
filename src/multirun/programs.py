"""One optimisation step of S stacked models: two interchangeable programs.

Both hold the parameters of S models stacked along a new leading axis and offer

* ``prepare(x)``: the training inputs ``(N, ...)`` in the form ``step`` takes;
* ``step(xb, yb, lr) -> (loss (S,), correct (S,))``: forward, backward and SGD update of
  all S models, seed ``s`` on its own batch ``xb[s]`` (B, ...) with labels ``yb[s]``
  (B,) int64; ``loss`` is each seed's mean loss, ``correct`` its number of correct
  predictions;
* ``state() -> {name: (S, ...) tensor}``: the stacked ``state_dict`` of the S models.

:class:`VmapProgram` trains any model of the zoo: ``torch.func.vmap`` over
``torch.func.functional_call`` of a parameter-less copy, autograd, ``torch.optim.SGD``.
:class:`MLPProgram` trains a plain MLP (no BatchNorm) faster with the same arithmetic
up to rounding: a hand-written batched forward/backward (``torch.bmm``; each layer's
bias is folded into its weight matrix as one more input, fed a constant 1, so neither
the bias add nor the bias gradient is a separate pass), every buffer allocated once,
and one fused SGD update over a single flat parameter buffer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from multirun.models import meta_model

PROGRAMS = ("auto", "vmap", "mlp", "cnn1d")


def pick_program(name: str, spec: Mapping[str, Any], recipe: Mapping[str, Any]) -> str:
    """The program to run: ``mlp``/``cnn1d`` where the hand-written one applies (plain
    model, no augmentation) and ``name`` allows it, else ``vmap``."""
    if name not in PROGRAMS:
        raise ValueError(f"program: unknown {name!r}; choose one of {', '.join(PROGRAMS)}")
    fits = not spec.get("batchnorm") and recipe["augment"] == "none"
    own = {"mlp": "mlp", "cnn1d": "cnn1d"}.get(spec["name"]) if fits else None
    if name not in ("auto", "vmap", own):
        raise ValueError(f"program {name}: needs the model {name} without BatchNorm and no "
                         f"augmentation, got {dict(spec)} with augment {recipe['augment']!r}")
    return own if own and name != "vmap" else "vmap"


def _sgd_kwargs(recipe: Mapping[str, Any]) -> dict[str, Any]:
    return {"momentum": recipe["momentum"], "weight_decay": recipe["weight_decay"],
            "nesterov": recipe["optimizer"] == "nesterov"}


# ----------------------------------------------------------------------------- any model: vmap


def _cast(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Move ``t`` to ``device``; floating tensors also to ``dtype`` (integer counters stay)."""
    return t.to(device, dtype) if t.is_floating_point() else t.to(device)


class VmapProgram:
    """Any model: ``vmap`` of ``functional_call`` + autograd + ``torch.optim.SGD``.

    BatchNorm running statistics are stacked buffers updated in place per seed
    inside ``vmap``. ``models`` are the S freshly initialised models (CPU).
    """

    def __init__(self, models: list[nn.Module], spec: Mapping[str, Any],
                 input_shape: tuple[int, ...], num_classes: int, recipe: Mapping[str, Any],
                 probe: tuple[Tensor, Tensor], device: torch.device, dtype: torch.dtype):
        base = meta_model(spec, input_shape, num_classes).train()
        params = {k: torch.stack([m.get_parameter(k).detach() for m in models]).to(device, dtype)
                  for k, _ in models[0].named_parameters()}
        self.buffers = {k: _cast(torch.stack([m.get_buffer(k) for m in models]), device, dtype)
                        for k, _ in models[0].named_buffers()}
        for p in params.values():
            p.requires_grad_(True)
        smoothing = recipe["label_smoothing"]

        def loss_one(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor,
                     yb: Tensor) -> tuple[Tensor, Tensor]:
            logits = functional_call(base, (p, b), (xb,))
            loss = F.cross_entropy(logits, yb, label_smoothing=smoothing)
            return loss, (logits.argmax(-1) == yb).sum()

        self.batched_loss = vmap(loss_one, randomness="error")
        self.params = _match_grad_layout(params, self.buffers, self.batched_loss, *probe)
        self.opt = torch.optim.SGD(list(self.params.values()), lr=recipe["lr"],
                                   **_sgd_kwargs(recipe))

    def prepare(self, x: Tensor) -> Tensor:
        """The inputs as they are: (N, ...)."""
        return x

    def step(self, xb: Tensor, yb: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        """One step on ``xb`` (S, B, ...), ``yb`` (S, B): per-seed loss (S,) and correct (S,)."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss, correct = self.batched_loss(self.params, self.buffers, xb, yb)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        return loss.detach(), correct

    def state(self) -> dict[str, Tensor]:
        """Stacked parameters and buffers, ``{name: (S, ...)}``."""
        return {k: v.detach() for k, v in {**self.params, **self.buffers}.items()}


def _match_grad_layout(params: dict[str, Tensor], buffers: dict[str, Tensor], batched_loss,
                       xb: Tensor, yb: Tensor) -> dict[str, Tensor]:
    """Re-lay out each stacked parameter in the memory order its batched gradient has.

    Under ``vmap`` the weight gradient of a linear/conv layer comes out of a batched
    matrix product transposed relative to the stacked weight. ``AccumulateGrad``
    would then copy every gradient into the parameter's layout and SGD would add
    tensors of different strides, both slow strided passes (on the CPU they cost
    as much as the matrix products). One probe step on ``xb`` (B, ...) shared by
    all seeds (BatchNorm buffers are copied, not touched) reads the gradient
    strides; each parameter is copied into a tensor with those strides. Values
    are unchanged; only the memory order differs.
    """
    s = next(iter(params.values())).shape[0]
    probe_x = xb.unsqueeze(0).expand(s, *xb.shape)
    probe_y = yb.to(xb.device).unsqueeze(0).expand(s, *yb.shape)
    loss, _ = batched_loss(params, {k: v.clone() for k, v in buffers.items()}, probe_x, probe_y)
    grads = torch.autograd.grad(loss.sum(), list(params.values()), allow_unused=True)
    out = {}
    for (k, p), g in zip(params.items(), grads, strict=True):
        if g is not None and g.stride() != p.stride() and _dense(g):
            q = torch.empty_strided(p.shape, g.stride(), dtype=p.dtype, device=p.device)
            p = q.copy_(p.detach()).requires_grad_(True)
        out[k] = p
    return out


def _dense(t: Tensor) -> bool:
    """``t`` covers its storage exactly once (a permutation of a contiguous tensor)."""
    order = sorted(range(t.dim()), key=lambda d: t.stride(d))
    expected = 1
    for d in order:
        if t.shape[d] != 1 and t.stride(d) != expected:
            return False
        expected *= t.shape[d]
    return True


# ----------------------------------------------------------------------------- plain MLP: bmm


class _FlatLayers:
    """The layers of S models as matrices ``M = [W.flatten(1) | b]`` in one flat buffer.

    ``kinds`` selects the layers (in module order; every one has a bias). Layer ``l``'s
    matrix ``M[l]`` is (S, out, fan_in + 1), a view of ``flat``; its gradient ``G[l]`` a
    view of ``grad``. :meth:`_sgd` is ``torch.optim.SGD.step`` over all of them in one
    fused pass (coupled weight decay, heavy-ball or Nesterov momentum, dampening 0).
    """

    def __init__(self, models: list[nn.Module], kinds: tuple[type, ...],
                 recipe: Mapping[str, Any], device: torch.device, dtype: torch.dtype):
        s = len(models)
        layers = [[m for m in model.modules() if isinstance(m, kinds)] for model in models]
        self.names = [k for k, m in models[0].named_modules() if isinstance(m, kinds)]
        self.shapes = [tuple(layer.weight.shape) for layer in layers[0]]
        sizes = [s * shape[0] * (math.prod(shape[1:]) + 1) for shape in self.shapes]
        self.flat = torch.empty(sum(sizes), device=device, dtype=dtype)
        self.grad = torch.empty_like(self.flat)
        self.momentum = torch.zeros_like(self.flat)
        self.M: list[Tensor] = []
        self.G: list[Tensor] = []
        offset = 0
        for i, (shape, size) in enumerate(zip(self.shapes, sizes, strict=True)):
            view = (s, shape[0], math.prod(shape[1:]) + 1)
            m = self.flat[offset:offset + size].view(view)
            m[..., :-1] = torch.stack([layer[i].weight.detach().flatten(1) for layer in layers])
            m[..., -1] = torch.stack([layer[i].bias.detach() for layer in layers])
            self.M.append(m)
            self.G.append(self.grad[offset:offset + size].view(view))
            offset += size
        self.recipe = recipe
        self.first = True

    def _sgd(self, lr: float) -> None:
        """``torch.optim.SGD.step`` on the flat buffer (``grad`` is overwritten)."""
        r = _sgd_kwargs(self.recipe)
        m, wd = r["momentum"], r["weight_decay"]
        if hasattr(torch, "_fused_sgd_"):
            torch._fused_sgd_([self.flat], [self.grad], [self.momentum] if m else [],
                              weight_decay=wd, momentum=m, lr=lr, dampening=0.0,
                              nesterov=r["nesterov"], maximize=False,
                              is_first_step=self.first)
        else:  # torch.optim.SGD's single-tensor arithmetic
            g = self.grad.add_(self.flat, alpha=wd) if wd else self.grad
            if m:
                buf = self.momentum.copy_(g) if self.first else self.momentum.mul_(m).add_(g)
                g = g.add_(buf, alpha=m) if r["nesterov"] else buf
            self.flat.add_(g, alpha=-lr)
        self.first = False

    def state(self) -> dict[str, Tensor]:
        """``{name.weight: (S, *weight shape), name.bias: (S, out)}`` (views)."""
        out = {}
        for name, shape, m in zip(self.names, self.shapes, self.M, strict=True):
            out[f"{name}.weight"] = m[..., :-1].unflatten(-1, shape[1:])
            out[f"{name}.bias"] = m[..., -1]
        return out


class MLPProgram(_FlatLayers):
    """Plain MLPs (``Linear -> ReLU`` layers, no BatchNorm): hand-written batched steps.

    Layer ``l`` maps ``d_l`` to ``d_{l+1}`` units; its weight ``W`` (d_{l+1}, d_l) and
    bias ``b`` are stored side by side as one matrix ``M_l = [W | b]`` of shape
    (S, d_{l+1}, d_l + 1), and activations are feature-major, (S, d_l + 1, B), with a
    last row of ones: ``z = M_l @ a`` is the layer's output with bias (S, d_{l+1}, B)
    and ``dz @ a^T`` the gradient of weight and bias at once. (Feature-major is the
    faster orientation on the CPU: it keeps the batch, not the 10 classes, as the
    long side of the head's matrix products.) All ``M_l`` are views of one flat
    buffer (and their gradients of another), so the SGD update is one fused pass.
    Buffers are allocated once. Any device, float32 or float64.
    """

    def __init__(self, models: list[nn.Module], recipe: Mapping[str, Any], batch: int,
                 device: torch.device, dtype: torch.dtype):
        super().__init__(models, (nn.Linear,), recipe, device, dtype)
        s, outs = len(models), [shape[0] for shape in self.shapes]
        opts = {"device": device, "dtype": dtype}
        self.z = [torch.empty(s, d, batch, **opts) for d in outs]  # pre-activations
        self.h = [torch.ones(s, d + 1, batch, **opts) for d in outs[:-1]]  # ReLU; ones
        self.dh = [torch.empty(s, d, batch, **opts) for d in outs[:-1]]

    def prepare(self, x: Tensor) -> Tensor:
        """(N, ...) -> (N, D + 1): flattened, with a last column of ones."""
        x = x.flatten(1)
        return torch.cat([x, torch.ones(len(x), 1, device=x.device, dtype=x.dtype)], 1)

    def step(self, xb: Tensor, yb: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        """One step on ``xb`` (S, B, D + 1), ``yb`` (S, B): per-seed loss (S,), correct (S,)."""
        acts = [xb.transpose(1, 2)]  # (S, d + 1, B) each
        for i, m in enumerate(self.M):
            z = torch.bmm(m, acts[-1], out=self.z[i])
            if i < len(self.h):
                torch.clamp_min(z, 0, out=self.h[i][:, :-1])  # ReLU
                acts.append(self.h[i])
        logits = self.z[-1]  # (S, C, B)
        loss, correct, dz = _cross_entropy(logits, yb, self.recipe["label_smoothing"])
        for i in range(len(self.M) - 1, -1, -1):
            torch.bmm(dz, acts[i].transpose(1, 2), out=self.G[i])
            if i:
                dh = torch.bmm(self.M[i][..., :-1].transpose(1, 2), dz, out=self.dh[i - 1])
                dz = torch.ops.aten.threshold_backward.grad_input(
                    dh, self.h[i - 1][:, :-1], 0, grad_input=dh)  # ReLU backward
        self._sgd(lr)
        return loss, correct


class CNN1DProgram(_FlatLayers):
    """The 1-D CNN (``cnn1d``, no BatchNorm): hand-written batched steps.

    Each Conv1d (kernel k, stride 2, padding 1) is a matrix product over im2col
    patches: the zero-padded input (S, C_in, B, L_in + 2) is unfolded into
    ``P`` (S, C_in * k + 1, B * L_out) with a last row of ones, and
    ``z = M @ P`` with ``M = [W.flatten(1) | b]`` (S, C_out, C_in * k + 1); the
    gradient is ``dz @ P^T`` and the input gradient ``M^T dz`` folded back onto the
    input positions (k strided adds). The head is the MLP's feature-major linear
    layer on the flattened (C, L_out) features. SGD as in :class:`MLPProgram`.
    """

    def __init__(self, models: list[nn.Module], recipe: Mapping[str, Any], batch: int,
                 input_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype):
        super().__init__(models, (nn.Conv1d, nn.Linear), recipe, device, dtype)
        s, opts = len(models), {"device": device, "dtype": dtype}
        length = input_shape[-1]
        self.pad, self.patches, self.z, self.dpad, self.dz, self.lengths = [], [], [], [], [], []
        for c_out, c_in, k in self.shapes[:-1]:
            l_out = (length + 2 - k) // 2 + 1
            self.pad.append(torch.zeros(s, c_in, batch, length + 2, **opts))
            self.patches.append(torch.ones(s, c_in * k + 1, batch * l_out, **opts))
            self.z.append(torch.empty(s, c_out, batch, l_out, **opts))
            self.dpad.append(torch.zeros(s, c_in, batch, length + 2, **opts))
            self.dz.append(torch.empty(s, c_out, batch, l_out, **opts))
            self.lengths.append((length, l_out))
            length = l_out
        c = self.shapes[-2][0]
        self.h = torch.ones(s, c * length + 1, batch, **opts)  # head input; ones
        self.logits = torch.empty(s, self.shapes[-1][0], batch, **opts)

    def prepare(self, x: Tensor) -> Tensor:
        """(N, L) or (N, C, L) -> (N, C, L)."""
        return x.unsqueeze(1) if x.dim() == 2 else x

    def step(self, xb: Tensor, yb: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        """One step on ``xb`` (S, B, C, L), ``yb`` (S, B): per-seed loss (S,), correct (S,)."""
        s, b = xb.shape[0], xb.shape[1]
        self.pad[0][..., 1:-1] = xb.transpose(1, 2)
        n = len(self.z)
        for i, (m, pad, patches) in enumerate(zip(self.M[:n], self.pad, self.patches, strict=True)):
            c_out, c_in, k = self.shapes[i]
            l_out = self.lengths[i][1]
            patches[:, :-1].view(s, c_in, k, b, l_out).copy_(
                pad.unfold(-1, k, 2).permute(0, 1, 4, 2, 3))  # im2col
            z = torch.bmm(m, patches, out=self.z[i].view(s, c_out, b * l_out))
            z = z.view(s, c_out, b, l_out)
            if i + 1 < n:
                torch.clamp_min(z, 0, out=self.pad[i + 1][..., 1:-1])  # ReLU
            else:  # ReLU, flattened per example as (C, L): (S, C * L, B)
                torch.clamp_min(z.permute(0, 1, 3, 2), 0,
                                out=self.h[:, :-1].view(s, c_out, l_out, b))
        torch.bmm(self.M[-1], self.h, out=self.logits)
        loss, correct, dz = _cross_entropy(self.logits, yb, self.recipe["label_smoothing"])
        torch.bmm(dz, self.h.transpose(1, 2), out=self.G[-1])
        c_out, l_out = self.shapes[-2][0], self.lengths[-1][1]
        dh = torch.bmm(self.M[-1][..., :-1].transpose(1, 2), dz)  # (S, C * L, B)
        dh = torch.ops.aten.threshold_backward.grad_input(dh, self.h[:, :-1], 0, grad_input=dh)
        self.dz[-1].copy_(dh.view(s, c_out, l_out, b).permute(0, 1, 3, 2))
        for i in range(n - 1, -1, -1):
            c_out, c_in, k = self.shapes[i]
            l_in, l_out = self.lengths[i]
            dz = self.dz[i].view(s, c_out, b * l_out)
            torch.bmm(dz, self.patches[i].transpose(1, 2), out=self.G[i])
            if i:
                dp = torch.bmm(self.M[i][..., :-1].transpose(1, 2), dz)
                dp = dp.view(s, c_in, k, b, l_out)
                dpad = self.dpad[i].zero_()
                for t in range(k):  # col2im: tap t of output j reads input 2 j + t
                    dpad[..., t:t + 2 * l_out - 1:2] += dp[:, :, t]
                torch.ops.aten.threshold_backward.grad_input(
                    dpad[..., 1:-1], self.pad[i][..., 1:-1], 0, grad_input=self.dz[i - 1])
        self._sgd(lr)
        return loss, correct


def _cross_entropy(logits: Tensor, y: Tensor,
                   smoothing: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-seed cross-entropy of ``logits`` (S, C, B) against ``y`` (S, B) and its gradient.

    Returns each seed's ``F.cross_entropy(..., label_smoothing=smoothing)`` (S,), its
    number of correct predictions (S,) (the label's logit is the largest; an exact
    tie, which ``argmax`` would give to the first class, counts as correct; a strided
    ``argmax`` costs as much as a layer here), and the gradient with respect to the
    logits, ``(softmax - target) / B`` with ``target = (1 - smoothing) * onehot +
    smoothing / C``, (S, C, B).
    """
    c, b = logits.shape[1], logits.shape[2]
    logp = torch.log_softmax(logits, 1)
    nll = -logp.gather(1, y.unsqueeze(1)).squeeze(1)  # (S, B)
    correct = (-nll >= logp.amax(1)).sum(1)
    loss = nll.mean(1)
    if smoothing:
        loss = (1 - smoothing) * loss + smoothing * (-logp.sum(1)).mean(1) / c
    dz = logp.exp_()
    dz.scatter_add_(1, y.unsqueeze(1), torch.full_like(nll, smoothing - 1).unsqueeze(1))
    if smoothing:
        dz.sub_(smoothing / c)
    return loss, correct, dz.div_(b)



Program = VmapProgram | MLPProgram | CNN1DProgram

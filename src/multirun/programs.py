"""One optimisation step of S stacked models: three interchangeable programs.

Each holds the parameters of S models stacked along a new leading axis and offer

* ``prepare(x)``: the training inputs ``(N, ...)`` in the form ``step`` takes;
* ``step(xb, yb, lr) -> (loss (S,), correct (S,))``: forward, backward and optimiser
  update of all S models, seed ``s`` on its own batch ``xb[s]`` (B, ...) with labels
  ``yb[s]`` (B,) int64, at learning rate ``lr`` (one float, or S floats, one per
  member); ``loss`` is each seed's mean loss, ``correct`` its number of correct
  predictions;
* ``state() -> {name: (S, ...) tensor}``: the stacked ``state_dict`` of the S models;
* ``opt``: the :class:`MemberOptimizer` (``opt.reset(members)`` clears the optimiser
  state of some members).

Every program takes the shared recipe and ``per_member`` values
(:func:`multirun.recipe.split_members`): members may differ in learning rate,
momentum, weight decay, label smoothing, betas and eps. The update is
:class:`MemberOptimizer`: ``torch.optim.SGD`` / ``Adam`` / ``AdamW``'s single-tensor
arithmetic applied element-wise with (S,) hyperparameters, so member ``s`` computes
what one optimiser with its own recipe computes.

:class:`VmapProgram` trains any model of the zoo: ``torch.func.vmap`` over
``torch.func.functional_call`` of a parameter-less copy, autograd, :class:`MemberOptimizer`.
:class:`MLPProgram` trains a plain MLP (no BatchNorm) faster with the same arithmetic
up to rounding: a hand-written batched forward/backward (``torch.bmm``; each layer's
bias is folded into its weight matrix as one more input, fed a constant 1, so neither
the bias add nor the bias gradient is a separate pass), every buffer allocated once,
and one fused optimiser update over a single flat parameter buffer.
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
from multirun.timing import timed_phase

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


# ----------------------------------------------------------------------------- the update


Value = float | Tensor  # one number for every member, or (S,) per member
FUSED_RUNS = 16  # at most this many runs of members with equal SGD numbers: fused per run


def _axpy(y: Tensor, x: Tensor, a: Value) -> Tensor:
    """``y += a * x`` in place (``a`` a float as torch.optim writes it, or a broadcast tensor)."""
    return y.add_(x, alpha=a) if isinstance(a, float) else y.addcmul_(x, a)


def _b(v: Value, t: Tensor) -> Value:
    """Per-member value ``v`` (S,) viewed to broadcast against ``t`` (S, ...); floats as they are."""
    return v if isinstance(v, float) else v.view(-1, *([1] * (t.dim() - 1)))


class MemberOptimizer:
    """The optimiser of S stacked members, with per-member hyperparameters.

    ``params``: tensors (S, ...), member ``s`` in row ``s``, updated in place.
    ``flat``: optionally one buffer pair (parameters, gradients) of which every
    ``params[i]`` (and its gradient) is a view; the SGD update then runs as
    ``torch._fused_sgd_`` passes: once over the flat buffer where all members agree on
    every number, else once per run of consecutive members with equal numbers (a
    sweep's points), up to ``FUSED_RUNS`` runs. ``recipe`` is the shared recipe and
    ``per_member`` the S values of
    :data:`multirun.recipe.PER_MEMBER_KEYS` (:func:`multirun.recipe.split_members`).

    Arithmetic, per element, with member ``s``'s numbers: ``sgd``/``nesterov``:
    ``torch.optim.SGD`` (coupled weight decay, dampening 0); ``adam``:
    ``torch.optim.Adam`` (coupled weight decay); ``adamw``: ``torch.optim.AdamW``
    (``p *= 1 - lr * wd``). Where members agree the very same calls as the
    single-tensor torch optimisers are made; where they differ, the same
    operations with (S,) tensors broadcast over each parameter.
    """

    def __init__(self, params: list[Tensor], recipe: Mapping[str, Any],
                 per_member: Mapping[str, list[Any]] | None = None,
                 flat: tuple[Tensor, Tensor] | None = None):
        self.params = params
        self.s = params[0].shape[0]
        self.kind = recipe["optimizer"]
        per_member = dict(per_member or {})
        keys = ("momentum",) if self.kind in ("sgd", "nesterov") else ("betas", "eps")
        self.values: dict[str, list[Any]] = {
            k: list(per_member.get(k, [recipe[k]] * self.s))
            for k in ("weight_decay", *keys)}
        if "betas" in self.values:
            self.values["beta1"] = [float(b[0]) for b in self.values["betas"]]
            self.values["beta2"] = [float(b[1]) for b in self.values["betas"]]
            del self.values["betas"]
        self.flat = flat
        self.device, self.dtype = params[0].device, params[0].dtype
        self.h = {k: self._value(v) for k, v in self.values.items()}
        self.first = True
        self.t = 0  # Adam's step count (shared: every member takes every step)

        def like_params(buf: Tensor) -> list[Tensor]:  # views of a flat buffer, as params
            base = flat[0].storage_offset()
            return [buf.as_strided(p.shape, p.stride(), p.storage_offset() - base)
                    for p in params]

        def zeros() -> list[Tensor]:  # state buffers, views of one flat buffer with ``flat``
            if flat is None:
                return [torch.zeros_like(p) for p in params]
            buf = torch.zeros_like(flat[0])
            return like_params(buf) + [buf]
        self._grads = like_params(flat[1]) if flat is not None else None
        self._runs: dict[tuple[int, int], tuple[list[Tensor], ...]] = {}
        if self.kind in ("sgd", "nesterov"):
            self.momentum = any(self.values["momentum"])
            self.state = {"momentum": zeros()} if self.momentum else {}
        else:
            self.state = {"exp_avg": zeros(), "exp_avg_sq": zeros()}

    def _value(self, values: list[float]) -> Value:
        """A float where all S members agree, else an (S,) tensor on the parameters' device."""
        if all(v == values[0] for v in values):
            return float(values[0])
        return torch.tensor(values, dtype=self.dtype, device=self.device)

    def _pieces(self, grads: list[Tensor], uniform: bool) -> list[tuple[Tensor, ...]]:
        """(param, grad, *state) tuples: the one flat buffer where possible, else per tensor."""
        names = list(self.state)
        if uniform and self.flat is not None:
            return [(*self.flat, *(self.state[k][-1] for k in names))]
        n = len(self.params)
        return list(zip(self.params, grads, *(self.state[k][:n] for k in names), strict=True))

    def reset(self, members: Tensor) -> None:
        """Zero the optimiser state (momentum, Adam moments) of ``members`` (S,) bool."""
        for bufs in self.state.values():
            for buf in bufs[:len(self.params)]:
                buf[members.to(buf.device)] = 0

    @torch.no_grad()
    def step(self, lr: float | list[float], grads: list[Tensor]) -> None:
        """One update of every parameter with its gradient ``grads[i]`` at learning rate ``lr``."""
        lrs = [float(lr)] * self.s if isinstance(lr, int | float) else [float(v) for v in lr]
        if self.kind in ("sgd", "nesterov"):
            self._sgd(lrs, grads)
        else:
            self._adam(lrs, grads)
        self.first = False

    def _member_runs(self, start: int, stop: int) -> tuple[list[Tensor], ...]:
        """(params, grads, momentum buffers) of members ``start:stop``: the flat buffers for
        all members, else views of every layer's rows (made once)."""
        if (start, stop) not in self._runs:
            n, mom = len(self.params), self.state.get("momentum", [])
            if (start, stop) == (0, self.s):
                views = ([self.flat[0]], [self.flat[1]], mom[-1:])
            else:
                views = ([p[start:stop] for p in self.params],
                         [g[start:stop] for g in self._grads], [b[start:stop] for b in mom[:n]])
            self._runs[start, stop] = views
        return self._runs[start, stop]

    def _sgd(self, lrs: list[float], grads: list[Tensor]) -> None:
        nesterov = self.kind == "nesterov"
        if self.flat is not None and hasattr(torch, "_fused_sgd_"):
            # members in runs of equal numbers (one run: every member; a sweep: one per
            # point): torch's fused SGD pass over each run, the very update of one
            # torch.optim.SGD per point, where the runs are few
            numbers = list(zip(lrs, self.values["momentum"], self.values["weight_decay"],
                               strict=True))
            starts = [i for i in range(self.s) if i == 0 or numbers[i] != numbers[i - 1]]
            if len(starts) <= FUSED_RUNS:
                for start, stop in zip(starts, [*starts[1:], self.s], strict=True):
                    lr, m, wd = (float(v) for v in numbers[start])
                    p, g, buf = self._member_runs(start, stop)
                    torch._fused_sgd_(p, g, buf if m else [], weight_decay=wd, momentum=m, lr=lr,
                                      dampening=0.0, nesterov=nesterov, maximize=False,
                                      is_first_step=self.first)
                return
        lr, m, wd = self._value(lrs), self.h["momentum"], self.h["weight_decay"]
        uniform = all(isinstance(v, float) for v in (lr, m, wd))
        neg_lr = -lr
        for p, g, *buf in self._pieces(grads, uniform):
            if not isinstance(wd, float) or wd:
                g = _axpy(g, p, _b(wd, p))
            if self.momentum:
                buf = buf[0].copy_(g) if self.first else buf[0].mul_(_b(m, p)).add_(g)
                g = _axpy(g, buf, _b(m, p)) if nesterov else buf
            _axpy(p, g, _b(neg_lr, p))

    def _adam(self, lrs: list[float], grads: list[Tensor]) -> None:
        self.t += 1
        step = float(self.t)
        v = self.values
        lr, wd, eps = self._value(lrs), self.h["weight_decay"], self.h["eps"]
        # the scalars torch.optim.Adam computes in Python, per member
        omb1 = self._value([1 - b for b in v["beta1"]])
        b2, omb2 = self.h["beta2"], self._value([1 - b for b in v["beta2"]])
        neg_step = self._value([-(a / (1 - b ** step)) for a, b in zip(lrs, v["beta1"],
                                                                      strict=True)])
        bc2_sqrt = self._value([(1 - b ** step) ** 0.5 for b in v["beta2"]])
        decay = self._value([1 - a * w for a, w in zip(lrs, v["weight_decay"], strict=True)])
        uniform = all(isinstance(x, float) for x in (lr, wd, eps, omb1, b2, omb2, neg_step,
                                                     bc2_sqrt, decay))
        for p, g, exp_avg, exp_avg_sq in self._pieces(grads, uniform):
            if not isinstance(wd, float) or wd:
                if self.kind == "adamw":
                    p.mul_(_b(decay, p))
                else:
                    g = _axpy(g, p, _b(wd, p))
            exp_avg.lerp_(g, _b(omb1, p))
            if uniform:
                exp_avg_sq.mul_(b2).addcmul_(g, g, value=omb2)
                denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
                p.addcdiv_(exp_avg, denom, value=neg_step)
            else:
                exp_avg_sq.mul_(_b(b2, p)).addcmul_(g, g * _b(omb2, p))
                denom = (exp_avg_sq.sqrt() / _b(bc2_sqrt, p)).add_(_b(eps, p))
                p.add_(exp_avg.mul(_b(neg_step, p)).div_(denom))


# ----------------------------------------------------------------------------- any model: vmap


def _cast(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Move ``t`` to ``device``; floating tensors also to ``dtype`` (integer counters stay)."""
    return t.to(device, dtype) if t.is_floating_point() else t.to(device)


class VmapProgram:
    """Any model: ``vmap`` of ``functional_call`` + autograd + :class:`MemberOptimizer`.

    BatchNorm running statistics are stacked buffers updated in place per seed
    inside ``vmap``. ``models`` are the S freshly initialised models (CPU).
    """

    def __init__(self, models: list[nn.Module], spec: Mapping[str, Any],
                 input_shape: tuple[int, ...], num_classes: int, recipe: Mapping[str, Any],
                 probe: tuple[Tensor, Tensor], device: torch.device, dtype: torch.dtype,
                 per_member: Mapping[str, list[Any]] | None = None):
        base = meta_model(spec, input_shape, num_classes).train()
        params = {k: torch.stack([m.get_parameter(k).detach() for m in models]).to(device, dtype)
                  for k, _ in models[0].named_parameters()}
        self.buffers = {k: _cast(torch.stack([m.get_buffer(k) for m in models]), device, dtype)
                        for k, _ in models[0].named_buffers()}
        for p in params.values():
            p.requires_grad_(True)
        s = len(models)
        smoothing = list((per_member or {}).get("label_smoothing",
                                                [recipe["label_smoothing"]] * s))
        if all(v == smoothing[0] for v in smoothing):  # F.cross_entropy's own smoothing
            def loss_one(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor, yb: Tensor
                         ) -> tuple[Tensor, Tensor]:
                logits = functional_call(base, (p, b), (xb,))
                loss = F.cross_entropy(logits, yb, label_smoothing=smoothing[0])
                return loss, (logits.argmax(-1) == yb).sum()

            self.batched_loss = vmap(loss_one, randomness="error")
        else:  # per member: F.cross_entropy's formula with each member's smoothing
            def smoothed_one(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor,
                             yb: Tensor, sm: Tensor) -> tuple[Tensor, Tensor]:
                logits = functional_call(base, (p, b), (xb,))
                logp = torch.log_softmax(logits, -1)
                nll = -logp.gather(-1, yb.unsqueeze(-1)).mean()
                loss = (1 - sm) * nll + sm * ((-logp.sum(-1)).mean() / logits.shape[-1])
                return loss, (logits.argmax(-1) == yb).sum()

            batched = vmap(smoothed_one, randomness="error")
            sm = torch.tensor(smoothing, dtype=dtype, device=device)
            self.batched_loss = lambda p, b, xb, yb: batched(p, b, xb, yb, sm)
        self.params = _match_grad_layout(params, self.buffers, self.batched_loss, *probe)
        self.opt = MemberOptimizer(list(self.params.values()), recipe, per_member)

    def prepare(self, x: Tensor) -> Tensor:
        """The inputs as they are: (N, ...)."""
        return x

    def step(self, xb: Tensor, yb: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        """One step on ``xb`` (S, B, ...), ``yb`` (S, B): per-seed loss (S,) and correct (S,)."""
        loss, correct = self.batched_loss(self.params, self.buffers, xb, yb)
        params = list(self.params.values())
        for p in params:
            p.grad = None
        loss.sum().backward()
        self.opt.step(lr, [p.grad if p.grad is not None else torch.zeros_like(p)
                           for p in params])
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
    view of ``grad``. ``opt`` (:class:`MemberOptimizer`) updates all of them: for SGD in
    one fused pass over ``flat`` where the members agree on every number, one per run of
    members with equal numbers, else (and for Adam) layer by layer with per-member (S,)
    hyperparameters.
    """

    phases: dict | None = None  # benchmarks: seconds per part of step() (multirun.timing)

    def __init__(self, models: list[nn.Module], kinds: tuple[type, ...],
                 recipe: Mapping[str, Any], device: torch.device, dtype: torch.dtype,
                 per_member: Mapping[str, list[Any]] | None = None):
        s = len(models)
        layers = [[m for m in model.modules() if isinstance(m, kinds)] for model in models]
        self.names = [k for k, m in models[0].named_modules() if isinstance(m, kinds)]
        self.shapes = [tuple(layer.weight.shape) for layer in layers[0]]
        sizes = [s * shape[0] * (math.prod(shape[1:]) + 1) for shape in self.shapes]
        self.flat = torch.empty(sum(sizes), device=device, dtype=dtype)
        self.grad = torch.empty_like(self.flat)
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
        self.opt = MemberOptimizer(self.M, recipe, per_member, flat=(self.flat, self.grad))
        s_members = list((per_member or {}).get("label_smoothing",
                                                [recipe["label_smoothing"]] * s))
        self.smoothing = (float(s_members[0]) if all(v == s_members[0] for v in s_members)
                          else torch.tensor(s_members, dtype=dtype, device=device))

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
    buffer (and their gradients of another), so the SGD update of members that agree
    on every number is one fused pass.
    Buffers are allocated once. Any device, float32 or float64.
    """

    def __init__(self, models: list[nn.Module], recipe: Mapping[str, Any], batch: int,
                 device: torch.device, dtype: torch.dtype,
                 per_member: Mapping[str, list[Any]] | None = None):
        super().__init__(models, (nn.Linear,), recipe, device, dtype, per_member)
        s, outs = len(models), [shape[0] for shape in self.shapes]
        opts = {"device": device, "dtype": dtype}
        self.z = [torch.empty(s, d, batch, **opts) for d in outs]  # pre-activations
        self.h = [torch.ones(s, d + 1, batch, **opts) for d in outs[:-1]]  # ReLU; ones
        self.dh = [torch.empty(s, d, batch, **opts) for d in outs[:-1]]

    def prepare(self, x: Tensor) -> Tensor:
        """(N, ...) -> (N, D + 1): flattened, with a last column of ones."""
        x = x.flatten(1)
        return torch.cat([x, torch.ones(len(x), 1, device=x.device, dtype=x.dtype)], 1)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
        """Test loss (mean cross-entropy, no smoothing) and accuracy of every member, (S,)
        float64 each, on ``x`` (M, D + 1) from :meth:`prepare` and ``y`` (M,) int64.

        The training forward pass on ``chunk`` examples at a time, feature-major, into
        buffers allocated once: each product into a contiguous buffer, its ReLU into the
        next layer's input (a product written straight into a strided view cost 1.6-2.3x
        as much here), and the predicted class from the logits laid out class-last (a
        strided ``argmax`` over the 10 classes cost as much as a layer).
        """
        s, dev = self.M[0].shape[0], self.flat.device
        loss = torch.zeros(s, dtype=torch.float64, device=dev)
        correct = torch.zeros(s, dtype=torch.float64, device=dev)
        for start in range(0, len(x), chunk):
            xb, yb = x[start:start + chunk].T.contiguous(), y[start:start + chunk]
            m = xb.shape[1]
            if getattr(self, "_eval", None) is None or self._eval[-1].shape[2] != m:
                opts = {"device": dev, "dtype": self.flat.dtype}
                self._eval = [torch.ones(s, shape[0] + 1, m, **opts)  # ReLU; ones
                              for shape in self.shapes[:-1]]
                self._eval_z = {d: torch.empty(s, d, m, **opts)
                                for d in {shape[0] for shape in self.shapes[:-1]}}
                self._eval.append(torch.empty(s, self.shapes[-1][0], m, **opts))
            a = xb.unsqueeze(0).expand(s, -1, -1)
            for i, mat in enumerate(self.M[:-1]):
                z = torch.bmm(mat, a, out=self._eval_z[mat.shape[1]])
                a = self._eval[i]
                torch.clamp_min(z, 0, out=a[:, :-1])
            logits = torch.bmm(self.M[-1], a, out=self._eval[-1])  # (S, C, m)
            logp = torch.log_softmax(logits, 1)
            loss -= logp.gather(1, yb.view(1, 1, m).expand(s, 1, m)).sum((1, 2)).double()
            predicted = logits.transpose(1, 2).contiguous().argmax(-1)  # (S, m)
            correct += (predicted == yb).sum(1).double()
        return loss / max(1, len(x)), correct / max(1, len(x))

    def step(self, xb: Tensor, yb: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        """One step on ``xb`` (S, B, D + 1), ``yb`` (S, B): per-seed loss (S,), correct (S,).

        With a ``phases`` dict set (benchmarks), each part's seconds are added to it:
        ``forward GEMM``, ``backward GEMM``, ``elementwise`` (ReLU, its backward, the
        loss and its gradient) and ``optimiser``."""
        ph, dev = self.phases, self.flat.device
        acts = [xb.transpose(1, 2)]  # (S, d + 1, B) each
        for i, m in enumerate(self.M):
            with timed_phase(ph, "forward GEMM", dev):
                z = torch.bmm(m, acts[-1], out=self.z[i])
            if i < len(self.h):
                with timed_phase(ph, "elementwise", dev):
                    torch.clamp_min(z, 0, out=self.h[i][:, :-1])  # ReLU
                acts.append(self.h[i])
        logits = self.z[-1]  # (S, C, B)
        with timed_phase(ph, "elementwise", dev):
            loss, correct, dz = _cross_entropy(logits, yb, self.smoothing)
        for i in range(len(self.M) - 1, -1, -1):
            with timed_phase(ph, "backward GEMM", dev):
                torch.bmm(dz, acts[i].transpose(1, 2), out=self.G[i])
                if i:
                    dh = torch.bmm(self.M[i][..., :-1].transpose(1, 2), dz, out=self.dh[i - 1])
            if i:
                with timed_phase(ph, "elementwise", dev):
                    dz = torch.ops.aten.threshold_backward.grad_input(
                        dh, self.h[i - 1][:, :-1], 0, grad_input=dh)  # ReLU backward
        with timed_phase(ph, "optimiser", dev):
            self.opt.step(lr, self.G)
        return loss, correct


class CNN1DProgram(_FlatLayers):
    """The 1-D CNN (``cnn1d``, no BatchNorm): hand-written batched steps.

    Each Conv1d (kernel k, stride 2, padding 1) is a matrix product over im2col
    patches: the zero-padded input (S, C_in, B, L_in + 2) is unfolded into
    ``P`` (S, C_in * k + 1, B * L_out) with a last row of ones, and
    ``z = M @ P`` with ``M = [W.flatten(1) | b]`` (S, C_out, C_in * k + 1); the
    gradient is ``dz @ P^T`` and the input gradient ``M^T dz`` folded back onto the
    input positions (k strided adds). The head is the MLP's feature-major linear
    layer on the flattened (C, L_out) features. The update as in :class:`MLPProgram`.
    """

    def __init__(self, models: list[nn.Module], recipe: Mapping[str, Any], batch: int,
                 input_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype,
                 per_member: Mapping[str, list[Any]] | None = None):
        super().__init__(models, (nn.Conv1d, nn.Linear), recipe, device, dtype, per_member)
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
        loss, correct, dz = _cross_entropy(self.logits, yb, self.smoothing)
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
        self.opt.step(lr, self.G)
        return loss, correct


def _cross_entropy(logits: Tensor, y: Tensor,
                   smoothing: Value) -> tuple[Tensor, Tensor, Tensor]:
    """Per-seed cross-entropy of ``logits`` (S, C, B) against ``y`` (S, B) and its gradient.

    Returns each seed's ``F.cross_entropy(..., label_smoothing=smoothing)`` (S,), its
    number of correct predictions (S,) (the label's logit is the largest; an exact
    tie, which ``argmax`` would give to the first class, counts as correct; a strided
    ``argmax`` costs as much as a layer here), and the gradient with respect to the
    logits, ``(softmax - target) / B`` with ``target = (1 - smoothing) * onehot +
    smoothing / C``, (S, C, B). ``smoothing``: one float, or (S,) per member.
    """
    c, b = logits.shape[1], logits.shape[2]
    logp = torch.log_softmax(logits, 1)
    nll = -logp.gather(1, y.unsqueeze(1)).squeeze(1)  # (S, B)
    correct = (-nll >= logp.amax(1)).sum(1)
    loss = nll.mean(1)
    per_member = not isinstance(smoothing, float)
    if per_member or smoothing:
        loss = (1 - smoothing) * loss + smoothing * (-logp.sum(1)).mean(1) / c
    dz = logp.exp_()
    target = (smoothing - 1).view(-1, 1).expand_as(nll) if per_member else \
        torch.full_like(nll, smoothing - 1)
    dz.scatter_add_(1, y.unsqueeze(1), target.unsqueeze(1))
    if per_member or smoothing:
        dz.sub_(_b(smoothing / c, dz))
    return loss, correct, dz.div_(b)



Program = VmapProgram | MLPProgram | CNN1DProgram

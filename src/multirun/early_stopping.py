"""Early stopping for a vectorised shard: every seed stops on its own validation accuracy.

After each epoch :meth:`EarlyStopping.update` evaluates the S stacked models on a
held-out validation split (eval mode: BatchNorm uses running statistics), keeps
each seed's best state so far (highest validation accuracy; the earliest epoch
wins ties) and reports whether every seed has gone ``patience`` epochs without
improving. A seed that has stopped keeps training with the others (that is the
price of one vectorised program) but its kept state no longer changes, so the
result is exactly per-seed early stopping with "restore best weights".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap


class EarlyStopping:
    """Track the best validation accuracy of S stacked models.

    ``base``: a parameter-less (meta) copy of the architecture; ``x_val`` (Nv, ...)
    float and ``y_val`` (Nv,) int64 on the training device; ``patience`` epochs
    without improvement stop a seed; ``batch_size`` validation examples per pass.
    """

    def __init__(self, base: nn.Module, x_val: Tensor, y_val: Tensor, patience: int,
                 batch_size: int = 4096):
        self.base = base
        self.x_val, self.y_val = x_val, y_val
        self.patience = int(patience)
        self.batch_size = int(batch_size)
        self.best_acc: Tensor | None = None     # (S,) float64
        self.best_epoch: Tensor | None = None   # (S,) int64, 0-based
        self.best_state: dict[str, Tensor] = {}
        self.val_acc: list[Tensor] = []         # one (S,) per epoch

    @torch.no_grad()
    def accuracy(self, params: dict[str, Tensor], buffers: dict[str, Tensor]) -> Tensor:
        """Validation accuracy of every seed: (S,) float64."""
        was_training = self.base.training
        self.base.eval()
        try:
            def one(p, b, xb):
                return functional_call(self.base, (p, b), (xb,)).argmax(-1)

            batched = vmap(one, in_dims=(0, 0, None))
            correct = 0
            for start in range(0, len(self.x_val), self.batch_size):
                xb = self.x_val[start:start + self.batch_size]
                yb = self.y_val[start:start + self.batch_size]
                correct = correct + (batched(params, buffers, xb) == yb).sum(1)
        finally:
            self.base.train(was_training)
        return correct.double() / max(1, len(self.x_val))

    @torch.no_grad()
    def update(self, epoch: int, params: dict[str, Tensor], buffers: dict[str, Tensor]) -> bool:
        """Score epoch ``epoch`` (0-based); keep improved states; True when every seed has stopped."""
        acc = self.accuracy(params, buffers)
        self.val_acc.append(acc.float().cpu())
        state = {k: v.detach() for k, v in {**params, **buffers}.items()}
        if self.best_acc is None:
            self.best_acc = acc
            self.best_epoch = torch.zeros_like(acc, dtype=torch.int64)
            self.best_state = {k: v.clone() for k, v in state.items()}
            return False
        stopped = epoch - self.best_epoch > self.patience  # stopped before this epoch
        better = (acc > self.best_acc) & ~stopped
        for k, v in state.items():
            mask = better.view(-1, *([1] * (v.dim() - 1)))
            self.best_state[k] = torch.where(mask, v, self.best_state[k])
        self.best_acc = torch.where(better, acc, self.best_acc)
        self.best_epoch = torch.where(better, torch.full_like(self.best_epoch, epoch),
                                      self.best_epoch)
        return bool((epoch - self.best_epoch >= self.patience).all())

    def history(self) -> dict[str, Tensor]:
        """``val_acc`` (S, epochs run) float32 and ``best_epoch`` (S,) int64 (0-based)."""
        return {"val_acc": torch.stack(self.val_acc, 1), "best_epoch": self.best_epoch.cpu()}

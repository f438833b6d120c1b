"""TRAK scores from MadryLab's ``traker`` package (``pip install traker``), on the CPU.

Runs ``trak.TRAKer`` (task ``image_classification``: the same model output
``z_y - logsumexp_{c != y} z_c`` and out-to-loss ``1 - p_y`` as
:mod:`multirun.attribution.trak`) over an ensemble, in float32
(``use_half_precision=False``). Two facts about traker 0.3.2 on the CPU:

* its ``BasicProjector`` with a single block crashes when scoring
  (``AttributeError: 'BasicProjector' object has no attribute 'proj_matrix'``:
  ``finalize_features`` frees the matrix, and ``project`` regenerates it only when there
  are several blocks or the model id changes). Workaround used here: a BasicProjector with
  ``block_size = ceil(proj_dim / 2)``, i.e. two blocks, regenerated from its seeds on every call;
* it rescales each model's ``(Phi^T Phi)^-1`` by the mean of its absolute entries before
  averaging over models, so with several models its ensemble weights each model differently
  from the paper's plain mean (the test with one model is exact up to that scale).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def traker_scores(models: Sequence[nn.Module], x_train: torch.Tensor, y_train: torch.Tensor,
                  x_test: torch.Tensor, y_test: torch.Tensor, *, proj_dim: int | None = 512,
                  seed: int = 0, ridge: float = 0.0, batch_size: int = 256,
                  save_dir: str | os.PathLike | None = None) -> np.ndarray:
    """(T, N_train) float32 TRAK scores of the ensemble ``models`` from ``trak.TRAKer``.

    ``proj_dim=None``: no projection (traker's ``NoOpProjector``). ``save_dir``: traker's
    store (memory-mapped features; default a temporary folder, removed afterwards).
    """
    from trak import TRAKer
    from trak.projectors import BasicProjector, NoOpProjector

    base = models[0]
    grad_dim = sum(p.numel() for p in base.parameters())
    dtype = next(base.parameters()).dtype
    if proj_dim is None:
        projector = NoOpProjector(grad_dim=grad_dim, proj_dim=0, seed=seed, proj_type="normal",
                                  device="cpu")
    else:
        projector = BasicProjector(grad_dim=grad_dim, proj_dim=int(proj_dim), seed=seed,
                                   proj_type="normal", device="cpu",
                                   block_size=math.ceil(int(proj_dim) / 2), dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        tr = TRAKer(model=base, task="image_classification", train_set_size=len(x_train),
                    save_dir=str(save_dir or tmp), device="cpu", projector=projector,
                    use_half_precision=False, lambda_reg=float(ridge), logging_level=40)
        for m, model in enumerate(models):
            tr.load_checkpoint(model.state_dict(), model_id=m)
            for s in range(0, len(x_train), batch_size):
                xb, yb = x_train[s:s + batch_size], y_train[s:s + batch_size]
                tr.featurize(batch=(xb, yb), num_samples=len(xb))
        tr.finalize_features()
        for m, model in enumerate(models):
            tr.start_scoring_checkpoint(exp_name="multirun", checkpoint=model.state_dict(),
                                        model_id=m, num_targets=len(x_test))
            for s in range(0, len(x_test), batch_size):
                xb, yb = x_test[s:s + batch_size], y_test[s:s + batch_size]
                tr.score(batch=(xb, yb), num_samples=len(xb))
        scores = np.array(tr.finalize_scores(exp_name="multirun"), dtype=np.float32)
    return np.ascontiguousarray(scores.T)

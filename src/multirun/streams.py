"""The random streams of a training seed: each its own ``torch.Generator``.

Every random stream of a seed comes from its own generator seeded by
``stream_seed(seed, stream)``, so each draw depends only on (seed, stream) and never on
what else trains in the same program:

* ``init``: the model's initialisation (the CPU generator seeded before building it);
* ``order``: one ``randperm`` of the training set per epoch;
* ``noise``: the label-noise draw (:func:`training_labels`);
* ``augment``: flips/crops, drawn per step;
* ``subset``: the rows a member trains on (:func:`subset_mask`).

Kept apart from :mod:`multirun.train` so that what only needs a seed's labels or rows
(Hessians, subset masks) does not rerun when a training program changes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from multirun.contracts import ContractError

STREAMS = {"init": 0, "order": 1, "noise": 2, "augment": 3, "subset": 4}


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for random stream ``stream`` of training seed ``seed``.

    Mixed by ``numpy.random.SeedSequence`` so neighbouring seeds and streams give
    unrelated generators.
    """
    words = np.random.SeedSequence([int(seed), STREAMS[stream]]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for stream ``stream`` of seed ``seed``."""
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def training_labels(y: Tensor, seed: int, label_noise: float, num_classes: int) -> Tensor:
    """The labels seed ``seed`` trains on: ``y`` (N,) int64 -> (N,) int64.

    Exactly ``round(label_noise * N)`` examples, chosen uniformly without
    replacement, get a label drawn uniformly from the *other* ``num_classes - 1``
    classes (the convention of Nakkiran et al.'s deep double descent), so the
    fraction of wrong labels is exactly ``label_noise`` up to rounding. The draw
    comes from the seed's ``noise`` stream: deterministic, different per seed,
    fixed for the whole training run (not redrawn per epoch).
    """
    y = torch.as_tensor(y).to("cpu", torch.int64)
    if not 0.0 <= float(label_noise) <= 1.0:
        raise ContractError(f"recipe label_noise: must be in [0, 1], got {label_noise!r}")
    out = y.clone()
    n_noisy = round(float(label_noise) * len(y))
    if n_noisy == 0:
        return out
    g = generator(seed, "noise")
    chosen = torch.randperm(len(y), generator=g)[:n_noisy]
    offset = torch.randint(1, num_classes, (n_noisy,), generator=g)
    out[chosen] = (y[chosen] + offset) % num_classes
    return out


def subset_mask(seed: int, alpha: float, n: int) -> Tensor:
    """The rows seed ``seed`` trains on: (n,) bool with exactly ``round(alpha * n)`` True.

    Drawn from the seed's own ``subset`` stream (one ``randperm`` of ``n``), so the
    mask depends only on (seed, alpha, n). ``alpha`` in (0, 1].
    """
    ok = isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha <= 1
    k = round(float(alpha) * int(n)) if ok else 0
    if not ok or k < 1:
        raise ContractError(f"subsets.alpha: must be in (0, 1] and keep at least one of "
                            f"the {n} training rows, got {alpha!r}")
    mask = torch.zeros(int(n), dtype=torch.bool)
    mask[torch.randperm(int(n), generator=generator(seed, "subset"))[:k]] = True
    return mask

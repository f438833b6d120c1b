"""Corrupted dataset variants, drawn once per variant so every seed trains on the same data.

Every function takes a dataset in the contract of :func:`multirun.contracts.load_dataset`
(``x_train`` (N, ...) float32, ``y_train`` (N,) int64, the same for test, optional
``images_*``, ``classes``) and returns a new one in the same contract, plus
study-specific arrays documented per function. The test split is never corrupted.
Each draw comes from ``numpy.random.default_rng(seed)``: deterministic in ``seed``.
"""

from __future__ import annotations

import numpy as np

from multirun.contracts import ContractError, num_classes

MEMORIZATION_VARIANTS = ("real", "randx", "randy")


def _fraction(value: float, key: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ContractError(f"{key}: must be in [0, 1], got {value!r}")
    return float(value)


def _chosen(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A (n,) bool mask of exactly round(fraction * n) examples, uniformly without replacement."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: round(fraction * n)]] = True
    return mask


def memorization_variant(ds: dict[str, np.ndarray], variant: str, *, fraction: float,
                         seed: int) -> dict[str, np.ndarray]:
    """Arpit et al.'s data: ``real`` (unchanged), ``randx`` or ``randy``.

    ``randx``: exactly ``round(fraction * N)`` training inputs, chosen uniformly,
    are replaced by i.i.d. N(0, 1) noise of the same shape (``images_train`` of
    those rows are zeroed: there is no picture). ``randy``: that many labels are
    replaced by a class drawn uniformly from all C classes (it may equal the old
    one, as in the note). Adds ``corrupted`` (N,) bool, the rows that were redrawn.
    """
    if variant not in MEMORIZATION_VARIANTS:
        raise ContractError(f"studies.memorization.variants: unknown variant {variant!r}; "
                            f"choose from {', '.join(MEMORIZATION_VARIANTS)}")
    out = {k: v.copy() for k, v in ds.items()}
    n = len(ds["y_train"])
    rng = np.random.default_rng([int(seed), MEMORIZATION_VARIANTS.index(variant)])
    mask = np.zeros(n, dtype=bool) if variant == "real" else _chosen(
        n, _fraction(fraction, f"studies.memorization.{variant}_fraction"), rng)
    if variant == "randx":
        x = out["x_train"]
        x[mask] = rng.standard_normal((int(mask.sum()), *x.shape[1:])).astype(x.dtype)
        if "images_train" in out:
            out["images_train"][mask] = 0
    elif variant == "randy":
        out["y_train"][mask] = rng.integers(0, num_classes(ds), int(mask.sum()))
    out["corrupted"] = mask
    return out


def noisy_copies(ds: dict[str, np.ndarray], alpha: int, *, clean_examples: int, validation: int,
                 seed: int) -> dict[str, np.ndarray]:
    """Rolnick et al.'s uniform label noise: ``alpha`` noisy copies per clean example.

    The first ``clean_examples`` rows of a fixed permutation of the training split
    (the same for every alpha) keep their labels; each is followed by ``alpha``
    copies of its input with labels drawn uniformly from all C classes (with
    replacement: a copy may carry the right label by chance), so ``x_train`` has
    ``clean_examples * (1 + alpha)`` rows. The test split is cut into ``x_val``,
    ``y_val`` (its first ``validation`` rows of a fixed permutation, for early
    stopping) and ``x_test``, ``y_test`` (the rest). Adds ``clean`` (rows,) bool.
    """
    n, nt = len(ds["y_train"]), len(ds["y_test"])
    if not 1 <= clean_examples <= n:
        raise ContractError(f"studies.label_noise.clean_examples: must lie in [1, {n}] "
                            f"(training examples), got {clean_examples}")
    if not 1 <= validation < nt:
        raise ContractError(f"studies.label_noise.validation: must lie in [1, {nt - 1}] "
                            f"(test examples), got {validation}")
    if int(alpha) < 0:
        raise ContractError(f"studies.label_noise.alphas: must be >= 0, got {alpha}")
    alpha = int(alpha)
    pick = np.random.default_rng([int(seed), 0]).permutation(n)[:clean_examples]
    split = np.random.default_rng([int(seed), 1]).permutation(nt)
    rows = np.repeat(pick, 1 + alpha)  # each clean example followed by its alpha copies
    clean = np.zeros(len(rows), dtype=bool)
    clean[:: 1 + alpha] = True
    y = ds["y_train"][rows].copy()
    noise_rng = np.random.default_rng([int(seed), 2, alpha])
    y[~clean] = noise_rng.integers(0, num_classes(ds), int((~clean).sum()))
    val, test = split[:validation], split[validation:]
    out = {
        "x_train": ds["x_train"][rows], "y_train": y, "clean": clean,
        "x_val": ds["x_test"][val], "y_val": ds["y_test"][val],
        "x_test": ds["x_test"][test], "y_test": ds["y_test"][test],
    }
    if "classes" in ds:
        out["classes"] = ds["classes"]
    return out


def label_errors(ds: dict[str, np.ndarray], *, noise: float, seed: int) -> dict[str, np.ndarray]:
    """Inject known label errors: exactly ``round(noise * N)`` training labels, chosen
    uniformly, move to a uniformly drawn *other* class (every chosen label is wrong).

    Adds ``corrupted`` (N,) bool (the ground truth) and ``y_clean`` (N,) int64.
    """
    out = {k: v.copy() for k, v in ds.items()}
    n, c = len(ds["y_train"]), num_classes(ds)
    rng = np.random.default_rng([int(seed), 3])
    mask = _chosen(n, _fraction(noise, "studies.label_errors.noise"), rng)
    shift = rng.integers(1, c, int(mask.sum()))
    out["y_train"][mask] = (ds["y_train"][mask] + shift) % c
    out["corrupted"] = mask
    out["y_clean"] = ds["y_train"].copy()
    return out

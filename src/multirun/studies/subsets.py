"""The ``subsets`` config section: its cross-key rules and the split of the subset models.

Subset model m (seed m) trained on ``masks[m]`` (``multirun.streams.subset_mask``). In seed
order, the models are cut into three splits:

* training: the first ``seeds - validation - heldout`` (datamodels fit on the first n of
  them, n in ``model_counts``);
* validation: the next ``validation`` (each datamodel's ridge penalty);
* held-out: the last ``heldout`` (every attribution's LDS).

Adding seeds moves models between splits but never retrains one.
"""

from __future__ import annotations

import numpy as np

from multirun.config import ConfigError


def alpha_name(alpha: float) -> str:
    """The folder of one alpha under results/subsets/: ``0.5`` -> ``"0.5"``."""
    return f"{float(alpha):g}"


def check(config: dict) -> None:
    """Cross-key rules of ``subsets`` a schema cannot say (ConfigError naming the key)."""
    sub = config["subsets"]
    fit = sub["seeds"] - sub["heldout"] - sub["validation"]
    need = max(sub["model_counts"])
    if fit < need:
        raise ConfigError(
            f"config key subsets.seeds: {sub['seeds']} seeds leave {fit} training models after "
            f"{sub['heldout']} held-out and {sub['validation']} validation models, but "
            f"subsets.model_counts asks for {need}; raise subsets.seeds or lower the splits")
    le = sub["label_errors"]
    if max(le["model_counts"]) > le["seeds"]:
        raise ConfigError(f"config key subsets.label_errors.model_counts: {max(le['model_counts'])} "
                          f"exceeds subsets.label_errors.seeds={le['seeds']}")


def check_full_data(config: dict) -> None:
    """The full-data model counts of ``subsets`` (TRAK, the kernel) within ``train.seeds``.

    Checked when a job that uses them enters the DAG (``snakemake subsets``), not when the
    Snakefile is read: a run with few ``train.seeds`` that never builds ``subsets`` is fine.
    """
    sub = config["subsets"]
    full = config["train"]["seeds"]
    for key, counts in (("kernel_counts", sub["kernel_counts"]),
                        ("trak.model_counts", sub["trak"]["model_counts"]),
                        ("trak.package_counts", sub["trak"]["package_counts"])):
        if counts and max(counts) > full:
            raise ConfigError(f"config key subsets.{key}: {max(counts)} full-data models "
                              f"exceed train.seeds={full}; lower it or train more seeds")


def split(num_models: int, validation: int, heldout: int) -> dict[str, np.ndarray]:
    """Model indices (int64, seed order) of the training, validation and held-out splits."""
    fit = num_models - validation - heldout
    if fit < 2:
        raise ConfigError(f"config key subsets.heldout: {num_models} models leave {fit} for "
                          f"training after {validation} validation and {heldout} held-out")
    idx = np.arange(num_models, dtype=np.int64)
    return {"train": idx[:fit], "validation": idx[fit:fit + validation],
            "heldout": idx[fit + validation:]}


def load_masks(path) -> np.ndarray:
    """``masks.npy`` (models, N_train) bool, in memory."""
    from multirun.contracts import load_npy

    return np.asarray(load_npy(path, ndim=2, dtype=bool))


def margins_on_test(logit_paths, labels: np.ndarray, test_examples: int) -> np.ndarray:
    """Margins (models, T) of every subset model on the first ``test_examples`` test examples."""
    from multirun.attribution import outcomes
    from multirun.kernel import ShardedLogits

    _, margin = outcomes.outcomes(ShardedLogits(logit_paths), labels)
    return margin[:, :min(int(test_examples), len(labels))]

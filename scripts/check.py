"""Verify the intermediates of the default targets against their contracts (rule check).

Each input group is read with the loader of its contract; every file that breaks it is
listed, with one command that remakes them all and everything made from them.
"""

import contextlib
import sys

from multirun import checkpoint, contracts, kernel, knn, snake
from multirun.hessian.effdim import load_effdim_csv


def checks(smk) -> dict:
    """Input group -> function checking one file of it (raises ContractError)."""
    cfg = smk.config
    subsets = knn.subset_count(cfg)
    classes = present = None  # the dataset's classes (none with the 60k published logits)
    with contextlib.suppress(contracts.ContractError):  # a damaged dataset is listed on its own
        for path in smk.input.get("dataset", []):
            ds = contracts.load_dataset(path)
            classes, present = contracts.num_classes(ds), len(set(ds["y_train"].tolist()))

    def logits(path):
        array = contracts.load_npy(path, ndim=3, dtype="float16")
        if classes and array.shape[2] != classes:
            raise contracts.ContractError(f"{path}: logits of {array.shape[2]} classes, the "
                                          f"dataset has {classes}")

    def per_class(path):  # one row per class present and subset
        contracts.load_table(path, "per_class", rows=subsets and present and subsets * present)

    return {
        "dataset": contracts.load_dataset,
        "checkpoints": checkpoint.load_checkpoint,
        "logits": logits,
        "seeds": lambda p: contracts.load_npy(p, ndim=1),
        "features": lambda p: contracts.load_npy(p, ndim=3),
        "neighbours": lambda p: kernel.load_neighbours(p, extra=("models", "sizes")),
        "scores": lambda p: contracts.load_table(p, "scores", rows=knn.score_rows(cfg)),
        "per_class": per_class,
        "figure_data": lambda p: contracts.load_npz(p, ("p_correct", "num_models")),
        "spectra": lambda p: contracts.load_npz(p, ("ritz_values", "slq_nodes", "slq_weights")),
        "effdim": load_effdim_csv,
    }


def main(smk):
    broken, count = [], 0
    for group, check in checks(smk).items():
        for path in smk.input.get(group, []):
            count += 1
            try:
                check(path)
            except contracts.ContractError as err:
                broken.append((path, str(err).split("; remake it with:")[0]))
    if broken:
        listing = "\n".join(f"  {why}" for _, why in broken)
        raise contracts.ContractError(
            f"{len(broken)} of {count} files break their contract:\n{listing}\nremake them "
            f"(and what is made from them) with: "
            f"{contracts.remake_command(path for path, _ in broken)}")
    verdict = f"all {count} intermediates of the default targets meet their contracts"
    print(verdict)  # the job's log
    print(f"check: {verdict}", file=sys.__stderr__)  # and the console, which shows no log


snake.run(snakemake, main)

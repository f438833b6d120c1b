"""Verify the intermediates of the default targets against their contracts (rule check).

Each input group is read with the loader of its contract; every file that breaks it is
listed, with one command that remakes them all and everything made from them.
"""

import contextlib
import sys
from pathlib import Path

from multirun import checkpoint, contracts, kernel, knn, snake
from multirun.hessian.effdim import load_effdim_csv, load_spectrum


def checks(smk) -> dict:
    """Input group -> function checking one file of it (raises ContractError)."""
    cfg = smk.config
    subsets = knn.subset_count(cfg)
    classes = present = None  # the dataset's classes (none with the 60k published logits)
    with contextlib.suppress(contracts.ContractError):  # a damaged dataset is listed on its own
        for path in smk.input.get("dataset", []):
            ds = contracts.load_dataset(path)
            classes, present = contracts.num_classes(ds), len(set(ds["y_train"].tolist()))

    expected = smk.params.seeds  # checkpoint or seeds.npy -> the seeds the config gives it

    def logits(path):
        array = contracts.load_npy(path, ndim=3, dtype="float16")
        if classes and array.shape[2] != classes:
            raise contracts.ContractError(f"{path}: logits of {array.shape[2]} classes, the "
                                          f"dataset has {classes}")
        models = None  # the folder's seeds.npy (a damaged one is listed on its own)
        with contextlib.suppress(contracts.ContractError):
            models = len(contracts.load_npy(Path(path).with_name("seeds.npy"), ndim=1))
        if models is not None and array.shape[0] != models:
            raise contracts.ContractError(f"{path}: logits of {array.shape[0]} models, the "
                                          f"folder's seeds.npy numbers {models}")

    def seeds(path):
        have = contracts.load_npy(path, ndim=1).tolist()
        if path in expected and have != list(expected[path]):
            raise contracts.ContractError(f"{path}: seeds {have}, the config gives this shard "
                                          f"{list(expected[path])}")

    def per_class(path):  # one row per class present and subset
        contracts.load_table(path, "per_class", rows=subsets and present and subsets * present)

    return {
        "dataset": contracts.load_dataset,
        "checkpoints": lambda p: checkpoint.load_checkpoint(p, seeds=expected.get(p)),
        "logits": logits,
        "seeds": seeds,
        "features": lambda p: contracts.load_npy(p, ndim=3),
        "neighbours": lambda p: kernel.load_neighbours(p, extra=("models", "sizes")),
        "scores": lambda p: contracts.load_table(p, "scores", rows=knn.score_rows(cfg)),
        "per_class": per_class,
        "figure_data": lambda p: contracts.load_npz(p, ("p_correct", "num_models")),
        "spectra": load_spectrum,
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
    verdict = (f"all {count} intermediates of the default targets meet their contracts; a "
               "plain snakemake run then redraws any figure made from one remade here")
    print(verdict)  # the job's log
    print(f"check: {verdict}", file=sys.__stderr__)  # and the console, which shows no log


snake.run(snakemake, main)

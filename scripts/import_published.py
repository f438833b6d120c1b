"""Turn one published log.pt of the hub into a logit shard (the same files training makes)."""

import numpy as np

from multirun import data, io
from multirun.snake import run


def main(smk):
    ds = io.load_dataset(smk.input.data)
    path = data.download_published(smk.params.file, repo_id=smk.params.repo_id,
                                   revision=smk.params.revision)
    logits = data.read_published(path, num_train=len(ds["y_train"]), num_test=len(ds["y_test"]))
    for split in ("train", "test"):
        if not np.isfinite(logits[split]).all():
            raise io.ContractError(f"{path}: {split} logits hold NaN or inf")
        io.save_npy(smk.output[split], logits[split])
    num = logits["test"].shape[0]
    io.save_npy(smk.output.seeds, int(smk.wildcards.shard) * num + np.arange(num, dtype=np.int64))
    print(f"{path}: {num} models")


run(snakemake, main)

"""A sweep's tables: summary.csv (point x seed), ensemble.csv (point), curves.csv (epochs)."""

import numpy as np

from multirun import checkpoint, contracts, snake, sweeps


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    points, n = dict(smk.params.points), smk.params.shards
    shard_files = []
    for i in range(len(points)):
        files = []
        for j in range(i * n, (i + 1) * n):
            seeds = contracts.load_npy(smk.input.seeds[j], ndim=1, dtype=np.int64).tolist()
            ckpt = checkpoint.load_checkpoint(smk.input.checkpoints[j], seeds=seeds)
            files.append({"history": ckpt["history"], "seeds": seeds,
                          "train": contracts.load_npy(smk.input.train[j], ndim=3),
                          "test": contracts.load_npy(smk.input.test[j], ndim=3)})
        shard_files.append(files)
    rows, ensemble, curves = sweeps.summarize(points, shard_files, ds["y_train"], ds["y_test"])
    for path, table in ((smk.output.summary, rows), (smk.output.ensemble, ensemble),
                        (smk.output.curves, curves)):
        contracts.save_csv(path, table, list(table[0]))


snake.run(snakemake, main)

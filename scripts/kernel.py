"""Top-k kernel neighbours of every test example, for each model subset of the config."""

import numpy as np

from multirun import kernel, knn, snake


def main(smk):
    train = kernel.ShardedLogits(smk.input.train)
    test = kernel.ShardedLogits(smk.input.test)
    p = smk.params
    subsets = knn.model_subsets(train.num_models, list(p.model_counts), p.subsets, p.subset_seed)
    print(f"{len(subsets)} model subsets: sizes {[size for size, _ in subsets]}", flush=True)
    index, similarity = kernel.subset_neighbours(
        test, train, [members for _, members in subsets], k=p.k_max, exclude_self=p.exclude_self,
        options=kernel.KernelOptions.from_params(p, device=snake.device(smk, "kernel"),
                                                 job_memory_mb=smk.resources.get("mem_mb")),
    )
    models = np.full((len(subsets), max(len(m) for _, m in subsets)), -1, dtype=np.int64)
    for row, (size, members) in enumerate(subsets):
        models[row, :size] = members
    kernel.save_neighbours(
        smk.output.neighbours, index, similarity, models=models,
        sizes=np.array([s for s, _ in subsets], dtype=np.int64),
    )


snake.run(snakemake, main)

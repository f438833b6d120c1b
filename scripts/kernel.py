"""Top-k kernel neighbours of every test example, for each model subset of the config."""

import numpy as np

from multirun import kernel, knn, snake
from multirun.snake import run


def main(smk):
    train = kernel.ShardedLogits(smk.input.train)
    test = kernel.ShardedLogits(smk.input.test)
    p = smk.params
    exclude_self = getattr(p, "exclude_self", False)  # train-to-train (studies/label_errors)
    subsets = knn.model_subsets(train.num_models, list(p.model_counts), p.subsets, p.subset_seed)
    index, similarity = [], []
    models = np.full((len(subsets), max(len(m) for _, m in subsets)), -1, dtype=np.int64)
    for row, (size, members) in enumerate(subsets):
        print(f"subset {row + 1}/{len(subsets)}: {size} models", flush=True)
        idx, sim = kernel.neighbours(
            test, train, k=p.k_max, models=members, log_softmax=p.log_softmax,
            exclude_self=exclude_self,
            chunk_models=p.chunk_models, block=p.block, precision=p.precision,
            device=snake.device(smk, "kernel"),
        )
        index.append(idx)
        similarity.append(sim)
        models[row, :size] = members
    kernel.save_neighbours(
        smk.output.neighbours, np.stack(index), np.stack(similarity), models=models,
        sizes=np.array([s for s, _ in subsets], dtype=np.int64),
    )


run(snakemake, main)

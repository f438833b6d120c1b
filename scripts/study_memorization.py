"""P(correct) per training example across seeds, per (variant, epochs); seeds per second."""

import numpy as np

from multirun import contracts, kernel, snake
from multirun.studies import memorization, timing


def main(smk):
    variants, epochs, n_shards = list(smk.params.variants), list(smk.params.epochs), smk.params.shards
    logits = list(smk.input.logits)
    bench = list(smk.input.benchmarks)
    arrays, rows = {}, []
    for i, variant in enumerate(variants):
        ds = contracts.load_dataset(smk.input.data[i])
        labels = ds["y_train"]
        chance = 1.0 / contracts.num_classes(ds)
        for j, e in enumerate(epochs):
            group = (i * len(epochs) + j) * n_shards
            stack = kernel.ShardedLogits(logits[group:group + n_shards])
            p = memorization.pcorrect(stack, labels)
            seconds, rate = timing.seeds_per_second(bench[group:group + n_shards], stack.num_models)
            row = memorization.summary_row(p, variant=variant, epochs=e, models=stack.num_models,
                                           chance=chance)
            rows.append({**row, "train_seconds": round(seconds, 2),
                         "seeds_per_second": round(rate, 3)})
            arrays[f"p_{variant}_e{e}"] = p
            print(rows[-1], flush=True)
    contracts.save_npz(smk.output.pcorrect, variants=np.array(variants), epochs=np.array(epochs),
                **arrays)
    contracts.save_csv(smk.output.table, rows, list(rows[0]))


snake.run(snakemake, main)

"""Datamodels of the first test examples: ridge on the subset masks, fit on the first n
training models for each n, the penalty chosen per test example on the validation models."""

import numpy as np

from multirun import contracts, kernel, snake
from multirun.attribution import datamodels, outcomes
from multirun.studies import subsets


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    masks = np.asarray(contracts.load_npy(smk.input.masks, ndim=2, dtype=bool))
    p = smk.params
    t = min(p.test_examples, len(ds["y_test"]))
    _, margin = outcomes.outcomes(kernel.ShardedLogits(smk.input.test), ds["y_test"])
    margin = margin[:, :t]
    split = subsets.split(len(masks), p.validation, p.heldout)
    val = split["validation"]
    out = {"counts": np.asarray(p.model_counts, dtype=np.int64)}
    for n in p.model_counts:
        use = split["train"][:n]
        dm = datamodels.fit(masks[use], margin[use], masks[val], margin[val],
                            np.asarray(p.lambdas) * n)
        out |= {f"weights_{n}": dm.weights, f"bias_{n}": dm.bias, f"lam_{n}": dm.lam / n}
        print(f"{n} models: penalty per model, median {np.median(dm.lam / n):.3g}", flush=True)
    contracts.save_npz(smk.output.datamodels, **out)


snake.run(snakemake, main)

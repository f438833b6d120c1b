"""Datamodels of the first test examples: ridge on the subset masks, fit on the first n
training models for each n, the penalty chosen per test example on the validation models."""

import numpy as np

from multirun import contracts, snake
from multirun.attribution import datamodels
from multirun.studies import subsets


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    masks = subsets.load_masks(smk.input.masks)
    p = smk.params
    margin = subsets.margins_on_test(smk.input.test, ds["y_test"], p.test_examples)
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

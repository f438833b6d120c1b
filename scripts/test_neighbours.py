"""Test-to-test kernel neighbours of the 60k set (near-duplicates within the test set)."""

import numpy as np

from multirun import kernel, published, snake


def main(smk):
    p = smk.params
    logits, _ = published.load_pointer(smk.input.pointer)
    count = min(p.models, logits.num_models)
    members = np.arange(count, dtype=np.int64)
    print(f"{logits}: test-to-test kernel of the first {count} models", flush=True)
    options = kernel.KernelOptions.from_params(p, device=snake.device(smk, "kernel"),
                                               job_memory_mb=smk.resources.get("mem_mb"))
    index, similarity = kernel.neighbours(logits, logits, k=p.k_max, models=members,
                                          exclude_self=True, options=options)
    kernel.save_neighbours(smk.output.neighbours, index[None], similarity[None],
                           models=members[None], sizes=np.array([count], dtype=np.int64))


snake.run(snakemake, main)

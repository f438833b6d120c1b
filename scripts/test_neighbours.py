"""Test-to-test kernel neighbours of the 60k set (near-duplicates within the test set)."""

import numpy as np

from multirun import kernel, published, snake


def main(smk):
    p = smk.params
    logits, _ = published.load_pointer(smk.input.pointer)
    count = min(p.models, logits.num_models) if p.models else logits.num_models
    members = np.arange(count, dtype=np.int64)
    print(f"{logits}: test-to-test kernel of the first {count} models", flush=True)
    index, similarity = kernel.neighbours(
        logits, logits, k=p.k_max, models=members, log_softmax=p.log_softmax, exclude_self=True,
        chunk_models=p.chunk_models, block=p.block, memory_gb=p.memory_gb, precision=p.precision,
        device=snake.device(smk, "kernel"))
    kernel.save_neighbours(smk.output.neighbours, index[None], similarity[None],
                           models=members[None], sizes=np.array([count], dtype=np.int64))


snake.run(snakemake, main)

"""The dense test x train ensemble kernel of all models (only on request: it is large)."""

from multirun import io, kernel, snake
from multirun.snake import run


def main(smk):
    p = smk.params
    dense = kernel.dense_kernel(
        kernel.ShardedLogits(smk.input.test), kernel.ShardedLogits(smk.input.train),
        log_softmax=p.log_softmax, chunk_models=p.chunk_models, device=snake.device(smk, "kernel"),
        precision=p.precision,
    )
    io.save_npy(smk.output.kernel, dense)


run(snakemake, main)

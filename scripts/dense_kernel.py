"""The dense test x train ensemble kernel of all models (only on request: it is large)."""

from multirun import contracts, kernel, snake


def main(smk):
    dense = kernel.dense_kernel(
        kernel.ShardedLogits(smk.input.test), kernel.ShardedLogits(smk.input.train),
        options=kernel.KernelOptions.from_params(smk.params, device=snake.device(smk, "kernel"),
                                                 job_memory_mb=smk.resources.get("mem_mb"),
                                                 progress=False),
    )
    contracts.save_npy(smk.output.kernel, dense)


snake.run(snakemake, main)

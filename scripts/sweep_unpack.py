"""One point of a sweep's pack: its members of the pack's checkpoint, and its metrics.csv."""

from multirun import checkpoint, contracts, snake, sweeps


def main(smk):
    pack = checkpoint.load_checkpoint(smk.input.pack)
    ckpt = sweeps.unpack(pack, smk.params.index, len(smk.params.seeds))
    if ckpt["seeds"] != list(smk.params.seeds):
        raise contracts.ContractError(f"{smk.input.pack}: members {ckpt['seeds']} where the "
                                      f"point wants seeds {list(smk.params.seeds)}; delete "
                                      "it and rerun the sweep")
    contracts.save_torch(smk.output.checkpoint, ckpt)
    checkpoint.write_metrics(smk.output.metrics, ckpt)


snake.run(snakemake, main)

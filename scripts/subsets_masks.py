"""Gather the subset masks of every shard's checkpoint: masks.npy (models, train) bool, seeds.npy."""

import numpy as np

from multirun import checkpoint, contracts, snake


def main(smk):
    masks, seeds = [], []
    for path in smk.input.checkpoints:
        ckpt = checkpoint.load_checkpoint(path)
        if ckpt.get("masks") is None:
            raise contracts.ContractError(f"{path}: holds no subset masks (trained on all rows); "
                                          "delete it and rerun the subsets target")
        masks.append(ckpt["masks"].numpy())
        seeds.extend(int(s) for s in ckpt["seeds"])
    masks = np.concatenate(masks)
    if sorted(seeds) != seeds:
        raise contracts.ContractError(f"{smk.input.checkpoints}: seeds not in order")
    kept = masks.sum(1)
    print(f"{len(seeds)} models, {masks.shape[1]} training rows, {kept.min()} kept per model "
          f"(alpha={smk.params.alpha})", flush=True)
    contracts.save_npy(smk.output.masks, masks.astype(bool))
    contracts.save_npy(smk.output.seeds, np.asarray(seeds, dtype=np.int64))


snake.run(snakemake, main)

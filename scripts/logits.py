"""Evaluate every model of a shard on train and test; write fp16 logits (and features)."""

import numpy as np
import torch

from multirun import checkpoint, contracts, snake


def half(values):
    """fp16 values; beyond fp16's range (a diverged sweep seed's logits) the largest finite
    fp16 rather than inf, so the file stays finite."""
    big = torch.finfo(torch.float16).max
    return values.clamp(-big, big).to(torch.float16).numpy()


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    ckpt = checkpoint.load_checkpoint(smk.input.checkpoint, seeds=list(smk.params.seeds))
    device = contracts.pick_device(snake.device(smk, "train"))
    want_features = "features_train" in smk.output.keys()
    for split in ("train", "test"):
        x = torch.from_numpy(ds[f"x_{split}"])
        logits, feats = checkpoint.evaluate_shard(
            ckpt, x, batch_size=smk.params.batch_size, device=device, features=want_features
        )
        if not torch.isfinite(logits).all():
            raise contracts.ContractError(
                f"{smk.input.checkpoint}: a model gives NaN/inf {split} logits; its training "
                "diverged (lower the lr of the recipe that trained it), then rerun")
        contracts.save_npy(smk.output[split], half(logits))
        if want_features:
            contracts.save_npy(smk.output[f"features_{split}"], half(feats))
    contracts.save_npy(smk.output.seeds, np.asarray(ckpt["seeds"], dtype=np.int64))


snake.run(snakemake, main)

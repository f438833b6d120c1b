"""Train one shard of seeds as one vectorised program; write its checkpoint."""

import torch

from multirun import contracts, snake, train


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    ckpt = train.train_shard(
        torch.from_numpy(ds["x_train"]), torch.from_numpy(ds["y_train"]),
        seeds=list(smk.params.seeds), model_spec=dict(smk.params.model),
        recipe=dict(smk.params.recipe), device=contracts.pick_device(snake.device(smk, "train")),
        validation=(torch.from_numpy(ds["x_val"]), torch.from_numpy(ds["y_val"]))
        if "x_val" in ds else None,
    )
    contracts.save_torch(smk.output.checkpoint, ckpt)


snake.run(snakemake, main)

"""Train one shard of seeds as one vectorised program (each seed on its subset with params.alpha);
write its checkpoint."""

import torch

from multirun import contracts, snake, train


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    alpha = getattr(smk.params, "alpha", None)  # subset training: each seed its own rows
    masks = None if alpha is None else torch.stack(
        [train.subset_mask(s, alpha, len(ds["y_train"])) for s in smk.params.seeds])
    ckpt = train.train_shard(
        torch.from_numpy(ds["x_train"]), torch.from_numpy(ds["y_train"]),
        seeds=list(smk.params.seeds), model_spec=dict(smk.params.model),
        recipe=dict(smk.params.recipe), device=contracts.pick_device(snake.device(smk, "train")),
        validation=(torch.from_numpy(ds["x_val"]), torch.from_numpy(ds["y_val"]))
        if "x_val" in ds else None,
        masks=masks,
    )
    contracts.save_torch(smk.output.checkpoint, ckpt)


snake.run(snakemake, main)

"""Train one shard of seeds as one vectorised program; write its checkpoint and metrics.csv."""

import torch

from multirun import contracts, snake, train


def main(smk):
    ds = contracts.load_dataset(smk.input.data)

    def split(name):
        x, y = f"x_{name}", f"y_{name}"
        return (torch.from_numpy(ds[x]), torch.from_numpy(ds[y])) if x in ds else None

    ckpt = train.train_shard(
        torch.from_numpy(ds["x_train"]), torch.from_numpy(ds["y_train"]),
        seeds=list(smk.params.seeds), model_spec=dict(smk.params.model),
        recipe=dict(smk.params.recipe), device=contracts.pick_device(snake.device(smk, "train")),
        validation=split("val"), evaluation=split("test"),
    )
    contracts.save_torch(smk.output.checkpoint, ckpt)
    train.write_metrics(smk.output.metrics, ckpt)


snake.run(snakemake, main)

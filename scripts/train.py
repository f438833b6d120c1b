"""Train one shard of seeds as one vectorised program (each seed on its own subset of the rows
when params.alpha is given); write its checkpoint and metrics.csv."""

import torch

from multirun import contracts, snake, train


def main(smk):
    ds = contracts.load_dataset(smk.input.data)

    def split(name):
        x, y = f"x_{name}", f"y_{name}"
        return (torch.from_numpy(ds[x]), torch.from_numpy(ds[y])) if x in ds else None

    alpha = getattr(smk.params, "alpha", None)  # subset training: each seed its own rows
    masks = None if alpha is None else torch.stack(
        [train.subset_mask(s, alpha, len(ds["y_train"])) for s in smk.params.seeds])
    ckpt = train.train_shard(
        torch.from_numpy(ds["x_train"]), torch.from_numpy(ds["y_train"]),
        seeds=list(smk.params.seeds), model_spec=dict(smk.params.model),
        recipe=dict(smk.params.recipe), device=contracts.pick_device(snake.device(smk, "train")),
        validation=split("val"), evaluation=split("test"), masks=masks,
    )
    contracts.save_torch(smk.output.checkpoint, ckpt)
    if "metrics" in smk.output.keys():  # every training rule names one (jobs planned before it did not)
        train.write_metrics(smk.output.metrics, ckpt)


snake.run(snakemake, main)

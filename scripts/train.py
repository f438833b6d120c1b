"""Train one shard of seeds as one vectorised program (each seed on its own subset of the rows
when params.alpha is given); write its checkpoint and metrics.csv."""

import torch

from multirun import checkpoint, contracts, snake, streams, train


def main(smk):
    ds = contracts.load_dataset(smk.input.data)

    def split(name):
        x, y = f"x_{name}", f"y_{name}"
        return (torch.from_numpy(ds[x]), torch.from_numpy(ds[y])) if x in ds else None

    recipe = smk.params.recipe  # one recipe, or one per member (a sweep's pack)
    alpha = getattr(smk.params, "alpha", None)  # subset training: each seed its own rows
    masks = None if alpha is None else torch.stack(
        [streams.subset_mask(s, alpha, len(ds["y_train"])) for s in smk.params.seeds])
    ckpt = train.train_shard(
        torch.from_numpy(ds["x_train"]), torch.from_numpy(ds["y_train"]),
        seeds=list(smk.params.seeds), model_spec=dict(smk.params.model),
        num_classes=contracts.num_classes(ds),  # the dataset's classes set C where named
        recipe=[dict(r) for r in recipe] if isinstance(recipe, list) else dict(recipe),
        device=contracts.pick_device(snake.device(smk, "train")),
        validation=split("val"), evaluation=split("test"), masks=masks,
        on_diverge=smk.params.get("on_diverge", "raise"),  # sweeps: "record"
        where=smk.params.where,  # the config section: errors name its keys
        model_key=smk.params.get("model_key"),  # where the model is not WHERE.model
    )
    contracts.save_torch(smk.output.checkpoint, ckpt)
    checkpoint.write_metrics(smk.output.metrics, ckpt)


snake.run(snakemake, main)

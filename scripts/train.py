"""Train one shard of seeds as one vectorised program; write its checkpoint and metrics.csv."""

import torch

from multirun import contracts, snake, train


def main(smk):
    ds = contracts.load_dataset(smk.input.data)

    def split(name):
        x, y = f"x_{name}", f"y_{name}"
        return (torch.from_numpy(ds[x]), torch.from_numpy(ds[y])) if x in ds else None

    recipe = smk.params.recipe  # one recipe, or one per member (a sweep's pack)
    ckpt = train.train_shard(
        torch.from_numpy(ds["x_train"]), torch.from_numpy(ds["y_train"]),
        seeds=list(smk.params.seeds), model_spec=dict(smk.params.model),
        recipe=[dict(r) for r in recipe] if isinstance(recipe, list) else dict(recipe),
        device=contracts.pick_device(snake.device(smk, "train")),
        validation=split("val"), evaluation=split("test"),
        on_diverge=smk.params.get("on_diverge", "raise"),  # sweeps: "record"
    )
    contracts.save_torch(smk.output.checkpoint, ckpt)
    if "metrics" in smk.output.keys():
        train.write_metrics(smk.output.metrics, ckpt)


snake.run(snakemake, main)

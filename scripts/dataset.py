"""Materialise the configured dataset as one .npz (the dataset contract of multirun.contracts)."""

from multirun import contracts, data, snake


def main(smk):
    cfg = smk.params.dataset
    arrays = data.make_dataset(
        cfg["name"], seed=cfg.get("seed", 42), num_samples=cfg.get("num_samples", 5000),
        root=cfg.get("root", "data"), path=cfg.get("path"),
        labels_only=cfg.get("labels_only", False),
    )
    contracts.save_npz(smk.output[0], **arrays)
    print({k: (v.shape, str(v.dtype)) for k, v in arrays.items()})


snake.run(snakemake, main)

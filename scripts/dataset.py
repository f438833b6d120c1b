"""Materialise the configured dataset as one .npz (the dataset contract of multirun.contracts)."""

from multirun import contracts, data, snake


def main(smk):
    arrays = data.make_dataset(**smk.params.dataset)  # the keys its dataset uses (dataset_params)
    contracts.save_npz(smk.output[0], **arrays)
    print({k: (v.shape, str(v.dtype)) for k, v in arrays.items()})


snake.run(snakemake, main)

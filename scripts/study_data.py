"""A study's dataset variant, drawn once from the base dataset (multirun.studies.variants)."""

from multirun import contracts, snake
from multirun.studies import variants


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    v = dict(smk.params.variant)
    kind = v.pop("kind")
    if kind in variants.MEMORIZATION_VARIANTS:
        out = variants.memorization_variant(ds, kind, **v)
    elif kind == "alpha":
        out = variants.noisy_copies(ds, v.pop("alpha"), **v)
    else:
        out = variants.label_errors(ds, **v)
    contracts.save_npz(smk.output[0], **out)
    print({k: (a.shape, str(a.dtype)) for k, a in out.items()})


snake.run(snakemake, main)

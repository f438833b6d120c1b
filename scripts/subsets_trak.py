"""TRAK scores of the first test examples from the full-data models (our estimator for each
ensemble size, and MadryLab's traker package for the sizes asked for)."""

import torch

from multirun import checkpoint, contracts, snake
from multirun.attribution import trak, traker_package


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    p = smk.params
    t = min(p.test_examples, len(ds["y_test"]))
    need = max([*p.model_counts, *p.package_counts])
    models = []
    for path in smk.input.checkpoints:
        ckpt = checkpoint.load_checkpoint(path)
        models += [checkpoint.load_member(ckpt, i) for i in range(len(ckpt["seeds"]))]
    models = models[:need]
    x, y = torch.from_numpy(ds["x_train"]), torch.from_numpy(ds["y_train"])
    xt, yt = torch.from_numpy(ds["x_test"][:t]), torch.from_numpy(ds["y_test"][:t])
    scores = trak.trak_scores(models, x, y, xt, yt, proj_dim=p.proj_dim, seed=p.seed,
                              counts=list(p.model_counts))
    out = {f"trak_{n}": s for n, s in scores.items()}
    for n in p.package_counts:
        out[f"traker_{n}"] = traker_package.traker_scores(models[:n], x, y, xt, yt,
                                                          proj_dim=p.proj_dim, seed=p.seed)
    contracts.save_npz(smk.output.scores, **out)


snake.run(snakemake, main)

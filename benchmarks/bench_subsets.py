"""Subset training and its estimators: time and peak memory at the issue's scale.

``--estimators`` (default): fabricated masks and outcomes of ``--models`` (2,048) subset
models on ``--train`` (4,000) x ``--test`` (1,000) examples, then, one after another:
memorization, influence (train x test) with its top pairs, the datamodel fit (ridge over a
grid, batched over test examples, penalty chosen on a validation split) and the LDS on the
held-out models. For each: wall time and the peak of memory it allocated (``tracemalloc``,
which sees NumPy's buffers), next to the size of a (models x train x test) float32 array
that none of them forms.

``--training``: seeds/s of one subset shard (alpha of the training set per seed) against
the full-data shard program on the same seeds, in this one process (default MLP recipe).

    .venv/bin/python benchmarks/bench_subsets.py [--models 2048] [--training]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from benchlib import device_name

from multirun.attribution import datamodels, lds, memorization


def measure(name: str, fn):
    tracemalloc.start()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{name:<34} {seconds:8.2f} s   peak {peak / 2**20:8.1f} MiB", flush=True)
    return out


def estimators(models: int, train: int, test: int, heldout: int, validation: int) -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((models, train)) < 0.5
    w = rng.normal(size=(train, test)).astype(np.float32) * 0.05
    margins = (masks.astype(np.float32) @ w + rng.normal(size=(models, test)).astype(np.float32))
    correct_test = margins > 0
    correct_train = (rng.random((models, train)) < 0.7) | masks
    print(f"{models} models, {train} train x {test} test; a (models x train x test) float32 "
          f"array would be {models * train * test * 4 / 2**30:.1f} GiB", flush=True)
    measure("memorization", lambda: memorization.memorization(masks, correct_train))
    infl, _ = measure("influence + SE", lambda: memorization.influence(masks, correct_test))
    measure("top 1000 pairs", lambda: memorization.top_pairs(infl, 1000))
    fit = models - heldout - validation
    dm = measure(f"datamodels ({fit} models, 9 penalties)",
                 lambda: datamodels.fit(masks[:fit], margins[:fit], masks[fit:fit + validation],
                                        margins[fit:fit + validation], np.logspace(-1, 3, 9)))
    res = measure(f"LDS ({heldout} held-out models)",
                  lambda: lds.lds(dm.weights, masks[-heldout:], margins[-heldout:]))
    print(f"LDS of the fitted datamodels: {res['mean']:.3f} +- {res['se']:.3f}")


def training(alpha: float, seeds: int) -> None:
    import torch

    from multirun import contracts, data, streams, train
    from multirun.config import check
    from multirun.model_spec import normalize_spec
    from multirun.recipe import normalize_recipe

    ds = data.make_mnist1d(seed=42, num_samples=5000)
    x, y = torch.from_numpy(ds["x_train"]), torch.from_numpy(ds["y_train"])
    defaults = check({})  # the schema's defaults: the default MLP and recipe (train.*)
    spec = normalize_spec(defaults["train"]["model"])
    recipe = normalize_recipe(defaults["train"]["recipe"])
    ids = list(range(seeds))
    masks = torch.stack([streams.subset_mask(s, alpha, len(y)) for s in ids])
    device = contracts.pick_device("auto")
    for name, kwargs in (("full data", {}), (f"subsets alpha={alpha}", {"masks": masks})):
        start = time.perf_counter()
        train.train_shard(x, y, ids, spec, recipe, device, **kwargs)
        seconds = time.perf_counter() - start
        print(f"{name:<22} {seeds} seeds in {seconds:6.1f} s: {seeds / seconds:6.1f} seeds/s",
              flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, default=2048)
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--heldout", type=int, default=256)
    p.add_argument("--validation", type=int, default=256)
    p.add_argument("--training", action="store_true", help="seeds/s: subset vs full-data shard")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--seeds", type=int, default=256, help="seeds of the --training shard")
    args = p.parse_args()
    print(f"CPU: {device_name()}", flush=True)
    if args.training:
        training(args.alpha, args.seeds)
    else:
        estimators(args.models, args.train, args.test, args.heldout, args.validation)


if __name__ == "__main__":
    main()

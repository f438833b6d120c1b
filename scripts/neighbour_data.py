"""What the neighbour figures show beyond the kernel neighbours and scores (rule neighbour_data).

Outputs: ``per_class`` (CSV: k-NN accuracy of each single-class kernel for every model subset,
the columns of ``knn/{variant}/scores.csv`` plus ``class``) and ``arrays`` (npz:
``p_correct`` (N_test,) the fraction of the ``num_models`` models right on each test example,
and, when
penultimate features are stored, ``feature_index`` (N_test, 2) int32, the cosine neighbours
of shard 0's first model's features; otherwise ``feature_note``, a string saying why not).
"""

import numpy as np

from multirun import contracts, kernel, knn, snake

FIELDS = list(contracts.TABLES["per_class"].columns)


def main(smk):
    p = smk.params
    data = contracts.load_dataset(smk.input.data)
    y_train, y_test = data["y_train"], data["y_test"]
    train = kernel.ShardedLogits(smk.input.train)
    test = kernel.ShardedLogits(smk.input.test)
    num_classes = train.num_classes

    arrays = {"p_correct": knn.probability_correct(test, y_test),
              "num_models": np.array(test.num_models)}
    if hasattr(smk.input, "features_test") and hasattr(smk.input, "features_train"):
        f_test = contracts.load_npy(smk.input.features_test, ndim=3)[0]  # model 0 of shard 0
        f_train = contracts.load_npy(smk.input.features_train, ndim=3)[0]
        if f_test.shape[-1] and f_train.shape[-1]:
            arrays["feature_index"], _ = knn.cosine_neighbours(f_test, f_train, k=2)
        else:  # (S, N, 0): the model defines no features(x)
            arrays["feature_note"] = np.array("the model defines no features(x), docs/models.md")
    else:
        arrays["feature_note"] = np.array("no features stored (logits.features is false, "
                                          "or the logits were imported)")
    contracts.save_npz(smk.output.arrays, **arrays)

    # per-class kernels: k-NN accuracy of each class's correlation alone, per model subset
    subsets = knn.model_subsets(train.num_models, list(p.model_counts), p.subsets, p.subset_seed)
    numbers = knn.subset_numbers([size for size, _ in subsets])
    options = kernel.KernelOptions.from_params(p, device=snake.device(smk, "kernel"),
                                               job_memory_mb=smk.resources.get("mem_mb"),
                                               progress=False)
    rows = []
    for c in range(num_classes):
        print(f"class {c} kernels of {len(subsets)} model subsets", flush=True)
        index, similarity = kernel.subset_neighbours(
            test, train, [members for _, members in subsets], k=p.k, classes=[c], options=options)
        for r, (size, _) in enumerate(subsets):
            pred = knn.knn_predict(index[r], similarity[r], y_train, k=p.k, vote=p.vote,
                                   power=p.power or 0, num_classes=num_classes)
            rows.append({"class": c, "n_models": size, "subset": numbers[r], "method": "kernel",
                         "k": p.k, "vote": p.vote, "accuracy": knn.accuracy(pred, y_test)})
    contracts.save_csv(smk.output.per_class, rows, FIELDS)


snake.run(snakemake, main)

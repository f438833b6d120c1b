"""Score kernel k-NN against the logit-averaging ensemble and single models, per model subset."""

from multirun import contracts, kernel, knn, snake

FIELDS = list(contracts.TABLES["scores"].columns)


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    test = kernel.ShardedLogits(smk.input.test)
    nb = kernel.load_neighbours(smk.input.neighbours, num_keys=len(ds["y_train"]),
                                extra=("models", "sizes"))
    rows = []
    for r, (size, number) in enumerate(zip(nb["sizes"], knn.subset_numbers(nb["sizes"]),
                                           strict=True)):
        members = knn.ModelSubset(test, nb["models"][r, :size])
        scored = knn.score_subset(nb["index"][r], nb["similarity"][r], members, ds["y_train"],
                                  ds["y_test"], ks=smk.params.k, power=smk.params.power,
                                  ensemble_mean=smk.params.ensemble_mean)
        rows += [{"n_models": int(size), "subset": number, **row} for row in scored]
    for row in rows:
        if row["method"] != "kernel" or row["k"] in (3, max(smk.params.k)):
            print(row)

    contracts.save_csv(smk.output[0], rows, FIELDS)


snake.run(snakemake, main)

"""Score kernel k-NN against the logit-averaging ensemble and single models, per model subset."""

import csv

import numpy as np

from multirun import io, kernel, knn
from multirun.snake import run

FIELDS = ["n_models", "subset", "method", "k", "vote", "accuracy"]


def main(smk):
    labels = io.load_dataset(smk.input.data)
    y_train, y_test = labels["y_train"], labels["y_test"]
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    nb = io.load_npz(smk.input.neighbours, ("index", "similarity", "models", "sizes"))
    test = kernel.ShardedLogits(smk.input.test)
    rows, seen = [], {}
    for r, size in enumerate(nb["sizes"]):
        size = int(size)
        subset = seen[size] = seen.get(size, -1) + 1
        members = nb["models"][r, :size]
        logits = test.models(members).astype(np.float32)
        base = {"n_models": size, "subset": subset}
        ens = float((knn.ensemble_predict(logits) == y_test).mean())
        single = float(knn.single_model_accuracies(logits, y_test).mean())
        rows.append(base | {"method": "ensemble", "k": "", "vote": "", "accuracy": ens})
        rows.append(base | {"method": "single", "k": "", "vote": "", "accuracy": single})
        for k in smk.params.k:
            for vote in ("majority", "weighted"):
                pred = knn.knn_predict(
                    nb["index"][r], nb["similarity"][r], y_train, k=k, vote=vote,
                    power=smk.params.power, num_classes=num_classes,
                )
                acc = float((pred == y_test).mean())
                rows.append(base | {"method": "kernel", "k": k, "vote": vote, "accuracy": acc})
    for row in rows:
        if row["method"] != "kernel" or row["k"] in (3, 20):
            print(row)

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    io.save_with(smk.output.scores, write)


run(snakemake, main)

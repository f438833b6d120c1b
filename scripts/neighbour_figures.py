"""Interpretability figures of the ensemble kernel (Snakemake script of rule figure_neighbours).

Inputs, all computed by earlier rules (this job only reads and draws): the dataset, the
kernel neighbours of the log_softmax variant (the row of the full model set is used), the
knn scores of both variants, and rule neighbour_data's per-class k-NN accuracies and
arrays (probability correct, cosine feature neighbours). Outputs, each as ``{key}_png`` plus
``{key}_other`` (the other formats): pairs, failures, random, pcorrect, per_class, raw;
and ``numbers`` (JSON of the plotted per-class accuracies and summary values).
"""

import numpy as np

from multirun import contracts, kernel, knn, snake
from multirun.plots import neighbours as nplots

FIGURES = ("pairs", "failures", "random", "pcorrect", "per_class", "raw")


def _paths(output, key):
    return [output[f"{key}_png"], *output[f"{key}_other"]]


def main(smk):
    p = smk.params
    data = contracts.load_dataset(smk.input.data)
    x_train, y_train, x_test, y_test = (data[k] for k in ("x_train", "y_train", "x_test",
                                                          "y_test"))
    images = {"images_test": data.get("images_test"), "images_train": data.get("images_train")}
    classes = [str(c) for c in data["classes"]] if "classes" in data else None
    arrays = contracts.load_npz(smk.input.arrays, ("p_correct", "num_models"))
    p_correct = arrays["p_correct"]
    if p_correct.shape != y_test.shape:
        raise contracts.ContractError(f"{smk.input.arrays}: p_correct has shape {p_correct.shape}, "
                                      f"the test set {y_test.shape}; "
                                      f"{contracts.remake(smk.input.arrays)}")

    nb = kernel.load_neighbours(smk.input.neighbours, num_keys=len(y_train), extra=("sizes",))
    full = int(np.argmax(nb["sizes"]))  # the subset with the most models (all of them)
    index, similarity = nb["index"][full], nb["similarity"][full]
    print(f"kernel neighbours of {int(nb['sizes'][full])} models, k_max={index.shape[1]}")

    fig = nplots.similar_pairs(index, similarity, x_test, x_train, ranks=p.pair_ranks,
                               y_test=y_test, y_train=y_train, classes=classes, **images)
    nplots.save_figure(fig, _paths(smk.output, "pairs"), p.dpi)
    fig = nplots.confident_failures(index, similarity, y_test, y_train, x_test, x_train,
                                    classes=classes, **images)
    nplots.save_figure(fig, _paths(smk.output, "failures"), p.dpi)

    feature_index = arrays.get("feature_index")
    note = str(arrays["feature_note"]) if "feature_note" in arrays else None
    fig = nplots.random_neighbours(index, feature_index, x_test, x_train, examples=p.examples,
                                   seed=p.seed, y_test=y_test, y_train=y_train, classes=classes,
                                   feature_note=note, **images)
    nplots.save_figure(fig, _paths(smk.output, "random"), p.dpi)

    fig = nplots.probability_correct_histogram(p_correct, num_models=int(arrays["num_models"]))
    nplots.save_figure(fig, _paths(smk.output, "pcorrect"), p.dpi)

    per_class: dict[int, list[dict]] = {}
    score_rows, subsets = knn.score_rows(smk.config), knn.subset_count(smk.config)
    class_rows = subsets and subsets * len(np.unique(y_train))  # one (vote, k) per class
    for row in contracts.load_table(smk.input.per_class, "per_class", rows=class_rows):
        per_class.setdefault(int(row["class"]), []).append(
            {"n_models": int(row["n_models"]), "subset": int(row["subset"]),
             "method": row["method"], "k": int(row["k"]), "vote": row["vote"],
             "accuracy": float(row["accuracy"])})
    summed = contracts.load_table(smk.input.scores, "scores", rows=score_rows)
    fig = nplots.per_class_vs_summed(summed, per_class, vote=p.vote, k=p.k, classes=classes)
    nplots.save_figure(fig, _paths(smk.output, "per_class"), p.dpi)
    fig = nplots.logsoftmax_vs_raw(summed, contracts.load_table(smk.input.scores_raw, "scores",
                                                          rows=score_rows), vote=p.vote,
                                   k=p.k)
    nplots.save_figure(fig, _paths(smk.output, "raw"), p.dpi)

    numbers = {
        "per_class_accuracy": {str(c): rows for c, rows in per_class.items()},
        "probability_correct": {"mean": float(p_correct.mean()),
                                "always": float(np.mean(p_correct == 1)),
                                "never": float(np.mean(p_correct == 0))},
        "top1_similarity_quantiles": {str(q): float(np.quantile(similarity[:, 0], q))
                                      for q in (0.01, 0.1, 0.5, 0.9, 0.99)},
    }
    contracts.save_json(smk.output.numbers, numbers)


snake.run(snakemake, main)

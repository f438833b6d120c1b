"""Interpretability figures of the ensemble kernel (Snakemake script of rule figure_neighbours).

Inputs: the dataset, the kernel neighbours of the log_softmax variant (the row of the full
model set is used), the knn scores of both variants, the logit shards, and (optional)
penultimate features of shard 0. Computes per-class kernels itself (k-NN accuracy of each
single-class kernel for every model subset). Outputs, each as ``{key}_png`` plus
``{key}_other`` (the other formats): pairs, failures, random, pcorrect, per_class, raw;
and ``numbers`` (JSON of the plotted per-class accuracies and summary values).
"""

import numpy as np

from multirun import io, kernel, knn, snake
from multirun.plots import neighbours as nplots
from multirun.snake import run

FIGURES = ("pairs", "failures", "random", "pcorrect", "per_class", "raw")


def _paths(output, key):
    other = output[f"{key}_other"]
    return [output[f"{key}_png"], *([other] if isinstance(other, str) else other)]


def main(smk):
    p = smk.params
    data = io.load_dataset(smk.input.data)
    x_train, y_train, x_test, y_test = (data[k] for k in ("x_train", "y_train", "x_test",
                                                          "y_test"))
    images = {"images_test": data.get("images_test"), "images_train": data.get("images_train")}
    classes = [str(c) for c in data["classes"]] if "classes" in data else None
    train = kernel.ShardedLogits(smk.input.train)
    test = kernel.ShardedLogits(smk.input.test)
    num_classes = train.num_classes

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

    feature_index = None
    if hasattr(smk.input, "features_test") and hasattr(smk.input, "features_train"):
        f_test = io.load_npy(smk.input.features_test, ndim=3)[0]  # model 0 of shard 0
        f_train = io.load_npy(smk.input.features_train, ndim=3)[0]
        feature_index, _ = kernel.cosine_neighbours(f_test, f_train, k=2)
    fig = nplots.random_neighbours(index, feature_index, x_test, x_train, examples=p.examples,
                                   seed=p.seed, y_test=y_test, y_train=y_train, classes=classes,
                                   **images)
    nplots.save_figure(fig, _paths(smk.output, "random"), p.dpi)

    p_correct = knn.probability_correct(test, y_test)
    fig = nplots.probability_correct_histogram(p_correct, num_models=test.num_models)
    nplots.save_figure(fig, _paths(smk.output, "pcorrect"), p.dpi)

    # per-class kernels: k-NN accuracy of each class's correlation alone, per model subset
    subsets = knn.model_subsets(train.num_models, list(p.model_counts), p.subsets, p.subset_seed)
    per_class = {c: [] for c in range(num_classes)}
    seen: dict[int, int] = {}
    for size, members in subsets:
        j = seen[size] = seen.get(size, -1) + 1
        print(f"per-class kernels: {size} models, subset {j}", flush=True)
        for c in range(num_classes):
            idx, sim = kernel.neighbours(test, train, k=p.k, models=members, classes=[c],
                                         chunk_models=p.chunk_models, block=p.block,
                                         device=snake.device(smk, "kernel"), progress=False)
            pred = knn.knn_predict(idx, sim, y_train, k=p.k, vote=p.vote, power=p.power,
                                   num_classes=num_classes)
            per_class[c].append({"n_models": size, "subset": j, "method": "kernel", "k": p.k,
                                 "vote": p.vote, "accuracy": knn.accuracy(pred, y_test)})
    summed = io.load_csv(smk.input.scores)
    fig = nplots.per_class_vs_summed(summed, per_class, vote=p.vote, k=p.k, classes=classes)
    nplots.save_figure(fig, _paths(smk.output, "per_class"), p.dpi)
    fig = nplots.logsoftmax_vs_raw(summed, io.load_csv(smk.input.scores_raw), vote=p.vote,
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
    io.save_json(smk.output.numbers, numbers)


run(snakemake, main)

"""Rank training labels by suspicion (kernel neighbours, ensemble margin, one model's loss);
score each ranking against the injected errors, per model subset."""

import numpy as np

from multirun import contracts, kernel, knn, snake
from multirun.studies import label_errors as le
from multirun.studies import timing


def _scored(method, n_models, subset, score, truth):
    return {"method": method, "n_models": n_models, "subset": subset,
            **le.ranking_quality(score, truth)}


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    labels, truth = ds["y_train"], ds["corrupted"].astype(bool)
    logits = kernel.ShardedLogits(smk.input.train)
    nb = kernel.load_neighbours(smk.input.neighbours, num_keys=len(labels), extra=("models", "sizes"))
    k, power = smk.params.k, smk.params.power
    rows, curves = [], {}
    sizes = nb["sizes"].tolist()
    for row, (size, number) in enumerate(zip(sizes, knn.subset_numbers(sizes), strict=True)):
        members = nb["models"][row, :size]
        scores = {
            "kernel": le.kernel_disagreement(nb["index"][row], nb["similarity"][row], labels,
                                             k=k, power=power),
            "margin": le.ensemble_margin_score(logits.models(members), labels),
        }
        for method, score in scores.items():
            rows.append(_scored(method, size, number, score, truth))
            if size == max(nb["sizes"]):
                curves[method] = np.stack(le.precision_recall(score, truth))
    for m in range(logits.num_models):  # the single-model baseline, every model
        score = le.loss_score(logits.models(np.array([m]))[0], labels)
        rows.append(_scored("loss", 1, m, score, truth))
        if m == 0:
            curves["loss"] = np.stack(le.precision_recall(score, truth))
    seconds, rate = timing.seeds_per_second(smk.input.benchmarks, logits.num_models)
    print(f"trained {logits.num_models} seeds in {seconds:.1f} s: {rate:.2f} seeds/s", flush=True)
    for r in rows:
        r["seeds_per_second"] = round(rate, 3)
    contracts.save_csv(smk.output.table, rows, list(rows[0]))
    contracts.save_npz(smk.output.curves, noise=np.array(truth.mean()), k=np.array(k),
                n_models=np.array(max(nb["sizes"])),
                **{f"pr_{m}": c for m, c in curves.items()})


snake.run(snakemake, main)

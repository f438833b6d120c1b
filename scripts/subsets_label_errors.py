"""Rank the noisy training labels with out-of-sample probabilities of subset models (cleanlab,
self-confidence) and the subset models' kernel; score every ranking against the injected errors,
next to the in-sample rankings of the label-errors study."""

import numpy as np

from multirun import contracts, kernel, snake
from multirun.attribution import outcomes
from multirun.studies import label_errors as le


def main(smk):
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    ds = contracts.load_dataset(smk.input.data)
    labels, truth = ds["y_train"], ds["corrupted"].astype(bool)
    masks = np.asarray(contracts.load_npy(smk.input.masks, ndim=2, dtype=bool))
    logits = kernel.ShardedLogits(smk.input.train)
    nb = kernel.load_neighbours(smk.input.neighbours, num_keys=len(labels),
                                extra=("models", "sizes"))
    rows, curves = [], {}
    n_noise = int(truth.sum())

    def scored(method, size, score, **extra):
        rows.append({"method": method, "n_models": size, "subset": 0,  # one subset per size
                     "sample": "mixed" if method == "subset_kernel" else "out",
                     **le.ranking_quality(score, truth), "flagged": "",
                     "flagged_precision": "", "flagged_recall": "", **extra})
        if size == max(nb["sizes"]):
            curves[method] = np.stack(le.precision_recall(score, truth))

    for row, size in enumerate(nb["sizes"].tolist()):
        members = nb["models"][row, :size]
        probs, n_out = outcomes.out_of_sample_probabilities(logits, masks, models=members)
        rank = np.arange(len(labels))
        scored("oos_self_confidence", size, 1.0 - probs[rank, labels])
        quality = get_label_quality_scores(labels, probs, method="normalized_margin")
        issues = find_label_issues(labels, probs, return_indices_ranked_by="normalized_margin")
        score = -quality  # flagged examples first (in cleanlab's order), then by quality
        score[issues] = 2.0 + np.linspace(1.0, 0.0, len(issues))
        scored("cleanlab", size, score)
        rows[-1].update(flagged=len(issues), flagged_precision=float(truth[issues].mean())
                        if len(issues) else 0.0, flagged_recall=float(truth[issues].sum() / n_noise))
        scored("subset_kernel", size, le.kernel_disagreement(nb["index"][row], nb["similarity"][row],
                                                      labels, k=smk.params.k,
                                                      power=smk.params.power))
        print(f"{size} models: {int((n_out == 0).sum())} examples never left out", flush=True)
    for r in contracts.load_csv(smk.input.in_sample):  # the label-errors study, in sample
        rows.append({"method": f"in_sample_{r['method']}", "n_models": int(r["n_models"]),
                     "subset": int(r["subset"]), "sample": "in",
                     "average_precision": float(r["average_precision"]),
                     "precision_at_noise": float(r["precision_at_noise"]), "flagged": "",
                     "flagged_precision": "", "flagged_recall": ""})
    contracts.save_csv(smk.output.table, rows, list(rows[0]))
    contracts.save_npz(smk.output.curves, noise=np.array(truth.mean()),
                       n_models=np.array(max(nb["sizes"])),
                       **{f"pr_{m}": c for m, c in curves.items()})


snake.run(snakemake, main)

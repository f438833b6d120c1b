"""Ensemble and single-model accuracy vs number of models on the 60k set (test logits only)."""

from multirun import contracts, knn, published, snake

FIELDS = list(contracts.TABLES["scores"].columns)


def main(smk):
    p = smk.params
    logits, labels = published.load_pointer(smk.input.pointer)
    print(logits)
    rows = knn.ensemble_scores(logits, labels, sizes=p.model_counts, repeats=p.subsets,
                               seed=p.subset_seed, ensemble_mean=p.ensemble_mean)
    contracts.save_csv(smk.output.scores, rows, FIELDS)


snake.run(snakemake, main)

"""Check every local_logits file once against the labels (multirun.local_logits.check)."""

from multirun import contracts, local_logits, published, snake


def main(smk):
    labels = published.dataset_labels(smk.input.data)
    pairs = list(zip(smk.input.train, smk.input.test, strict=True))
    summary = local_logits.check(pairs, labels["y_train"], labels["y_test"])
    contracts.save_json(smk.output.summary, {**summary, "train": list(smk.input.train),
                                             "test": list(smk.input.test)})
    print(f"{len(pairs)} shards, {sum(summary['models'])} models, {summary['classes']} classes, "
          f"dtypes {summary['dtypes']}")


snake.run(snakemake, main)

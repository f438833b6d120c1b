"""Turn one published log.pt of the hub into a logit shard (the same files training makes).

The log.pt is loaded with ``weights_only=True`` (a downloaded pickle runs no code) and
memory-mapped; shards are written a chunk of models at a time, so the job's memory stays
near one chunk whatever the file size. Only the dataset's labels are read (for the sizes).
"""

import numpy as np

from multirun import published, snake
from multirun.contracts import save_npy


def main(smk):
    labels = published.dataset_labels(smk.input.data)
    path = published.download(smk.params.file, repo_id=smk.params.repo_id,
                              revision=smk.params.revision)
    logits = published.read_log(path, test_key=smk.params.test_logits,
                                num_train=len(labels["y_train"]), num_test=len(labels["y_test"]))
    for split in ("train", "test"):
        published.write_shard(smk.output[split], logits[split], mapped=logits["mapped"],
                              source=f"{path} ({split})")
    num = int(logits["test"].shape[0])
    save_npy(smk.output.seeds, int(smk.wildcards.shard) * num + np.arange(num, dtype=np.int64))
    print(f"{smk.params.file}: {num} models, test logits {smk.params.test_logits!r}")


snake.run(snakemake, main)

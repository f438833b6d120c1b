"""One pair of local_logits files as a logit shard: linked when every file shares a float16 or
float32 dtype, else written as float16."""

import json

import numpy as np

from multirun import contracts, local_logits, snake


def main(smk):
    summary = json.loads(open(smk.input.summary).read())
    link = local_logits.linkable(summary["dtypes"])
    for split in ("train", "test"):
        local_logits.import_shard(smk.input[split], smk.output[split], link=link)
    contracts.save_npy(smk.output.seeds, np.asarray(smk.params.seeds, dtype=np.int64))
    print(f"{smk.input.train}, {smk.input.test}: {'linked' if link else 'written as float16'}")


snake.run(snakemake, main)

"""Fetch the 60k set (logits.npy, labels.npy) into the hub cache and point to it (no copy)."""

from multirun import published, snake
from multirun.contracts import save_json


def main(smk):
    p = smk.params
    pointer = published.fetch_60k(list(p.files), repo_id=p.repo_id, revision=p.revision)
    save_json(smk.output.pointer, pointer)
    print(pointer)


snake.run(snakemake, main)

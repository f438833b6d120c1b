"""Fetch the 60k set (logits.npy, labels.npy) into the hub cache and point to it (no copy)."""

from multirun import published
from multirun.io import save_json
from multirun.snake import run


def main(smk):
    p = smk.params
    pointer = published.fetch_60k(list(p.files), repo_id=p.repo_id, revision=p.revision)
    save_json(smk.output.pointer, pointer)
    print(pointer)


run(snakemake, main)

# Config, paths and helper functions of subset training (workflow/rules/subsets.smk).
from multirun.studies import subsets as subsets_lib

subsets_lib.check(config)
SUB = config["subsets"]
SB = f"{R}/subsets/{subsets_lib.alpha_name(SUB['alpha'])}"
SUB_SHARDS = shards(SUB["seeds"], SUB["shard_size"])
SUB_ERR_SHARDS = shards(SUB["label_errors"]["seeds"], SUB["label_errors"]["shard_size"])
SUB_PARTS = {
    "main": (SB, SUB_SHARDS),
    "label_errors": (f"{SB}/label_errors", SUB_ERR_SHARDS),
}
# the same folder under results/logs and results/runtimes
SBR = f"subsets/{subsets_lib.alpha_name(SUB['alpha'])}"


def subset_files(part, kind):
    """Per-shard files of one part: checkpoint, train/test logits or benchmark."""
    root, table = SUB_PARTS[part]
    pattern = {
        "checkpoint": f"{root}/train/shard-{{s}}.pt",
        "train": f"{root}/logits/shard-{{s}}/train.npy",
        "test": f"{root}/logits/shard-{{s}}/test.npy",
        "benchmark": f"{R}/runtimes/{root.removeprefix(f'{R}/')}/train/shard-{{s}}.tsv",
    }[kind]
    return [pattern.format(s=s) for s in table]


def subsets_figures():
    names = [
        "subsets_memorization",
        "subsets_influence",
        "subsets_label_errors",
        "subsets_attribution",
    ]
    return [path for name in names for path in figure_paths(name)]


def subsets_outputs(wildcards=None):
    """The `subsets` target's files; checks the full-data counts first. An input function
    of the target itself: an error in a producing job's input function reads to Snakemake
    as "this rule cannot make the file", and an existing file would then be used as is.
    """
    subsets_lib.check_full_data(config)
    return [*subsets_figures(), f"{SB}/timing.csv"]


def full_data_logits(split):
    """The main run's logits of ``split`` (the kernel counts' models); checks the counts."""

    def files(wildcards):
        subsets_lib.check_full_data(config)
        return logit_files(split)

    return files


def full_data_checkpoints(wildcards=None):
    """The main run's shards holding the first max(TRAK counts) seeds (TRAK's ensemble);
    checks the full-data counts first (an input function: only when subsets are built).
    """
    subsets_lib.check_full_data(config)
    need = max([*SUB["trak"]["model_counts"], *SUB["trak"]["package_counts"]])
    return [f"{R}/train/shard-{s}.pt" for s, seeds in SHARDS.items() if seeds[0] < need]

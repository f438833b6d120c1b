# Config, paths and helper functions of the studies (workflow/rules/studies.smk).
from multirun import studies as studies_lib

studies_lib.check(config["studies"])
MEM = config["studies"]["memorization"]
NOISE = config["studies"]["label_noise"]
ERR = config["studies"]["label_errors"]
ST = f"{R}/studies"
MEM_SHARDS = shards(MEM["seeds"], MEM["shard_size"])
NOISE_SHARDS = shards(NOISE["seeds"], NOISE["shard_size"])
ERR_SHARDS = shards(ERR["seeds"], ERR["shard_size"])
# the variant whose hardest/easiest examples are shown
MEM_SHOWN = "real" if "real" in MEM["variants"] else MEM["variants"][0]


def memorization_logits(variant, epochs):
    return [
        f"{ST}/memorization/logits/{variant}-e{epochs}/shard-{s}/train.npy"
        for s in MEM_SHARDS
    ]


def memorization_benchmarks():
    return [
        f"{R}/runtimes/studies/memorization/train/{v}-e{e}/shard-{s}.tsv"
        for v in MEM["variants"]
        for e in MEM["epochs"]
        for s in MEM_SHARDS
    ]


def noise_cells():
    return [(a, alpha) for a in NOISE["architectures"] for alpha in NOISE["alphas"]]


def noise_recipe(alpha):
    """The training recipe of alpha's jobs: with batch_per_clean, batch_size * (1 + alpha)."""
    recipe = dict(NOISE["recipe"])
    if NOISE["batch_per_clean"]:
        recipe["batch_size"] = recipe["batch_size"] * (1 + alpha)
    return normalize_recipe(recipe, "studies.label_noise.recipe")


def noise_files(kind):
    """kind: test (logits), checkpoint or benchmark, for every (arch, alpha, shard)."""
    pattern = {
        "test": f"{ST}/label_noise/logits/{{a}}-alpha-{{alpha}}/shard-{{s}}/test.npy",
        "checkpoint": f"{ST}/label_noise/train/{{a}}-alpha-{{alpha}}/shard-{{s}}.pt",
        "benchmark": f"{R}/runtimes/studies/label_noise/train/{{a}}-alpha-{{alpha}}/shard-{{s}}.tsv",
    }[kind]
    return [
        pattern.format(a=a, alpha=alpha, s=s)
        for a, alpha in noise_cells()
        for s in NOISE_SHARDS
    ]


def error_logits(split):
    return [f"{ST}/label_errors/logits/shard-{s}/{split}.npy" for s in ERR_SHARDS]


def study_figures(study):
    names = {
        "memorization": ["memorization_pcorrect", "memorization_extremes"],
        "label_noise": ["label_noise_accuracy"],
        "label_errors": ["label_errors_pr"],
    }[study]
    return [path for name in names for path in figure_paths(name)]


def study_variant(study, name):
    """The data-variant parameters of one variant file (only the keys it uses)."""
    if study == "memorization":
        fraction = MEM[f"{name}_fraction"] if name != "real" else 0.0
        return {"kind": name, "fraction": fraction, "seed": MEM["data_seed"]}
    if study == "label_noise":
        return {
            "kind": "alpha",
            "alpha": int(name.removeprefix("alpha-")),
            "clean_examples": NOISE["clean_examples"],
            "validation": NOISE["validation"],
            "seed": NOISE["data_seed"],
        }
    return {"kind": "label_errors", "noise": ERR["noise"], "seed": ERR["data_seed"]}

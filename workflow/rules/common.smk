import os
import sys
from pathlib import Path

from multirun import local_logits as local
from multirun import published as hub
from multirun.codehash import code_hashes
from multirun.config import ConfigError, check, shards
from multirun.contracts import RUN_OPTIONS, run_options
from multirun.locks import lock_advice
from multirun.model_spec import model_files, normalize_spec
from multirun.recipe import normalize_recipe

# Strings from --config become the schema's types; every absent key takes its default.
check(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")

# Before Snakemake's own "cannot be locked ... --unlock": is the locking run alive?
if workflow.is_main_process and "--unlock" not in sys.argv:
    if note := lock_advice(Path.cwd()):
        print(note, file=sys.stderr)

# This run's --configfile and --config, for the remake commands that errors print
# (multirun.contracts.remake); jobs inherit the variable
os.environ[RUN_OPTIONS] = run_options(
    workflow.config_settings.configfiles, workflow.config_settings.config
)

R = config["results"]
PUBLISHED = "published" in config
# published.files: folders and patterns resolved with the hub's listing (cached under results)
PUBLISHED_FILES = (
    hub.resolve(config["published"], f"{R}/published") if PUBLISHED else []
)
# the 60k set: one logits.npy of test logits only, streamed from the hub cache
PUBLISHED_NPY = PUBLISHED and PUBLISHED_FILES[0].endswith(".npy")
# local_logits: your own .npy files, train file i and test file i are shard i
LOCAL = "local_logits" in config
LOCAL_PAIRS = (
    local.pair(
        local.resolve(config["local_logits"]["train"], "local_logits.train"),
        local.resolve(config["local_logits"]["test"], "local_logits.test"),
    )
    if LOCAL
    else []
)
LOCAL_LABELS = config["local_logits"]["labels"] if LOCAL else "dataset"
# labels-only: an npz of labels without inputs, so no example can be drawn
LOCAL_NO_INPUTS = LOCAL_LABELS != "dataset" and not local.has_inputs(LOCAL_LABELS)
if PUBLISHED:  # one shard per published log.pt
    SHARDS = {f"{i:03d}": [i] for i in range(len(PUBLISHED_FILES))}
elif LOCAL:  # one shard per pair of files; seeds number the models in file order
    SHARDS = local.shards([local.header(train)[0][0] for train, _ in LOCAL_PAIRS])
    local.check_counts(config["kernel"]["model_counts"], SHARDS)
else:
    SHARDS = shards(config["train"]["seeds"], config["train"]["shard_size"])
TRAINED = not PUBLISHED and not LOCAL
FEATURES = config["logits"]["features"] and TRAINED
FORMATS = config["figures"]["formats"]
VARIANT = "logsoftmax" if config["kernel"]["log_softmax"] else "raw"
# the kernel engine's settings, the same in every rule that runs it (docs/kernel.md)
KERNEL_ENGINE = {
    key: config["kernel"][key]
    for key in ("chunk_models", "block", "memory_gb", "precision")
}
SWEEPS = {
    "default": config["width_sweep"]["default_widths"],
    "full": config["width_sweep"]["widths"],
}


wildcard_constraints:
    shard=r"\d{3}",
    width=r"\d+",
    index=r"\d+",
    sweep="default|full",
    variant="logsoftmax|raw",


def logit_files(split):
    """The logits of every shard for one split: results/logits/shard-XXX/{split}.npy."""
    return [f"{R}/logits/shard-{s}/{split}.npy" for s in SHARDS]


def feature_files():
    """Penultimate features of the first shard (the cosine-neighbour baseline), if stored."""
    first = next(iter(SHARDS))
    if not FEATURES:
        return {}
    return {
        f"features_{s}": f"{R}/logits/shard-{first}/features_{s}.npy"
        for s in ("train", "test")
    }


NEIGHBOUR_FIGURES = [
    "neighbour_pairs",
    "neighbour_failures",
    "neighbour_random",
    "probability_correct",
    "per_class_vs_summed",
    "logsoftmax_vs_raw",
]


def figure_paths(name):
    return [f"{R}/figures/{name}.{ext}" for ext in FORMATS]


def main_spectra():
    """Spectra of the first hessian.models members of shard 000."""
    return [
        f"{R}/hessian/shard-000-{i}.npz" for i in range(config["hessian"]["models"])
    ]


def default_targets():
    targets = figure_paths("accuracy_vs_models") + [f"{R}/knn/{VARIANT}/scores.csv"]
    if PUBLISHED_NPY:  # test logits only: ensemble curves and test-to-test neighbours
        return targets + figure_paths("test_pairs")
    # the headline's kernel k-NN needs train logits (not in the test-only 60k set)
    targets.append(f"{R}/summary/headline_accuracy.csv")
    if not LOCAL_NO_INPUTS:  # the neighbour figures draw examples
        targets += [path for name in NEIGHBOUR_FIGURES for path in figure_paths(name)]
    if config["kernel"]["dense"]:
        targets.append(f"{R}/kernel/{VARIANT}/dense.npy")
    if TRAINED and config["hessian"]["models"] > 0:
        targets += figure_paths("hessian_spectrum") + [f"{R}/effdim/main.csv"]
    if TRAINED and SWEEPS["default"]:
        targets += figure_paths("width_sweep_default")
        targets.append(f"{R}/summary/headline_effdim.csv")
    return targets


def check_inputs():
    """The intermediates of the default targets, by contract (rule check verifies them)."""
    groups = {  # checkpoints and spectra: neither published nor local logits have them
        "dataset": [f"{R}/data/dataset.npz"] if not PUBLISHED_NPY else [],
        "checkpoints": list(checkpoint_seeds()),
        "logits": [] if PUBLISHED_NPY else logit_files("train") + logit_files("test"),
        "seeds": [] if PUBLISHED_NPY else logit_files("seeds"),
        "features": list(feature_files().values()),
        "spectra": [],
        "effdim": [],
    }
    if not PUBLISHED_NPY:  # the neighbour figures' inputs
        groups["scores"] = [f"{R}/knn/{v}/scores.csv" for v in ("logsoftmax", "raw")]
        groups["neighbours"] = [
            f"{R}/kernel/{v}/neighbours.npz" for v in ("logsoftmax", "raw")
        ]
        groups["per_class"] = [f"{R}/kernel/logsoftmax/per_class.csv"]
        groups["figure_data"] = [f"{R}/kernel/logsoftmax/figure_data.npz"]
    if TRAINED and config["hessian"]["models"] > 0:
        groups["spectra"] += main_spectra()
        groups["effdim"].append(f"{R}/effdim/main.csv")
    if TRAINED and SWEEPS["default"]:
        groups["spectra"] += sweep_spectra("default")
        groups["effdim"].append(f"{R}/effdim/sweep-default.csv")
    return {name: paths for name, paths in groups.items() if paths}


def checkpoint_seeds():
    """The default targets' checkpoints (main shards, default widths) -> their seeds."""
    if not TRAINED:
        return {}
    widths = list(range(config["width_sweep"]["seeds"]))
    return {f"{R}/train/shard-{s}.pt": seeds for s, seeds in SHARDS.items()} | {
        f"{R}/train/width-{w}.pt": widths for w in SWEEPS["default"]
    }


def check_seeds():
    """Path -> the seeds the config gives that checkpoint or logits folder's seeds.npy (rule
    check compares them; the published logits are left out: their files number the models).
    """
    if PUBLISHED:
        return {}
    return checkpoint_seeds() | dict(
        zip(logit_files("seeds"), SHARDS.values(), strict=True)
    )


def dataset_params():
    """Only the keys the configured dataset uses, so unrelated keys rerun nothing."""
    used = {
        "mnist1d": ("name", "seed", "num_samples"),
        "cifar10": ("name", "root"),
        "digits": ("name", "seed"),
        "npz": ("name", "path"),
    }
    cfg = config["dataset"]
    if LOCAL_LABELS != "dataset":  # local_logits.labels: FILE.npz
        params = {"name": "npz", "path": LOCAL_LABELS, "labels_only": True}
    else:
        params = {k: cfg[k] for k in used[cfg["name"]]}
    if "path" in params:  # ./data/x.npz is data/x.npz: a respelling reruns nothing
        params["path"] = os.path.normpath(params["path"])
    return params


def dataset_inputs():
    """Your own dataset file (dataset.name npz, or local_logits.labels) is an input: editing
    it reruns what follows."""
    params = dataset_params()
    if params["name"] != "npz":
        return {}
    if not Path(params["path"]).is_file():
        key = "local_logits.labels" if params.get("labels_only") else "dataset.path"
        raise ConfigError(
            f"config key {key}: {params['path']} is not a file (paths are "
            f"relative to the working directory, {Path.cwd()})"
        )
    return {"file": params["path"]}


def sweep_spectra(sweep):
    """Spectra of the width sweep: width_sweep.seeds models per width (default: default_seeds)."""
    key = "default_seeds" if sweep == "default" else "seeds"
    seeds = range(min(config["width_sweep"][key], config["width_sweep"]["seeds"]))
    return [f"{R}/hessian/width-{w}-{i}.npz" for w in SWEEPS[sweep] for i in seeds]


def grid_spectra():
    """Spectra of the width x depth grid: width_sweep.grid.seeds models per (depth, width)."""
    grid = config["width_sweep"]["grid"]
    return [
        f"{R}/hessian/grid-d{d}-w{w}-{i}.npz"
        for d in grid["depths"]
        for w in grid["widths"]
        for i in range(grid["seeds"])
    ]


def effdim_inputs(name):
    """main: members of shard 000; sweep-*: the width sweep; grid: the width x depth grid."""
    if name == "main":
        return main_spectra()
    if name == "grid":
        return grid_spectra()
    return sweep_spectra(name.removeprefix("sweep-"))


def logits_outputs():
    out = {
        split: f"{R}/logits/shard-{{shard}}/{split}.npy"
        for split in ("train", "test", "seeds")
    }
    if FEATURES:
        out |= {
            f"features_{s}": f"{R}/logits/shard-{{shard}}/features_{s}.npy"
            for s in ("train", "test")
        }
    return out


# the figure the --report shows: the .png, else the first of figures.formats
REPORT_FORMAT = "png" if "png" in FORMATS else FORMATS[0]


def figure_output(name, caption, category, key=""):
    """Named outputs {key}png: the figure in the --report (.png, or the first of
    figures.formats when that has no png: formats are honoured exactly), and {key}other:
    the other formats."""
    return {
        f"{key}png": report(
            f"{R}/figures/{name}.{REPORT_FORMAT}",
            caption=f"../report/{caption}.rst",
            category=category,
        ),
        f"{key}other": [
            f"{R}/figures/{name}.{ext}" for ext in FORMATS if ext != REPORT_FORMAT
        ],
    }


def code(script, *models):
    """{file: short hash} of the library code scripts/SCRIPT runs, and of the user files of
    the model specs ``models`` it builds (docs/models.md): a rule parameter, so editing one
    of them reruns the rule, and snakemake -n names the file."""
    extra = [path for spec in models for path in model_files(spec)]
    return code_hashes(Path(workflow.basedir) / "scripts" / script, extra=extra)


def train_spec(section, width=None, depth=None):
    """The model spec of a section (train, width_sweep) in canonical form (a default written out changes nothing)."""
    given = {"width": width, "depth": depth}
    spec = config[section]["model"] | {k: v for k, v in given.items() if v is not None}
    return normalize_spec(spec, f"{section}.model")


def train_recipe(section):
    """The recipe of a section (train, width_sweep) in canonical form (defaults filled, numbers as floats)."""
    return normalize_recipe(config[section]["recipe"], f"{section}.recipe")

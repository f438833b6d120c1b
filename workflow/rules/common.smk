from pathlib import Path

from multirun import published as hub
from multirun.codehash import code_hash
from multirun.config import check, shards
from multirun.models import normalize_spec
from multirun.recipe import normalize_recipe

# Strings from --config become the schema's types; every absent key takes its default.
check(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")

R = config["results"]
PUBLISHED = "published" in config
# published.files: folders and patterns resolved with the hub's listing (cached under results)
PUBLISHED_FILES = (
    hub.resolve(config["published"], f"{R}/published") if PUBLISHED else []
)
# the 60k set: one logits.npy of test logits only, streamed from the hub cache
PUBLISHED_NPY = PUBLISHED and PUBLISHED_FILES[0].endswith(".npy")
if PUBLISHED:  # one shard per published log.pt
    SHARDS = {f"{i:03d}": [i] for i in range(len(PUBLISHED_FILES))}
else:
    SHARDS = shards(config["train"]["seeds"], config["train"]["shard_size"])
FEATURES = config["logits"]["features"] and not PUBLISHED
FORMATS = config["figures"]["formats"]
VARIANT = "logsoftmax" if config["kernel"]["log_softmax"] else "raw"
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
    targets += [path for name in NEIGHBOUR_FIGURES for path in figure_paths(name)]
    if config["kernel"]["dense"]:
        targets.append(f"{R}/kernel/{VARIANT}/dense.npy")
    if not PUBLISHED and config["hessian"]["models"] > 0:
        targets += figure_paths("hessian_spectrum") + [f"{R}/effdim/main.csv"]
    if not PUBLISHED and SWEEPS["default"]:
        targets += figure_paths("width_sweep_default")
    return targets


def dataset_params():
    """Only the keys the configured dataset uses, so unrelated keys rerun nothing."""
    used = {"mnist1d": ("name", "seed", "num_samples"), "cifar10": ("name", "root")}
    cfg = config["dataset"]
    return {k: cfg[k] for k in used[cfg["name"]]}


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


def figure_output(name, caption, category, key=""):
    """Named outputs {key}png (also in the --report) and {key}other (the other formats)."""
    return {
        f"{key}png": report(
            f"{R}/figures/{name}.png",
            caption=f"../report/{caption}.rst",
            category=category,
        ),
        f"{key}other": [f"{R}/figures/{name}.{ext}" for ext in FORMATS if ext != "png"],
    }


def code(script):
    """Hash of the library code scripts/SCRIPT runs: a rule parameter, so editing it reruns the rule."""
    return code_hash(Path(workflow.basedir) / "scripts" / script)


def train_spec(section, width=None, depth=None):
    """The model spec of a section (train, width_sweep) in canonical form (a default written out changes nothing)."""
    given = {"width": width, "depth": depth}
    spec = config[section]["model"] | {k: v for k, v in given.items() if v is not None}
    return normalize_spec(spec, f"{section}.model")


def train_recipe(section):
    """The recipe of a section (train, width_sweep) in canonical form (defaults filled, numbers as floats)."""
    return normalize_recipe(config[section]["recipe"], f"{section}.recipe")

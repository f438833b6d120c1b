# Sweeps' points, packs and file lists (docs/sweeps.md); the rules are in sweeps.smk.
from multirun.sweeps import expand_all, grid_values, pack_members, packs, seed_shards

# sweep name -> [Point] (a ConfigError names a bad point)
SWEEP_POINTS = expand_all(config)
SWEEP_SHARDS = {name: seed_shards(s) for name, s in config["sweeps"].items()}
POINTS = {(name, p.name): p for name, pts in SWEEP_POINTS.items() for p in pts}
SW = f"{R}/sweeps"
# pack: true -> (sweep, pack) -> its points, trained as one program per shard
PACKS = {
    (name, pack): pts
    for name, all_points in SWEEP_POINTS.items()
    if config["sweeps"][name]["pack"]
    for pack, pts in packs(all_points).items()
}


def names_regex(names):
    return "|".join(names) or "(?!)"  # (?!): matches nothing


# sweep names (all, trained point by point, packed) and point names (always hold "=")
SWEEP_NAME = names_regex(SWEEP_POINTS)
SINGLE_NAME = names_regex(n for n in SWEEP_POINTS if not config["sweeps"][n]["pack"])
PACKED_NAME = names_regex(n for n in SWEEP_POINTS if config["sweeps"][n]["pack"])
POINT_NAME = r"[^/]*=[^/]*"


def sweep_point(w):
    """The Point of wildcards (name, point); a clear message for a path of no point."""
    try:
        return POINTS[w.name, w.point]
    except KeyError:
        raise ValueError(
            f"{SW}/{w.name}/{w.point}: no such point in sweeps.{w.name}; its points are "
            f"{[p.name for p in SWEEP_POINTS.get(w.name, [])]}"
        ) from None


def sweep_files(name, kind):
    """Files of every (point, shard) of sweep `name`, point-major: checkpoint or a logits split."""
    paths = {
        "checkpoint": "{sw}/{name}/{point}/shard-{shard}.pt",
        "train": "{sw}/{name}/{point}/logits/shard-{shard}/train.npy",
        "test": "{sw}/{name}/{point}/logits/shard-{shard}/test.npy",
        "seeds": "{sw}/{name}/{point}/logits/shard-{shard}/seeds.npy",
    }
    return [
        paths[kind].format(sw=SW, name=name, point=p.name, shard=s)
        for p in SWEEP_POINTS[name]
        for s in SWEEP_SHARDS[name]
    ]


def sweep_targets(name):
    """What `snakemake sweeps` builds of sweep `name`: its tables and its figure."""
    return [f"{SW}/{name}/summary.csv", *figure_paths(f"sweep_{name}")]

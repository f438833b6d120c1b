# Sweeps (issue 23, docs/sweeps.md): every point of a sweep's grid x its seed shards trains
# through the main run's train and logits scripts (rule inheritance), into
# results/sweeps/NAME/<point>/; a summary rule turns them into the sweep's tables and a
# figure rule draws them. Targets: sweeps (every sweep), batchnorm (see Snakefile).
from multirun.sweeps import expand_all, pack_members, packs, seed_shards

SWEEP_POINTS = expand_all(
    config
)  # sweep name -> [Point]; ConfigError names a bad point
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
        "checkpoint": "{point}/shard-{shard}.pt",
        "train": "{point}/logits/shard-{shard}/train.npy",
        "test": "{point}/logits/shard-{shard}/test.npy",
        "seeds": "{point}/logits/shard-{shard}/seeds.npy",
    }
    return [
        f"{SW}/{name}/" + paths[kind].format(point=p.name, shard=s)
        for p in SWEEP_POINTS[name]
        for s in SWEEP_SHARDS[name]
    ]


def sweep_targets(name):
    """What `snakemake sweeps` builds of sweep `name`: its tables and its figure."""
    return [f"{SW}/{name}/summary.csv"] + figure_paths(f"sweep_{name}")


use rule train_shard as sweep_train with:
    input:
        data=f"{R}/data/dataset.npz",
    output:
        checkpoint=f"{SW}/{{name,{SINGLE_NAME}}}/{{point,{POINT_NAME}}}/shard-{{shard}}.pt",
        metrics=f"{SW}/{{name}}/{{point}}/shard-{{shard}}.metrics.csv",
    log:
        f"{R}/logs/sweeps/{{name}}/{{point}}/shard-{{shard}}.log",
    benchmark:
        f"{R}/runtimes/sweeps/{{name}}/{{point}}/shard-{{shard}}.tsv"
    params:
        seeds=lambda w: SWEEP_SHARDS[w.name][w.shard],
        model=lambda w: sweep_point(w).model,
        recipe=lambda w: sweep_point(w).recipe,
        on_diverge="record",  # a diverged seed is a result of the sweep, not an error
        code=code("train.py"),


use rule train_shard as sweep_pack with:
    input:
        data=f"{R}/data/dataset.npz",
    output:
        checkpoint=f"{SW}/{{name,{PACKED_NAME}}}/packs/{{pack}}/shard-{{shard}}.pt",
    log:
        f"{R}/logs/sweeps/{{name}}/packs/{{pack}}/shard-{{shard}}.log",
    benchmark:
        f"{R}/runtimes/sweeps/{{name}}/packs/{{pack}}/shard-{{shard}}.tsv"
    params:
        seeds=lambda w: pack_members(
            PACKS[w.name, w.pack], SWEEP_SHARDS[w.name][w.shard]
        )[0],
        model=lambda w: PACKS[w.name, w.pack][0].model,
        recipe=lambda w: pack_members(
            PACKS[w.name, w.pack], SWEEP_SHARDS[w.name][w.shard]
        )[1],
        on_diverge="record",
        code=code("train.py"),


rule sweep_unpack:
    input:
        pack=lambda w: f"{SW}/{w.name}/packs/{sweep_point(w).pack}/shard-{w.shard}.pt",
    output:
        checkpoint=f"{SW}/{{name,{PACKED_NAME}}}/{{point,{POINT_NAME}}}/shard-{{shard}}.pt",
        metrics=f"{SW}/{{name}}/{{point}}/shard-{{shard}}.metrics.csv",
    log:
        f"{R}/logs/sweeps/{{name}}/{{point}}/unpack-{{shard}}.log",
    benchmark:
        f"{R}/runtimes/sweeps/{{name}}/{{point}}/unpack-{{shard}}.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        index=lambda w: PACKS[w.name, sweep_point(w).pack].index(sweep_point(w)),
        seeds=lambda w: SWEEP_SHARDS[w.name][w.shard],
        code=code("sweep_unpack.py"),
    script:
        "../../scripts/sweep_unpack.py"


if not PUBLISHED:  # published logits: no training, so no sweep points

    use rule logits as sweep_logits with:
        input:
            data=f"{R}/data/dataset.npz",
            checkpoint=f"{SW}/{{name}}/{{point}}/shard-{{shard}}.pt",
        output:
            **{
                split: f"{SW}/{{name,{SWEEP_NAME}}}/{{point,{POINT_NAME}}}/logits/shard-{{shard}}/{split}.npy"
                for split in ("train", "test", "seeds")
            },
        log:
            f"{R}/logs/sweeps/{{name}}/{{point}}/logits/shard-{{shard}}.log",
        benchmark:
            f"{R}/runtimes/sweeps/{{name}}/{{point}}/logits/shard-{{shard}}.tsv"
        params:
            seeds=lambda w: SWEEP_SHARDS[w.name][w.shard],
            batch_size=config["logits"]["batch_size"],
            code=code("logits.py"),


rule sweep_summary:
    input:
        data=f"{R}/data/dataset.npz",
        checkpoints=lambda w: sweep_files(w.name, "checkpoint"),
        train=lambda w: sweep_files(w.name, "train"),
        test=lambda w: sweep_files(w.name, "test"),
        seeds=lambda w: sweep_files(w.name, "seeds"),
    output:
        summary=f"{SW}/{{name,{SWEEP_NAME}}}/summary.csv",
        ensemble=f"{SW}/{{name}}/ensemble.csv",
        curves=f"{SW}/{{name}}/curves.csv",
    log:
        f"{R}/logs/sweeps/{{name}}/summary.log",
    benchmark:
        f"{R}/runtimes/sweeps/{{name}}/summary.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        points=lambda w: {p.name: p.values for p in SWEEP_POINTS[w.name]},
        shards=lambda w: len(SWEEP_SHARDS[w.name]),
        code=code("sweep_summary.py"),
    script:
        "../../scripts/sweep_summary.py"


rule figure_sweep:
    input:
        summary=f"{SW}/{{name}}/summary.csv",
        curves=f"{SW}/{{name}}/curves.csv",
    output:
        **figure_output("sweep_{name}", "sweep", "Sweeps"),
    log:
        f"{R}/logs/figures/sweep_{{name}}.log",
    benchmark:
        f"{R}/runtimes/figures/sweep_{{name}}.tsv"
    wildcard_constraints:
        name=SWEEP_NAME,
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        grid=lambda w: config["sweeps"][w.name]["grid"],
        title=lambda w: f"sweep {w.name}",
        dpi=config["figures"]["dpi"],
        code=code("fig_sweep.py"),
    script:
        "../../scripts/fig_sweep.py"

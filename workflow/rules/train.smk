rule train_shard:
    input:
        data=f"{R}/data/dataset.npz",
    output:
        checkpoint=f"{R}/train/shard-{{shard}}.pt",
    log:
        f"{R}/logs/train/shard-{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/train/shard-{{shard}}.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["gpu"],
    params:
        seeds=lambda w: SHARDS[w.shard],
        model=config["train"]["model"],
        recipe=config["train"]["recipe"],
    script:
        "../../scripts/train.py"


rule train_width:
    input:
        data=f"{R}/data/dataset.npz",
    output:
        checkpoint=f"{R}/train/width-{{width}}.pt",
    log:
        f"{R}/logs/train/width-{{width}}.log",
    benchmark:
        f"{R}/benchmarks/train/width-{{width}}.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["gpu"],
    params:
        seeds=list(range(config["sweep"].get("seeds", 1))),
        model=lambda w: {**config["sweep"]["model"], "width": int(w.width)},
        recipe=config["sweep"]["recipe"],
    script:
        "../../scripts/train.py"


rule train_grid:
    input:
        data=f"{R}/data/dataset.npz",
    output:
        checkpoint=f"{R}/train/grid-d{{depth}}-w{{width}}.pt",
    log:
        f"{R}/logs/train/grid-d{{depth}}-w{{width}}.log",
    benchmark:
        f"{R}/benchmarks/train/grid-d{{depth}}-w{{width}}.tsv"
    wildcard_constraints:
        depth=r"\d+",
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["gpu"],
    params:
        seeds=lambda w: list(range(config["sweep"]["grid"]["seeds"])),
        model=lambda w: grid_model(w.depth, w.width),
        recipe=lambda w: config["sweep"]["recipe"]
        | {"epochs": config["sweep"]["grid"]["epochs"]},
    script:
        "../../scripts/train.py"

rule train_shard:
    input:
        data=f"{R}/data/dataset.npz",
    output:
        checkpoint=f"{R}/train/shard-{{shard}}.pt",
        metrics=f"{R}/train/shard-{{shard}}.metrics.csv",
    log:
        f"{R}/logs/train/shard-{{shard}}.log",
    benchmark:
        f"{R}/runtimes/train/shard-{{shard}}.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["gpu"],
    params:
        seeds=lambda w: SHARDS[w.shard],
        model=train_spec("train"),
        recipe=train_recipe("train"),
        where="train",
        code=code("train.py", config["train"]["model"]),
    script:
        "../../scripts/train.py"


rule train_width:
    input:
        data=f"{R}/data/dataset.npz",
    output:
        checkpoint=f"{R}/train/width-{{width}}.pt",
        metrics=f"{R}/train/width-{{width}}.metrics.csv",
    log:
        f"{R}/logs/train/width-{{width}}.log",
    benchmark:
        f"{R}/runtimes/train/width-{{width}}.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["gpu"],
    params:
        seeds=list(range(config["width_sweep"]["seeds"])),
        model=lambda w: train_spec("width_sweep", width=int(w.width)),
        recipe=train_recipe("width_sweep"),
        where="width_sweep",
        code=code("train.py", config["width_sweep"]["model"]),
    script:
        "../../scripts/train.py"


rule train_grid:
    input:
        data=f"{R}/data/dataset.npz",
    output:
        checkpoint=f"{R}/train/grid-d{{depth}}-w{{width}}.pt",
        metrics=f"{R}/train/grid-d{{depth}}-w{{width}}.metrics.csv",
    log:
        f"{R}/logs/train/grid-d{{depth}}-w{{width}}.log",
    benchmark:
        f"{R}/runtimes/train/grid-d{{depth}}-w{{width}}.tsv"
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
        seeds=lambda w: list(range(config["width_sweep"]["grid"]["seeds"])),
        model=lambda w: train_spec(
            "width_sweep", width=int(w.width), depth=int(w.depth)
        ),
        recipe=train_recipe("width_sweep")
        | {"epochs": config["width_sweep"]["grid"]["epochs"]},
        where="width_sweep",
        code=code("train.py", config["width_sweep"]["model"]),
    script:
        "../../scripts/train.py"

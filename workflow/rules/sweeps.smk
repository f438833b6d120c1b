# Sweeps (issue 23, docs/sweeps.md): every point of a sweep's grid x its seed shards trains
# through the main run's train and logits scripts (rule inheritance), into
# results/sweeps/NAME/<point>/; a summary rule turns them into the sweep's tables and a
# figure rule draws them. Targets: sweeps (every sweep), batchnorm (see Snakefile).


include: "sweeps_common.smk"


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
        where=lambda w: f"sweeps.{w.name}",
        code=lambda w: code("train.py", sweep_point(w).model),


use rule train_shard as sweep_pack with:
    input:
        data=f"{R}/data/dataset.npz",
    output:
        checkpoint=f"{SW}/{{name,{PACKED_NAME}}}/packs/{{pack}}/shard-{{shard}}.pt",
        metrics=f"{SW}/{{name}}/packs/{{pack}}/shard-{{shard}}.metrics.csv",
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
        where=lambda w: f"sweeps.{w.name}",
        code=lambda w: code("train.py", PACKS[w.name, w.pack][0].model),


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


if TRAINED:  # published or local logits: no logits rule, so no sweep points

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
        grid=lambda w: grid_values(SWEEP_POINTS[w.name]),
        title=lambda w: f"sweep {w.name}",
        dpi=config["figures"]["dpi"],
        code=code("fig_sweep.py"),
    script:
        "../../scripts/fig_sweep.py"

if PUBLISHED:

    rule import_published:
        input:
            data=f"{R}/data/dataset.npz",
        output:
            **logits_outputs(),
        log:
            f"{R}/logs/logits/shard-{{shard}}.log",
        benchmark:
            f"{R}/runtimes/logits/shard-{{shard}}.tsv"
        conda:
            "../../envs/multirun.yaml"
        resources:
            mem_mb=16000,
            runtime=60,
        params:
            file=lambda w: config["published"]["files"][int(w.shard)],
            repo_id=config["published"]["repo_id"],
            revision=config["published"]["revision"],
            code=code("import_published.py"),
        script:
            "../../scripts/import_published.py"

else:

    rule logits:
        input:
            data=f"{R}/data/dataset.npz",
            checkpoint=f"{R}/train/shard-{{shard}}.pt",
        output:
            **logits_outputs(),
        log:
            f"{R}/logs/logits/shard-{{shard}}.log",
        benchmark:
            f"{R}/runtimes/logits/shard-{{shard}}.tsv"
        conda:
            "../../envs/multirun.yaml"
        threads: 2
        resources:
            mem_mb=8000,
            runtime=60,
            gpu=config["gpu"],
        params:
            seeds=lambda w: SHARDS[w.shard],
            batch_size=config["logits"]["batch_size"],
            code=code("logits.py"),
        script:
            "../../scripts/logits.py"

if PUBLISHED_NPY:

    rule fetch_published_arrays:
        output:
            pointer=f"{R}/published/arrays.json",
        log:
            f"{R}/logs/published/fetch.log",
        benchmark:
            f"{R}/runtimes/published/fetch.tsv"
        conda:
            "../../envs/multirun.yaml"
        resources:
            mem_mb=2000,
            runtime=240,
        params:
            files=PUBLISHED_FILES,
            repo_id=config["published"]["repo_id"],
            revision=config["published"]["revision"],
            code=code("fetch_published.py"),
        script:
            "../../scripts/fetch_published.py"

elif PUBLISHED:

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
            mem_mb=2000,
            runtime=60,
        params:
            file=lambda w: PUBLISHED_FILES[int(w.shard)],
            repo_id=config["published"]["repo_id"],
            revision=config["published"]["revision"],
            test_logits=config["published"]["test_logits"],
            code=code("import_published.py"),
        script:
            "../../scripts/import_published.py"

elif LOCAL:

    rule check_local_logits:
        input:
            data=f"{R}/data/dataset.npz",
            train=[train for train, _ in LOCAL_PAIRS],
            test=[test for _, test in LOCAL_PAIRS],
        output:
            summary=f"{R}/local/check.json",
        log:
            f"{R}/logs/local/check.log",
        benchmark:
            f"{R}/runtimes/local/check.tsv"
        conda:
            "../../envs/multirun.yaml"
        resources:
            mem_mb=2000,
            runtime=60,
        params:
            code=code("check_local_logits.py"),
        script:
            "../../scripts/check_local_logits.py"

    rule import_local_logits:
        input:
            summary=f"{R}/local/check.json",
            train=lambda w: LOCAL_PAIRS[int(w.shard)][0],
            test=lambda w: LOCAL_PAIRS[int(w.shard)][1],
        output:
            **logits_outputs(),
        log:
            f"{R}/logs/logits/shard-{{shard}}.log",
        benchmark:
            f"{R}/runtimes/logits/shard-{{shard}}.tsv"
        conda:
            "../../envs/multirun.yaml"
        resources:
            mem_mb=2000,
            runtime=60,
        params:
            seeds=lambda w: SHARDS[w.shard],
            code=code("import_local_logits.py"),
        script:
            "../../scripts/import_local_logits.py"

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

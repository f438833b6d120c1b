rule kernel:
    input:
        train=logit_files("train"),
        test=logit_files("test"),
    output:
        neighbours=f"{R}/kernel/{{variant}}/neighbours.npz",
    log:
        f"{R}/logs/kernel/{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/kernel/{{variant}}.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=config["gpu"],
    params:
        log_softmax=lambda w: w.variant == "logsoftmax",
        k_max=config["kernel"]["k_max"],
        model_counts=config["kernel"]["model_counts"],
        subsets=config["kernel"].get("subsets", 1),
        subset_seed=config["kernel"].get("subset_seed", 0),
        chunk_models=config["kernel"].get("chunk_models", 64),
        block=config["kernel"].get("block"),
        memory_gb=config["kernel"].get("memory_gb"),
        precision=config["kernel"].get("precision", "fp32"),
    script:
        "../../scripts/kernel.py"


rule dense_kernel:
    input:
        train=logit_files("train"),
        test=logit_files("test"),
    output:
        kernel=f"{R}/kernel/{{variant}}/dense.npy",
    log:
        f"{R}/logs/kernel/{{variant}}-dense.log",
    benchmark:
        f"{R}/benchmarks/kernel/{{variant}}-dense.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=config["gpu"],
    params:
        log_softmax=lambda w: w.variant == "logsoftmax",
        chunk_models=config["kernel"].get("chunk_models", 64),
        block=config["kernel"].get("block"),
        memory_gb=config["kernel"].get("memory_gb"),
        precision=config["kernel"].get("precision", "fp32"),
    script:
        "../../scripts/dense_kernel.py"


rule neighbour_data:
    input:
        **feature_files(),
        data=f"{R}/data/dataset.npz",
        train=logit_files("train"),
        test=logit_files("test"),
    output:
        per_class=f"{R}/kernel/logsoftmax/per_class.csv",
        arrays=f"{R}/kernel/logsoftmax/figure_data.npz",
    log:
        f"{R}/logs/kernel/neighbour_data.log",
    benchmark:
        f"{R}/benchmarks/kernel/neighbour_data.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=config["gpu"],
    params:
        model_counts=config["kernel"]["model_counts"],
        subsets=config["kernel"].get("subsets", 1),
        subset_seed=config["kernel"].get("subset_seed", 0),
        k=config["figures"].get("neighbour_k", 3),
        vote=config["figures"].get("neighbour_vote", "majority"),
        # the vote's similarity power matters to weighted votes only
        power=lambda w: (
            config["knn"].get("power", 4)
            if config["figures"].get("neighbour_vote", "majority") == "weighted"
            else None
        ),
        chunk_models=config["kernel"].get("chunk_models", 64),
        block=config["kernel"].get("block"),
        memory_gb=config["kernel"].get("memory_gb"),
        precision=config["kernel"].get("precision", "fp32"),
    script:
        "../../scripts/neighbour_data.py"

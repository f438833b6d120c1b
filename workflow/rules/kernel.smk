rule kernel:
    input:
        train=logit_files("train"),
        test=logit_files("test"),
    output:
        neighbours=f"{R}/kernel/{{variant}}/neighbours.npz",
    log:
        f"{R}/logs/kernel/{{variant}}.log",
    benchmark:
        f"{R}/runtimes/kernel/{{variant}}.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=config["gpu"],
    params:
        **KERNEL_ENGINE,
        log_softmax=lambda w: w.variant == "logsoftmax",
        exclude_self=False,  # test-to-train; the label-error study's train-to-train sets True
        k_max=config["kernel"]["k_max"],
        model_counts=config["kernel"]["model_counts"],
        subsets=config["kernel"]["subsets"],
        subset_seed=config["kernel"]["subset_seed"],
        code=code("kernel.py"),
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
        f"{R}/runtimes/kernel/{{variant}}-dense.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=config["gpu"],
    params:
        **KERNEL_ENGINE,
        log_softmax=lambda w: w.variant == "logsoftmax",
        code=code("dense_kernel.py"),
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
        f"{R}/runtimes/kernel/neighbour_data.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=config["gpu"],
    params:
        **KERNEL_ENGINE,
        model_counts=config["kernel"]["model_counts"],
        subsets=config["kernel"]["subsets"],
        subset_seed=config["kernel"]["subset_seed"],
        k=config["figures"]["neighbour_k"],
        vote=config["figures"]["neighbour_vote"],
        # the vote's similarity power matters to weighted votes only
        power=lambda w: (
            config["knn"]["power"]
            if config["figures"]["neighbour_vote"] == "weighted"
            else None
        ),
        code=code("neighbour_data.py"),
    script:
        "../../scripts/neighbour_data.py"

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
        log_softmax=lambda w: w.variant == "logsoftmax",
        k_max=config["kernel"]["k_max"],
        model_counts=config["kernel"]["model_counts"],
        subsets=config["kernel"]["subsets"],
        subset_seed=config["kernel"]["subset_seed"],
        chunk_models=config["kernel"]["chunk_models"],
        block=config["kernel"]["block"],
        precision=config["kernel"]["precision"],
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
        log_softmax=lambda w: w.variant == "logsoftmax",
        chunk_models=config["kernel"]["chunk_models"],
        precision=config["kernel"]["precision"],
        code=code("dense_kernel.py"),
    script:
        "../../scripts/dense_kernel.py"

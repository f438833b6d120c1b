rule dataset:
    output:
        f"{R}/data/dataset.npz",
    log:
        f"{R}/logs/dataset.log",
    benchmark:
        f"{R}/runtimes/dataset.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        dataset=dataset_params(),
        code=code("dataset.py"),
    script:
        "../../scripts/dataset.py"

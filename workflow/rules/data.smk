rule dataset:
    output:
        f"{R}/data/dataset.npz",
    log:
        f"{R}/logs/dataset.log",
    benchmark:
        f"{R}/benchmarks/dataset.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        dataset=dataset_params(),
    script:
        "../../scripts/dataset.py"

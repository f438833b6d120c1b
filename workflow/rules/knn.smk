if not PUBLISHED_NPY:

    rule knn:
        input:
            data=f"{R}/data/dataset.npz",
            neighbours=f"{R}/kernel/{{variant}}/neighbours.npz",
            test=logit_files("test"),
        output:
            scores=f"{R}/knn/{{variant}}/scores.csv",
        log:
            f"{R}/logs/knn/{{variant}}.log",
        benchmark:
            f"{R}/runtimes/knn/{{variant}}.tsv"
        conda:
            "../../envs/multirun.yaml"
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            k=config["knn"]["k"],
            power=config["knn"]["power"],
            ensemble_mean=config["knn"]["ensemble_mean"],
            code=code("knn.py"),
        script:
            "../../scripts/knn.py"

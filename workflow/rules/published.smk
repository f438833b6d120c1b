# The 60k set (published.files: [logits.npy] of kjj0/cifar10-multirun-logits-60k): test logits
# only, read in place from the hub cache: ensemble / single-model accuracy vs number of
# models, and the test-to-test kernel neighbours (near-duplicates within the test set).
if PUBLISHED_NPY:

    rule ensemble_scores:
        input:
            pointer=f"{R}/published/arrays.json",
        output:
            scores=f"{R}/knn/{{variant}}/scores.csv",
        log:
            f"{R}/logs/knn/{{variant}}-ensemble.log",
        benchmark:
            f"{R}/runtimes/knn/{{variant}}-ensemble.tsv"
        conda:
            "../../envs/multirun.yaml"
        resources:
            mem_mb=4000,
            runtime=240,
        params:
            model_counts=config["kernel"]["model_counts"],
            subsets=config["kernel"]["subsets"],
            subset_seed=config["kernel"]["subset_seed"],
            ensemble_mean=config["knn"]["ensemble_mean"],
            code=code("ensemble_scores.py"),
        script:
            "../../scripts/ensemble_scores.py"

    rule test_neighbours:
        input:
            pointer=f"{R}/published/arrays.json",
        output:
            neighbours=f"{R}/kernel/{{variant}}/test_neighbours.npz",
        log:
            f"{R}/logs/kernel/{{variant}}-test.log",
        benchmark:
            f"{R}/runtimes/kernel/{{variant}}-test.tsv"
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
            models=max(config["kernel"]["model_counts"]),
            k_max=config["kernel"]["k_max"],
            code=code("test_neighbours.py"),
        script:
            "../../scripts/test_neighbours.py"

    rule figure_test_pairs:
        input:
            data=f"{R}/data/dataset.npz",
            neighbours=f"{R}/kernel/{VARIANT}/test_neighbours.npz",
        output:
            **figure_output("test_pairs", "test_pairs", "Ensemble kernel"),
        log:
            f"{R}/logs/figures/test_pairs.log",
        benchmark:
            f"{R}/runtimes/figures/test_pairs.tsv"
        conda:
            "../../envs/multirun.yaml"
        resources:
            mem_mb=4000,
            runtime=10,
        params:
            dpi=config["figures"]["dpi"],
            ranks=[1, 48],
            code=code("fig_test_pairs.py"),
        script:
            "../../scripts/fig_test_pairs.py"

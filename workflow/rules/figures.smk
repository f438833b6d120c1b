rule figure_accuracy:
    input:
        scores=f"{R}/knn/{VARIANT}/scores.csv",
    output:
        **figure_output("accuracy_vs_models", "accuracy_vs_models", "Ensemble kernel"),
    log:
        f"{R}/logs/figures/accuracy_vs_models.log",
    benchmark:
        f"{R}/benchmarks/figures/accuracy_vs_models.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"].get("dpi", 150),
        k=config["knn"]["k"],
    script:
        "../../scripts/fig_accuracy.py"


rule figure_spectrum:
    input:
        spectra=main_spectra(),
    output:
        **figure_output("hessian_spectrum", "hessian_spectrum", "Hessian"),
    log:
        f"{R}/logs/figures/hessian_spectrum.log",
    benchmark:
        f"{R}/benchmarks/figures/hessian_spectrum.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"].get("dpi", 150),
        sigma=config["hessian"].get("slq", {}).get("sigma", 0.01),
    script:
        "../../scripts/fig_spectrum.py"


rule figure_width_sweep:
    input:
        table=f"{R}/effdim/sweep-{{sweep}}.csv",
        spectra=lambda w: sweep_spectra(w.sweep),
    output:
        **figure_output("width_sweep_{sweep}", "width_sweep", "Hessian"),
        **figure_output(
            "width_spectra_{sweep}", "width_spectra", "Hessian", key="spectra_"
        ),
    log:
        f"{R}/logs/figures/width_sweep_{{sweep}}.log",
    benchmark:
        f"{R}/benchmarks/figures/width_sweep_{{sweep}}.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"].get("dpi", 150),
        sigma=config["hessian"].get("slq", {}).get("sigma", 0.01),
    script:
        "../../scripts/fig_width_sweep.py"


rule figure_width_depth:
    input:
        table=f"{R}/effdim/grid.csv",
    output:
        **figure_output("width_depth", "width_depth", "Hessian"),
    log:
        f"{R}/logs/figures/width_depth.log",
    benchmark:
        f"{R}/benchmarks/figures/width_depth.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"].get("dpi", 150),
        z=config["hessian"].get("z", [1.0])[0],
    script:
        "../../scripts/fig_width_depth.py"


rule figure_neighbours:
    input:
        **feature_files(),
        data=f"{R}/data/dataset.npz",
        neighbours=f"{R}/kernel/logsoftmax/neighbours.npz",
        scores=f"{R}/knn/logsoftmax/scores.csv",
        scores_raw=f"{R}/knn/raw/scores.csv",
        train=logit_files("train"),
        test=logit_files("test"),
    output:
        **figure_output(
            "neighbour_pairs", "neighbour_pairs", "Ensemble kernel", key="pairs_"
        ),
        **figure_output(
            "neighbour_failures",
            "neighbour_failures",
            "Ensemble kernel",
            key="failures_",
        ),
        **figure_output(
            "neighbour_random", "neighbour_random", "Ensemble kernel", key="random_"
        ),
        **figure_output(
            "probability_correct",
            "probability_correct",
            "Ensemble kernel",
            key="pcorrect_",
        ),
        **figure_output(
            "per_class_vs_summed",
            "per_class_vs_summed",
            "Ensemble kernel",
            key="per_class_",
        ),
        **figure_output(
            "logsoftmax_vs_raw", "logsoftmax_vs_raw", "Ensemble kernel", key="raw_"
        ),
        numbers=f"{R}/figures/neighbour_numbers.json",
    log:
        f"{R}/logs/figures/neighbours.log",
    benchmark:
        f"{R}/benchmarks/figures/neighbours.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=config["gpu"],
    params:
        pair_ranks=config["figures"].get("pair_ranks", [601, 648]),
        examples=config["figures"].get("examples", 10),
        seed=config["kernel"].get("subset_seed", 0),
        dpi=config["figures"].get("dpi", 150),
        model_counts=config["kernel"]["model_counts"],
        subsets=config["kernel"].get("subsets", 1),
        subset_seed=config["kernel"].get("subset_seed", 0),
        k=config["figures"].get("neighbour_k", 3),
        vote=config["figures"].get("neighbour_vote", "majority"),
        power=config["knn"].get("power", 4),
        chunk_models=config["kernel"].get("chunk_models", 64),
        block=config["kernel"].get("block", 4096),
    script:
        "../../scripts/neighbour_figures.py"

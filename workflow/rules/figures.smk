rule figure_accuracy:
    input:
        scores=f"{R}/knn/{VARIANT}/scores.csv",
    output:
        **figure_output("accuracy_vs_models", "accuracy_vs_models", "Ensemble kernel"),
    log:
        f"{R}/logs/figures/accuracy_vs_models.log",
    benchmark:
        f"{R}/runtimes/figures/accuracy_vs_models.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"]["dpi"],
        k=config["knn"]["k"],
        code=code("fig_accuracy.py"),
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
        f"{R}/runtimes/figures/hessian_spectrum.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"]["dpi"],
        sigma=config["hessian"]["slq"]["sigma"],
        code=code("fig_spectrum.py"),
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
        f"{R}/runtimes/figures/width_sweep_{{sweep}}.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"]["dpi"],
        sigma=config["hessian"]["slq"]["sigma"],
        code=code("fig_width_sweep.py"),
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
        f"{R}/runtimes/figures/width_depth.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"]["dpi"],
        z=config["hessian"]["z"][0],
        code=code("fig_width_depth.py"),
    script:
        "../../scripts/fig_width_depth.py"


rule figure_neighbours:
    input:
        data=f"{R}/data/dataset.npz",
        neighbours=f"{R}/kernel/logsoftmax/neighbours.npz",
        per_class=f"{R}/kernel/logsoftmax/per_class.csv",
        arrays=f"{R}/kernel/logsoftmax/figure_data.npz",
        scores=f"{R}/knn/logsoftmax/scores.csv",
        scores_raw=f"{R}/knn/raw/scores.csv",
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
        f"{R}/runtimes/figures/neighbours.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        pair_ranks=config["figures"]["pair_ranks"],
        examples=config["figures"]["examples"],
        seed=config["kernel"]["subset_seed"],
        dpi=config["figures"]["dpi"],
        k=config["figures"]["neighbour_k"],
        vote=config["figures"]["neighbour_vote"],
        code=code("neighbour_figures.py"),
    script:
        "../../scripts/neighbour_figures.py"


rule headline_accuracy:
    input:
        table=f"{R}/knn/{VARIANT}/scores.csv",
    output:
        table=report(
            f"{R}/summary/headline_accuracy.csv",
            caption="../report/headline.rst",
            category="Summary",
        ),
    log:
        f"{R}/logs/summary/headline_accuracy.log",
    benchmark:
        f"{R}/runtimes/summary/headline_accuracy.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        table="accuracy",
        k=config["knn"]["k"],
        code=code("headline.py"),
    script:
        "../../scripts/headline.py"


rule headline_effdim:
    input:
        table=f"{R}/effdim/sweep-default.csv",
    output:
        table=report(
            f"{R}/summary/headline_effdim.csv",
            caption="../report/headline.rst",
            category="Summary",
        ),
    log:
        f"{R}/logs/summary/headline_effdim.log",
    benchmark:
        f"{R}/runtimes/summary/headline_effdim.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        table="effdim",
        z=config["hessian"]["z"][0],
        code=code("headline.py"),
    script:
        "../../scripts/headline.py"

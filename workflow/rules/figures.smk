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
    script:
        "../../scripts/fig_accuracy.py"


rule figure_spectrum:
    input:
        spectra=hessian_checkpoints(),
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

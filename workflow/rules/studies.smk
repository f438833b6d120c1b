# Studies of many training runs (issue 13): memorization across seeds, robustness to
# label noise, the ensemble kernel as a label-error detector. Each study trains through
# the same scripts as the main run (train.py, logits.py, kernel.py) by rule inheritance,
# on its own dataset variants under results/studies/<study>/. Targets: see Snakefile.


include: "studies_common.smk"


wildcard_constraints:
    mem_variant="real|randx|randy",
    epochs=r"\d+",
    alpha=r"\d+",
    arch="|".join(NOISE["architectures"]),


# ----------------------------------------------------------------------- data variants


rule study_data:
    input:
        data=f"{R}/data/dataset.npz",
    output:
        f"{ST}/{{study}}/data/{{name}}.npz",
    log:
        f"{R}/logs/studies/{{study}}/data/{{name}}.log",
    benchmark:
        f"{R}/runtimes/studies/{{study}}/data/{{name}}.tsv"
    wildcard_constraints:
        study="memorization|label_noise|label_errors",
        name=r"real|randx|randy|alpha-\d+|noisy",
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        variant=lambda w: study_variant(w.study, w.name),
        code=code("study_data.py"),
    script:
        "../../scripts/study_data.py"


# ----------------------------------------------------------------------- memorization


use rule train_shard as memorization_train with:
    input:
        data=f"{ST}/memorization/data/{{mem_variant}}.npz",
    output:
        checkpoint=f"{ST}/memorization/train/{{mem_variant}}-e{{epochs}}/shard-{{shard}}.pt",
        metrics=f"{ST}/memorization/train/{{mem_variant}}-e{{epochs}}/shard-{{shard}}.metrics.csv",
    log:
        f"{R}/logs/studies/memorization/train/{{mem_variant}}-e{{epochs}}/shard-{{shard}}.log",
    benchmark:
        f"{R}/runtimes/studies/memorization/train/{{mem_variant}}-e{{epochs}}/shard-{{shard}}.tsv"
    params:
        seeds=lambda w: MEM_SHARDS[w.shard],
        model=normalize_spec(MEM["model"], "studies.memorization.model"),
        recipe=lambda w: normalize_recipe(
            {**MEM["recipe"], "epochs": int(w.epochs)}, "studies.memorization.recipe"
        ),
        where="studies.memorization",
        code=code("train.py", MEM["model"]),


if TRAINED:

    use rule logits as memorization_logits with:
        input:
            data=f"{ST}/memorization/data/{{mem_variant}}.npz",
            checkpoint=f"{ST}/memorization/train/{{mem_variant}}-e{{epochs}}/shard-{{shard}}.pt",
        output:
            **{
                split: f"{ST}/memorization/logits/{{mem_variant}}-e{{epochs}}/shard-{{shard}}/{split}.npy"
                for split in ("train", "test", "seeds")
            },
        log:
            f"{R}/logs/studies/memorization/logits/{{mem_variant}}-e{{epochs}}/shard-{{shard}}.log",
        benchmark:
            f"{R}/runtimes/studies/memorization/logits/{{mem_variant}}-e{{epochs}}/shard-{{shard}}.tsv"
        params:
            seeds=lambda w: MEM_SHARDS[w.shard],
            batch_size=config["logits"]["batch_size"],
            code=code("logits.py"),

    use rule logits as label_noise_logits with:
        input:
            data=f"{ST}/label_noise/data/alpha-{{alpha}}.npz",
            checkpoint=f"{ST}/label_noise/train/{{arch}}-alpha-{{alpha}}/shard-{{shard}}.pt",
        output:
            **{
                split: f"{ST}/label_noise/logits/{{arch}}-alpha-{{alpha}}/shard-{{shard}}/{split}.npy"
                for split in ("train", "test", "seeds")
            },
        log:
            f"{R}/logs/studies/label_noise/logits/{{arch}}-alpha-{{alpha}}/shard-{{shard}}.log",
        benchmark:
            f"{R}/runtimes/studies/label_noise/logits/{{arch}}-alpha-{{alpha}}/shard-{{shard}}.tsv"
        params:
            seeds=lambda w: NOISE_SHARDS[w.shard],
            batch_size=config["logits"]["batch_size"],
            code=code("logits.py"),

    use rule logits as label_errors_logits with:
        input:
            data=f"{ST}/label_errors/data/noisy.npz",
            checkpoint=f"{ST}/label_errors/train/shard-{{shard}}.pt",
        output:
            **{
                split: f"{ST}/label_errors/logits/shard-{{shard}}/{split}.npy"
                for split in ("train", "test", "seeds")
            },
        log:
            f"{R}/logs/studies/label_errors/logits/shard-{{shard}}.log",
        benchmark:
            f"{R}/runtimes/studies/label_errors/logits/shard-{{shard}}.tsv"
        params:
            seeds=lambda w: ERR_SHARDS[w.shard],
            batch_size=config["logits"]["batch_size"],
            code=code("logits.py"),


rule memorization_summary:
    input:
        data=expand(f"{ST}/memorization/data/{{v}}.npz", v=MEM["variants"]),
        logits=[
            path
            for v in MEM["variants"]
            for e in MEM["epochs"]
            for path in memorization_logits(v, e)
        ],
        benchmarks=memorization_benchmarks(),
    output:
        pcorrect=f"{ST}/memorization/pcorrect.npz",
        table=f"{ST}/memorization/summary.csv",
    log:
        f"{R}/logs/studies/memorization/summary.log",
    benchmark:
        f"{R}/runtimes/studies/memorization/summary.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        variants=MEM["variants"],
        epochs=MEM["epochs"],
        shards=len(MEM_SHARDS),
        code=code("study_memorization.py"),
    script:
        "../../scripts/study_memorization.py"


rule figure_memorization:
    input:
        pcorrect=f"{ST}/memorization/pcorrect.npz",
        table=f"{ST}/memorization/summary.csv",
        data=f"{ST}/memorization/data/{MEM_SHOWN}.npz",
    output:
        **figure_output(
            "memorization_pcorrect", "memorization_pcorrect", "Studies", key="curves_"
        ),
        **figure_output(
            "memorization_extremes",
            "memorization_extremes",
            "Studies",
            key="extremes_",
        ),
    log:
        f"{R}/logs/figures/memorization.log",
    benchmark:
        f"{R}/runtimes/figures/memorization.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"]["dpi"],
        examples=MEM["examples"],
        shown=MEM_SHOWN,
        study="memorization",
        code=code("study_figures.py"),
    script:
        "../../scripts/study_figures.py"


# ----------------------------------------------------------------------- label noise


use rule train_shard as label_noise_train with:
    input:
        data=f"{ST}/label_noise/data/alpha-{{alpha}}.npz",
    output:
        checkpoint=f"{ST}/label_noise/train/{{arch}}-alpha-{{alpha}}/shard-{{shard}}.pt",
        metrics=f"{ST}/label_noise/train/{{arch}}-alpha-{{alpha}}/shard-{{shard}}.metrics.csv",
    log:
        f"{R}/logs/studies/label_noise/train/{{arch}}-alpha-{{alpha}}/shard-{{shard}}.log",
    benchmark:
        f"{R}/runtimes/studies/label_noise/train/{{arch}}-alpha-{{alpha}}/shard-{{shard}}.tsv"
    params:
        seeds=lambda w: NOISE_SHARDS[w.shard],
        model=lambda w: normalize_spec(
            NOISE["architectures"][w.arch],
            f"studies.label_noise.architectures.{w.arch}",
        ),
        recipe=lambda w: noise_recipe(int(w.alpha)),
        where="studies.label_noise",
        model_key=lambda w: f"studies.label_noise.architectures.{w.arch}",
        code=lambda w: code("train.py", NOISE["architectures"][w.arch]),


rule label_noise_summary:
    input:
        data=expand(f"{ST}/label_noise/data/alpha-{{a}}.npz", a=NOISE["alphas"]),
        test=noise_files("test"),
        checkpoints=noise_files("checkpoint"),
        benchmarks=noise_files("benchmark"),
    output:
        table=f"{ST}/label_noise/accuracy.csv",
    log:
        f"{R}/logs/studies/label_noise/summary.log",
    benchmark:
        f"{R}/runtimes/studies/label_noise/summary.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        cells=[list(c) for c in noise_cells()],
        shards=len(NOISE_SHARDS),
        code=code("study_label_noise.py"),
    script:
        "../../scripts/study_label_noise.py"


# ----------------------------------------------------------------------- label errors


use rule train_shard as label_errors_train with:
    input:
        data=f"{ST}/label_errors/data/noisy.npz",
    output:
        checkpoint=f"{ST}/label_errors/train/shard-{{shard}}.pt",
        metrics=f"{ST}/label_errors/train/shard-{{shard}}.metrics.csv",
    log:
        f"{R}/logs/studies/label_errors/train/shard-{{shard}}.log",
    benchmark:
        f"{R}/runtimes/studies/label_errors/train/shard-{{shard}}.tsv"
    params:
        seeds=lambda w: ERR_SHARDS[w.shard],
        model=normalize_spec(ERR["model"], "studies.label_errors.model"),
        recipe=normalize_recipe(ERR["recipe"], "studies.label_errors.recipe"),
        where="studies.label_errors",
        code=code("train.py", ERR["model"]),


use rule kernel as label_errors_kernel with:
    input:
        train=error_logits("train"),
        test=error_logits("train"),
    output:
        neighbours=f"{ST}/label_errors/kernel/neighbours.npz",
    log:
        f"{R}/logs/studies/label_errors/kernel.log",
    benchmark:
        f"{R}/runtimes/studies/label_errors/kernel.tsv"
    params:
        **KERNEL_ENGINE,
        log_softmax=True,
        exclude_self=True,
        k_max=ERR["k"],
        model_counts=ERR["model_counts"],
        subsets=ERR["subsets"],
        subset_seed=ERR["subset_seed"],
        code=code("kernel.py"),


rule label_errors_scores:
    input:
        data=f"{ST}/label_errors/data/noisy.npz",
        neighbours=f"{ST}/label_errors/kernel/neighbours.npz",
        train=error_logits("train"),
        benchmarks=expand(
            f"{R}/runtimes/studies/label_errors/train/shard-{{s}}.tsv", s=ERR_SHARDS
        ),
    output:
        table=f"{ST}/label_errors/scores.csv",
        curves=f"{ST}/label_errors/curves.npz",
    log:
        f"{R}/logs/studies/label_errors/scores.log",
    benchmark:
        f"{R}/runtimes/studies/label_errors/scores.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        k=ERR["k"],
        power=ERR["power"],
        code=code("study_label_errors.py"),
    script:
        "../../scripts/study_label_errors.py"


rule figure_label_noise:
    input:
        table=f"{ST}/label_noise/accuracy.csv",
    output:
        **figure_output("label_noise_accuracy", "label_noise_accuracy", "Studies"),
    log:
        f"{R}/logs/figures/label_noise_accuracy.log",
    benchmark:
        f"{R}/runtimes/figures/label_noise_accuracy.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"]["dpi"],
        study="label_noise",
        code=code("study_figures.py"),
    script:
        "../../scripts/study_figures.py"


rule figure_label_errors:
    input:
        table=f"{ST}/label_errors/scores.csv",
        curves=f"{ST}/label_errors/curves.npz",
    output:
        **figure_output("label_errors_pr", "label_errors_pr", "Studies"),
    log:
        f"{R}/logs/figures/label_errors_pr.log",
    benchmark:
        f"{R}/runtimes/figures/label_errors_pr.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"]["dpi"],
        study="label_errors",
        code=code("study_figures.py"),
    script:
        "../../scripts/study_figures.py"

# Models trained on random subsets of the training set (issue 17): memorization and
# influence (Feldman & Zhang), label errors out of sample (cleanlab), datamodels, TRAK and
# the ensemble kernel scored by the LDS. Training and logits reuse train.py / logits.py by
# rule inheritance; everything lands under results/subsets/ALPHA/. Target: subsets.


include: "subsets_common.smk"


use rule train_shard as subsets_train with:
    output:
        checkpoint=f"{SB}/train/shard-{{shard}}.pt",
        metrics=f"{SB}/train/shard-{{shard}}.metrics.csv",
    log:
        f"{R}/logs/{SBR}/train/shard-{{shard}}.log",
    benchmark:
        f"{R}/runtimes/{SBR}/train/shard-{{shard}}.tsv"
    params:
        seeds=lambda w: SUB_SHARDS[w.shard],
        model=train_spec("train"),
        recipe=train_recipe("train"),
        alpha=SUB["alpha"],
        where="train",  # the section of its recipe
        code=code("train.py", config["train"]["model"]),


use rule train_shard as subsets_errors_train with:
    input:
        data=f"{ST}/label_errors/data/noisy.npz",
    output:
        checkpoint=f"{SB}/label_errors/train/shard-{{shard}}.pt",
        metrics=f"{SB}/label_errors/train/shard-{{shard}}.metrics.csv",
    log:
        f"{R}/logs/{SBR}/label_errors/train/shard-{{shard}}.log",
    benchmark:
        f"{R}/runtimes/{SBR}/label_errors/train/shard-{{shard}}.tsv"
    params:
        seeds=lambda w: SUB_ERR_SHARDS[w.shard],
        model=normalize_spec(ERR["model"], "studies.label_errors.model"),
        recipe=normalize_recipe(ERR["recipe"], "studies.label_errors.recipe"),
        alpha=SUB["alpha"],
        where="studies.label_errors",
        code=code("train.py", ERR["model"]),


if TRAINED:

    use rule logits as subsets_logits with:
        input:
            data=f"{R}/data/dataset.npz",
            checkpoint=f"{SB}/train/shard-{{shard}}.pt",
        output:
            **{
                split: f"{SB}/logits/shard-{{shard}}/{split}.npy"
                for split in ("train", "test", "seeds")
            },
        log:
            f"{R}/logs/{SBR}/logits/shard-{{shard}}.log",
        benchmark:
            f"{R}/runtimes/{SBR}/logits/shard-{{shard}}.tsv"
        params:
            seeds=lambda w: SUB_SHARDS[w.shard],
            batch_size=config["logits"]["batch_size"],
            code=code("logits.py"),

    use rule logits as subsets_errors_logits with:
        input:
            data=f"{ST}/label_errors/data/noisy.npz",
            checkpoint=f"{SB}/label_errors/train/shard-{{shard}}.pt",
        output:
            **{
                split: f"{SB}/label_errors/logits/shard-{{shard}}/{split}.npy"
                for split in ("train", "test", "seeds")
            },
        log:
            f"{R}/logs/{SBR}/label_errors/logits/shard-{{shard}}.log",
        benchmark:
            f"{R}/runtimes/{SBR}/label_errors/logits/shard-{{shard}}.tsv"
        params:
            seeds=lambda w: SUB_ERR_SHARDS[w.shard],
            batch_size=config["logits"]["batch_size"],
            code=code("logits.py"),


rule subsets_masks:
    input:
        checkpoints=subset_files("main", "checkpoint"),
    output:
        masks=f"{SB}/masks.npy",
        seeds=f"{SB}/seeds.npy",
    log:
        f"{R}/logs/{SBR}/masks.log",
    benchmark:
        f"{R}/runtimes/{SBR}/masks.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        alpha=SUB["alpha"],
        code=code("subsets_masks.py"),
    script:
        "../../scripts/subsets_masks.py"


use rule subsets_masks as subsets_errors_masks with:
    input:
        checkpoints=subset_files("label_errors", "checkpoint"),
    output:
        masks=f"{SB}/label_errors/masks.npy",
        seeds=f"{SB}/label_errors/seeds.npy",
    log:
        f"{R}/logs/{SBR}/label_errors/masks.log",
    benchmark:
        f"{R}/runtimes/{SBR}/label_errors/masks.tsv"


rule subsets_memorization:
    input:
        data=f"{R}/data/dataset.npz",
        masks=f"{SB}/masks.npy",
        train=subset_files("main", "train"),
        test=subset_files("main", "test"),
        kernel=f"{R}/kernel/logsoftmax/dense.npy",
    output:
        table=f"{SB}/memorization.csv",
        pairs=f"{SB}/influence_pairs.csv",
        precision=f"{SB}/kernel_precision.csv",
        summary=f"{SB}/memorization.npz",
    log:
        f"{R}/logs/{SBR}/memorization.log",
    benchmark:
        f"{R}/runtimes/{SBR}/memorization.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        top_pairs=SUB["top_pairs"],
        threshold=SUB["influence_threshold"],
        precision_at=SUB["precision_at"],
        code=code("subsets_memorization.py"),
    script:
        "../../scripts/subsets_memorization.py"


rule subsets_datamodels:
    input:
        data=f"{R}/data/dataset.npz",
        masks=f"{SB}/masks.npy",
        test=subset_files("main", "test"),
    output:
        datamodels=f"{SB}/attribution/datamodels.npz",
    log:
        f"{R}/logs/{SBR}/datamodels.log",
    benchmark:
        f"{R}/runtimes/{SBR}/datamodels.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        test_examples=SUB["test_examples"],
        model_counts=SUB["model_counts"],
        lambdas=SUB["lambdas"],
        validation=SUB["validation"],
        heldout=SUB["heldout"],
        code=code("subsets_datamodels.py"),
    script:
        "../../scripts/subsets_datamodels.py"


rule subsets_trak:
    input:
        data=f"{R}/data/dataset.npz",
        checkpoints=full_data_checkpoints,
    output:
        scores=f"{SB}/attribution/trak.npz",
    log:
        f"{R}/logs/{SBR}/trak.log",
    benchmark:
        f"{R}/runtimes/{SBR}/trak.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        test_examples=SUB["test_examples"],
        model_counts=SUB["trak"]["model_counts"],
        package_counts=SUB["trak"]["package_counts"],
        proj_dim=SUB["trak"]["proj_dim"],
        seed=SUB["trak"]["seed"],
        code=code("subsets_trak.py"),
    script:
        "../../scripts/subsets_trak.py"


rule subsets_lds:
    input:
        data=f"{R}/data/dataset.npz",
        masks=f"{SB}/masks.npy",
        test=subset_files("main", "test"),
        datamodels=f"{SB}/attribution/datamodels.npz",
        trak=f"{SB}/attribution/trak.npz",
        main_train=full_data_logits("train"),
        main_test=full_data_logits("test"),
    output:
        table=f"{SB}/attribution/lds.csv",
        agreement=f"{SB}/attribution/agreement.csv",
        per_test=f"{SB}/attribution/lds_per_test.npz",
    log:
        f"{R}/logs/{SBR}/lds.log",
    benchmark:
        f"{R}/runtimes/{SBR}/lds.tsv"
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=config["gpu"],
    params:
        **KERNEL_ENGINE,
        test_examples=SUB["test_examples"],
        validation=SUB["validation"],
        heldout=SUB["heldout"],
        kernel_counts=SUB["kernel_counts"],
        top_k=SUB["kernel_top_k"],
        overlap_k=SUB["overlap_k"],
        code=code("subsets_lds.py"),
    script:
        "../../scripts/subsets_lds.py"


use rule kernel as subsets_errors_kernel with:
    input:
        train=subset_files("label_errors", "train"),
        test=subset_files("label_errors", "train"),
    output:
        neighbours=f"{SB}/label_errors/neighbours.npz",
    log:
        f"{R}/logs/{SBR}/label_errors/kernel.log",
    benchmark:
        f"{R}/runtimes/{SBR}/label_errors/kernel.tsv"
    params:
        **KERNEL_ENGINE,
        log_softmax=True,
        exclude_self=True,
        k_max=ERR["k"],
        model_counts=SUB["label_errors"]["model_counts"],
        subsets=1,
        subset_seed=ERR["subset_seed"],
        code=code("kernel.py"),


rule subsets_label_errors:
    input:
        data=f"{ST}/label_errors/data/noisy.npz",
        masks=f"{SB}/label_errors/masks.npy",
        train=subset_files("label_errors", "train"),
        neighbours=f"{SB}/label_errors/neighbours.npz",
        in_sample=f"{ST}/label_errors/scores.csv",
    output:
        table=f"{SB}/label_errors/scores.csv",
        curves=f"{SB}/label_errors/curves.npz",
    log:
        f"{R}/logs/{SBR}/label_errors/scores.log",
    benchmark:
        f"{R}/runtimes/{SBR}/label_errors/scores.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        k=ERR["k"],
        power=ERR["power"],
        code=code("subsets_label_errors.py"),
    script:
        "../../scripts/subsets_label_errors.py"


rule subsets_timing:
    input:
        subsets=subset_files("main", "benchmark"),
        full=[f"{R}/runtimes/train/shard-{s}.tsv" for s in SHARDS],
    output:
        table=f"{SB}/timing.csv",
    log:
        f"{R}/logs/{SBR}/timing.log",
    benchmark:
        f"{R}/runtimes/{SBR}/timing.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        subset_seeds=SUB["seeds"],
        full_seeds=config["train"]["seeds"],
        code=code("subsets_timing.py"),
    script:
        "../../scripts/subsets_timing.py"


rule figure_subsets:
    input:
        data=f"{R}/data/dataset.npz",
        memorization=f"{SB}/memorization.npz",
        precision=f"{SB}/kernel_precision.csv",
        errors=f"{SB}/label_errors/scores.csv",
        curves=f"{SB}/label_errors/curves.npz",
        lds=f"{SB}/attribution/lds.csv",
        agreement=f"{SB}/attribution/agreement.csv",
    output:
        **figure_output(
            "subsets_memorization", "subsets_memorization", "Subsets", key="mem_"
        ),
        **figure_output(
            "subsets_influence", "subsets_influence", "Subsets", key="infl_"
        ),
        **figure_output(
            "subsets_label_errors", "subsets_label_errors", "Subsets", key="err_"
        ),
        **figure_output(
            "subsets_attribution", "subsets_attribution", "Subsets", key="lds_"
        ),
    log:
        f"{R}/logs/figures/subsets.log",
    benchmark:
        f"{R}/runtimes/figures/subsets.tsv"
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dpi=config["figures"]["dpi"],
        examples=SUB["examples"],
        alpha=SUB["alpha"],
        code=code("fig_subsets.py"),
    script:
        "../../scripts/fig_subsets.py"

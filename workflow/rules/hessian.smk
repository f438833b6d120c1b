rule hessian:
    input:
        data=f"{R}/data/dataset.npz",
        checkpoint=f"{R}/train/{{ckpt}}.pt",
    output:
        spectrum=f"{R}/hessian/{{ckpt}}-{{index}}.npz",
    log:
        f"{R}/logs/hessian/{{ckpt}}-{{index}}.log",
    benchmark:
        f"{R}/runtimes/hessian/{{ckpt}}-{{index}}.tsv"
    wildcard_constraints:
        ckpt=r"shard-\d{3}|width-\d+|grid-d\d+-w\d+",
    conda:
        "../../envs/multirun.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["gpu"],
    params:
        top_k=config["hessian"]["top_k"],
        steps=config["hessian"]["steps"],
        examples=config["hessian"]["examples"],
        batch_size=config["hessian"]["batch_size"],
        param_selection=config["hessian"]["params"],
        slq={k: v for k, v in config["hessian"]["slq"].items() if k != "sigma"},
        seed=config["hessian"]["seed"],
        code=code("hessian.py"),
    script:
        "../../scripts/hessian.py"


rule effdim:
    input:
        spectra=lambda w: effdim_inputs(w.name),
    output:
        table=f"{R}/effdim/{{name}}.csv",
    log:
        f"{R}/logs/effdim/{{name}}.log",
    benchmark:
        f"{R}/runtimes/effdim/{{name}}.tsv"
    wildcard_constraints:
        name="main|sweep-default|sweep-full|grid",
    conda:
        "../../envs/multirun.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        z=config["hessian"]["z"],
        code=code("effdim.py"),
    script:
        "../../scripts/effdim.py"

rule check:
    """Verify every intermediate of the default targets against its contract (snakemake check).

    Missing intermediates are remade first (they are this rule's inputs, and a plain run
    does not remake one whose consumers look finished; the figures made from them are
    left to the next plain run, so that a damaged file is listed here before any figure
    job reads it); a damaged one stops the job with a list and the one command that
    remakes them and everything made from them.
    """
    input:
        **check_inputs(),
    log:
        f"{R}/logs/check.log",
    conda:
        "../../envs/multirun.yaml"
    params:
        seeds=check_seeds(),
        code=code("check.py"),
    script:
        "../../scripts/check.py"

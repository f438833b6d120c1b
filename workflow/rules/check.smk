rule check:
    """Verify every intermediate of the default targets against its contract (snakemake check).

    Missing intermediates are remade first (they are this rule's inputs, and a plain run
    does not remake one whose consumers look finished), and the default targets made from
    them redrawn (also inputs, not read); a damaged one stops the job with a list and the
    one command that remakes them and everything made from them.
    """
    input:
        **check_inputs(),
        targets=default_targets(),
    log:
        f"{R}/logs/check.log",
    conda:
        "../../envs/multirun.yaml"
    params:
        seeds=check_seeds(),
        code=code("check.py"),
    script:
        "../../scripts/check.py"

"""Under the test suite: a Snakemake script job or a ``python -m snakemake`` run hands
itself to the suite's warm interpreter (``warmstart.py`` beside this file) instead of
importing torch and Snakemake again. Any other process, or one under SLURM, starts as usual."""

import os
import sys


def _served(argv: list[str]) -> bool:
    if argv[:2] == ["-m", "snakemake"]:
        return True
    return bool(argv) and not argv[0].startswith("-") and "/.snakemake/scripts/" in (
        os.path.abspath(argv[0]))


if os.environ.get("MULTIRUN_WARM") and not os.environ.get("SLURM_JOB_ID") and _served(
        sys.orig_argv[1:]):
    import warmstart

    warmstart.client(os.environ["MULTIRUN_WARM"])

"""Under the test suite: a Snakemake script job or a ``python -m snakemake`` run hands
itself to the suite's warm interpreter (``warmstart.py`` beside this file) instead of
importing torch and Snakemake again (under the test SLURM too: a job's process waits for its
worker and passes signals on). Any other process starts as usual."""

import os
import sys


def _served(argv: list[str]) -> bool:
    if argv[:2] == ["-m", "snakemake"]:
        return True
    return bool(argv) and not argv[0].startswith("-") and "/.snakemake/scripts/" in (
        os.path.abspath(argv[0]))


if os.environ.get("MULTIRUN_WARM") and _served(sys.orig_argv[1:]):
    import warmstart

    warmstart.client(os.environ["MULTIRUN_WARM"])

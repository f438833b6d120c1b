"""The code stays linted and the workflow stays clean: ruff, snakefmt, snakemake --lint, and
every snakemake command of the docs parses as Snakemake reads it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, commands_in

BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_ruff_is_clean():
    proc = _run(str(BIN / "ruff"), "check", "--output-format", "concise", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefiles_are_snakefmt_formatted():
    proc = _run(str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakemake_lint_is_clean():
    proc = _run(sys.executable, "-m", "snakemake", "--lint", "--workflow-profile", "none")
    assert proc.returncode == 0, proc.stdout + proc.stderr


DOC_COMMANDS = [(path.name, command)
                for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
                for command in commands_in(path, ("snakemake",), unlabelled=True)
                if command.split()[0] == "snakemake"]


@pytest.mark.parametrize("doc, command", DOC_COMMANDS)
def test_docs_snakemake_commands_parse(doc, command):
    """As Snakemake's own parser reads it: e.g. a target after --resources or --config is
    taken for one more resource or config entry (the README's commands also run, in
    tests/test_readme.py). One-letter placeholders (--cores N) stand for numbers."""
    from snakemake.cli import get_argument_parser, parse_config

    words = [re.sub(r"^([A-Z])$", "2", w) for w in shlex.split(command)[1:]]
    words = [re.sub(r"=([A-Z])$", "=2", w) for w in words]
    args = get_argument_parser().parse_args(words)
    parse_config(args.config or [])
    # --forcerun takes every word after it: a rule name followed by a path is a target
    # swallowed (it would run `all`), not two things to force
    forced = args.forcerun or []
    rules = [w for w in forced if "/" not in w and "." not in w]
    assert not (rules and len(rules) < len(forced)), f"{command}: put the targets before --forcerun"


def test_docs_commands_are_found():
    assert len(DOC_COMMANDS) > 20
    assert ("sweeps.md", "snakemake --cores 2 sweeps --config sweeps='{lr_bn: {grid: "
            "{recipe.lr: [0.01, 0.1]}, seeds: 2}}'") in DOC_COMMANDS

"""Every command in README.md runs, on a copy of this checkout holding the finished tiny run.

Commands are taken from the README's ``bash`` blocks and from inline code that starts with
a program (``snakemake``, ``make``, ``tail``, ``pip``). Each one must have an entry in
``HOW``: run as written, as a dry run where it would train or download for long, or skipped
with the reason (the SLURM command has its own test). A command added to the README
without an entry here fails ``test_every_readme_command_has_a_test``.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, commands_in, job_env, job_stats, write_config

pytestmark = pytest.mark.workflow

README = ROOT / "README.md"
PROGRAMS = ("snakemake", "make", "tail", "pip")
RUN, DRY = "run", "dry run"
SLURM = "run against a one-node SLURM by tests/test_slurm.py"

# command -> how it is tested: RUN (as written), DRY (-n; it would train or download for
# long), or a reason to skip it here
HOW = {
    "make run": RUN,  # with the environment set up: BIN and STAMP point at this one
    "make test": DRY,  # make -n: running the suite inside the suite would recurse
    "make test-unit": DRY,
    "make test-workflow": DRY,
    "make lock": DRY,  # make -n: re-resolving would rewrite requirements.lock from the index
    "snakemake --cores 2": RUN,
    "snakemake --cores 2 --configfile configs/test.yaml": RUN,
    "snakemake --cores 2 results/figures/accuracy_vs_models.png": RUN,
    "snakemake --cores 2 results/figures/accuracy_vs_models.png --forcerun figure_accuracy": RUN,
    "snakemake --cores 2 --config train='{seeds: 96}'": DRY,
    "snakemake --cores 2 width_sweep": DRY,
    "snakemake --cores 2 width_depth": DRY,
    "snakemake --cores 2 memorization": DRY,
    "snakemake --cores 2 label_noise": DRY,
    "snakemake --cores 2 label_errors": DRY,
    "snakemake --cores 2 batchnorm": RUN,  # the tiny config's sweep: 2 rates x BN, 2 seeds
    "snakemake --cores 2 batchnorm --config sweeps='{batchnorm: {seeds: 6}}'": DRY,
    "snakemake --cores 2 sweeps": DRY,
    "snakemake --cores 2 subsets": DRY,
    "tail -f results/logs/train/shard-000.log": RUN,  # without -f, which follows forever
    "snakemake -n": RUN,
    "snakemake --summary": RUN,
    "snakemake --cores 2 check": RUN,
    "snakemake --report results/report.html": RUN,
    "snakemake --cores 8 --configfile configs/cifar10.yaml": DRY,
    "snakemake --cores 8 --configfile configs/published.yaml": DRY,
    "snakemake --cores 32 --resources gpu=8 --configfile configs/cifar10.yaml": DRY,
    "snakemake --cores 16 --resources gpu=4 --config gpu=1": RUN,  # resources rerun nothing
    "pip install -e '.[slurm]'": DRY,  # pip --dry-run, offline: resolves against this environment
    "snakemake --workflow-profile profiles/slurm --configfile configs/cifar10.yaml": SLURM,
    "snakemake --cores 2 --config train='{model: {name: examples/resmlp.py:ResMLP}}'": DRY,
    "snakemake --cores 2 --config dataset='{name: digits}'": DRY,
    "snakemake --cores 2 --configfile configs/local-logits.yaml": DRY,  # runs/: the tiny run's
}


def readme_commands() -> list[str]:
    """The README's commands, in order, each once."""
    return commands_in(README, PROGRAMS)


def test_every_readme_command_has_a_test():
    commands = readme_commands()
    assert "snakemake --cores 2 --config train='{seeds: 96}'" in commands  # extraction works
    assert set(commands) == set(HOW), "add new README commands to HOW (and drop stale ones)"


@pytest.fixture(scope="module")
def checkout(tiny_run, tmp_path_factory) -> Path:
    """A copy of this checkout whose config.yaml is the tiny config and whose results are
    the finished tiny run (Snakemake's metadata included)."""
    run_dir, cfg = tiny_run
    dst = tmp_path_factory.mktemp("readme") / "multirun"
    skip = {".git", ".venv", "results", ".snakemake", "data", ".pytest_cache", ".ruff_cache"}
    dst.mkdir()
    for item in ROOT.iterdir():
        if item.name not in skip and not item.name.endswith(".egg-info"):
            subprocess.run(["cp", "-a", str(item), str(dst)], check=True)
    for name in ("results", ".snakemake"):  # cp -a keeps the modification times
        subprocess.run(["cp", "-a", str(run_dir / name), str(dst)], check=True)
    write_config(dst, cfg)
    (dst / "runs").mkdir()  # configs/local-logits.yaml's files: the tiny run's own logits
    for shard in sorted((run_dir / "results" / "logits").glob("shard-*")):
        for split in ("train", "test"):
            shutil.copy(shard / f"{split}.npy", dst / "runs" / f"{shard.name}_{split}.npy")
    (dst / ".stamp").touch()  # newer than pyproject.toml: make's setup is done
    return dst


def argv(command: str, how: str, checkout: Path) -> list[str]:
    words = shlex.split(command)
    program, args = words[0], words[1:]
    if program == "snakemake":
        return [sys.executable, "-m", "snakemake", *args, *(["-n"] if how == DRY else [])]
    if program == "make":
        setup = [f"BIN={Path(sys.executable).parent}", f"STAMP={checkout / '.stamp'}"]
        return ["make", *(["-n"] if how == DRY else []), *args, *setup]
    if program == "pip":
        return [sys.executable, "-m", "pip", *args, "--dry-run", "--no-index", "--no-build-isolation"]
    if program == "tail":
        return ["tail", *[a for a in args if a != "-f"]]
    raise AssertionError(f"no way to run {command!r}")


@pytest.mark.parametrize("command", list(HOW))
def test_readme_command_works(checkout, command):
    how = HOW[command]
    if how not in (RUN, DRY):
        pytest.skip(how)
    proc = subprocess.run(argv(command, how, checkout), cwd=checkout, capture_output=True,
                          text=True, env=job_env(checkout), timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{command}:\n{out[-6000:]}"
    jobs = job_stats(out)
    if command in ("make run", "snakemake --cores 2", "snakemake -n",
                   "snakemake --cores 2 --configfile configs/test.yaml",
                   "snakemake --cores 2 results/figures/accuracy_vs_models.png",
                   "snakemake --cores 16 --resources gpu=4 --config gpu=1"):
        assert "Nothing to be done" in out and jobs == {}, out[-3000:]
    elif "--forcerun figure_accuracy" in command:
        assert jobs == {"figure_accuracy": 1}, out[-3000:]  # that figure alone, not `all`
    elif "seeds: 96" in command:  # 4 seeds in shards of 2 -> 48 shards: 46 new ones
        assert jobs["train_shard"] == 46 and jobs["logits"] == 46
        assert not {"dataset", "train_width", "hessian"} & set(jobs)
    elif command == "snakemake --cores 2 batchnorm":  # 2 packs (BN off, on) of 2 rates
        assert jobs["sweep_pack"] == 2 and jobs["sweep_unpack"] == 4 and "dataset" not in jobs
        rows = (checkout / "results" / "sweeps" / "batchnorm" / "summary.csv").read_text()
        assert len(rows.strip().splitlines()) == 1 + 4 * 2  # a row per (point, seed)
        assert (checkout / "results" / "figures" / "sweep_batchnorm.png").stat().st_size > 10_000
    elif "seeds: 6" in command:  # 2 seeds in shards of 2 -> 3 shards: 2 new ones per pack
        assert jobs["sweep_pack"] == 2 * 2 and jobs["sweep_unpack"] == 4 * 2
        assert not {"dataset", "train_shard", "sweep_train"} & set(jobs)
    elif command.endswith(" sweeps"):  # the tiny config's one sweep (done, if batchnorm ran)
        assert set(jobs) <= {"sweep_pack", "sweep_unpack", "sweep_logits", "sweep_summary",
                             "figure_sweep", "sweeps"}, jobs
    elif command.endswith("width_sweep"):
        assert jobs["figure_width_sweep"] == 1 and "train_shard" not in jobs
    elif "configs/cifar10.yaml" in command:
        assert jobs["train_shard"] == 8 and jobs["dataset"] == 1
    elif "examples/resmlp.py" in command:  # your model: training onwards, not the dataset
        assert jobs["train_shard"] == 2 and jobs["logits"] == 2 and "dataset" not in jobs
        assert "train_width" not in jobs  # the sweep keeps its own model
    elif "name: digits" in command:  # another dataset: everything after it
        assert jobs["dataset"] == 1 and jobs["train_shard"] == 2 and jobs["kernel"] >= 1
    elif "local-logits" in command:  # your logits: imported, nothing trains
        assert jobs["check_local_logits"] == 1 and jobs["import_local_logits"] == 2
        assert not {"train_shard", "logits", "hessian"} & set(jobs)
    elif "configs/published.yaml" in command:
        assert jobs["import_published"] == 1 and "train_shard" not in jobs
    elif command.startswith("tail"):
        assert "epoch" in out or "%" in out
    elif "--summary" in command:
        assert "results/figures/accuracy_vs_models.png" in out
    elif "--report" in command:
        assert (checkout / "results" / "report.html").stat().st_size > 100_000
    elif command.startswith("make test"):
        assert "pytest -n auto" in out
        assert ("-m workflow" in out) == (command == "make test-workflow")
        assert ('-m "not workflow"' in out) == (command == "make test-unit")
    elif command == "make lock":
        assert "uv pip compile pyproject.toml" in out and "--generate-hashes" in out
        assert "multirun.lockfile" in out
    elif command.startswith("pip"):
        assert "Would install multirun" in out


def test_conda_env_pins_the_tested_versions():
    """envs/multirun.yaml pins exactly the versions this test suite runs with."""
    env = yaml.safe_load((ROOT / "envs" / "multirun.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = dict(line.split("==") for line in pip if "==" in line)
    assert {"torch", "numpy", "scipy", "matplotlib", "jsonschema"} <= set(pins)
    for name, version in pins.items():
        assert importlib.metadata.version(name).split("+")[0] == version, name
    assert "-e .." in pip  # the library itself, installed from this checkout


def test_layout_matches_the_tree():
    """The README's layout names every top-level entry of the checkout, and only real paths."""
    text = README.read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named = []
    for line in block.strip("\n").splitlines():
        if line.startswith(" "):  # a description's second line
            continue
        first = re.split(r"\s{2,}", line)[0]
        for part in first.split(", "):
            brace = re.fullmatch(r"(.*)\{(.*)\}(.*)", part)
            alternatives = brace.group(2).split(",") if brace else [""]
            named += [f"{brace.group(1)}{a}{brace.group(3)}" if brace else part for a in alternatives]
    for path in named:
        assert list(ROOT.glob(path.rstrip("/"))), f"README layout names {path}, which is not there"
    tops = {p.split("/")[0] for p in named}
    ignored = {".git", ".venv", "results", "data", ".snakemake", ".pytest_cache", ".ruff_cache",
               ".gitignore", "README.md"}
    missing = {p.name for p in ROOT.iterdir()} - tops - ignored
    assert not {m for m in missing if not m.endswith(".egg-info")}, "add them to README's layout"

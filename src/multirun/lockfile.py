"""The pinned versions: ``requirements.lock`` and the conda environment that follows it.

``requirements.lock`` (``make lock``: ``uv pip compile`` of pyproject.toml with hashes, for
every platform) holds the exact version and the sha256 of every file of every package the
workflow, its tests and its SLURM plugin need; ``make setup`` installs it with
``pip install --require-hashes --no-deps``. ``envs/multirun.yaml`` (the jobs' environment
for ``--sdm conda``) pins pyproject.toml's runtime dependencies at the lock's versions:
``python -m multirun.lockfile`` rewrites its pip section from the lock (``make lock`` runs
it), and tests/test_lock.py checks that the two agree.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
CONDA_ENV = ROOT / "envs" / "multirun.yaml"
# Not part of a job's environment: Snakemake runs the jobs (conda gives them the rest).
NOT_IN_JOBS = {"snakemake"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them: lower case, runs of ``-_.`` as ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, dict]:
    """``{canonical name: {"name", "version", "marker", "hashes"}}`` from a requirements.lock.

    Every pinned line must be ``name==version`` (with an optional ``; marker``) followed by
    at least one ``--hash=sha256:...`` line; anything else is a ValueError naming the line.
    """
    pins: dict[str, dict] = {}
    current = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("--hash="):
            if current is None:
                raise ValueError(f"{path}:{number}: a hash before any pinned package")
            current["hashes"].append(text.removeprefix("--hash=").rstrip(" \\"))
            continue
        match = _PIN.match(text)
        if not match:
            raise ValueError(f"{path}:{number}: not a pinned 'name==version' line: {text!r}")
        name, version, marker = match.groups()
        current = {"name": name, "version": version, "marker": marker, "hashes": []}
        pins[canonical(name)] = current
    unhashed = [p["name"] for p in pins.values() if not p["hashes"]]
    if unhashed:
        raise ValueError(f"{path}: no --hash for {', '.join(unhashed)}: run `make lock`")
    return pins


def runtime_dependencies(path: Path = PYPROJECT) -> list[str]:
    """The distribution names of pyproject.toml's ``[project] dependencies``, in order."""
    deps = tomllib.loads(path.read_text())["project"]["dependencies"]
    return [re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", d).group(0) for d in deps]


def conda_pins(lock: dict[str, dict], pyproject: Path = PYPROJECT) -> list[str]:
    """``name==version`` for every runtime dependency a job needs, at the lock's version."""
    names = [n for n in runtime_dependencies(pyproject) if canonical(n) not in NOT_IN_JOBS]
    missing = [n for n in names if canonical(n) not in lock]
    if missing:
        raise ValueError(f"{LOCK.name} lacks {', '.join(missing)}: run `make lock`")
    return [f"{lock[canonical(n)]['name']}=={lock[canonical(n)]['version']}" for n in names]


def write_conda_env(env: Path = CONDA_ENV, lock: Path = LOCK, pyproject: Path = PYPROJECT) -> None:
    """Rewrite the ``name==version`` lines of ``env``'s pip section from the lock.

    Everything else in the file (comments, conda packages, ``-e ..``) stays as it is; the
    pins take the place of the old ones, in pyproject.toml's order.
    """
    lines = env.read_text().splitlines()
    pinned = [i for i, line in enumerate(lines) if re.match(r"^\s+- [A-Za-z0-9._-]+==", line)]
    if not pinned:
        raise ValueError(f"{env}: no 'name==version' lines in its pip section")
    indent = lines[pinned[0]][: len(lines[pinned[0]]) - len(lines[pinned[0]].lstrip())]
    new = [f"{indent}- {pin}" for pin in conda_pins(read_lock(lock), pyproject)]
    kept = [line for i, line in enumerate(lines) if i not in set(pinned)]
    kept[pinned[0]:pinned[0]] = new
    env.write_text("\n".join(kept) + "\n")


if __name__ == "__main__":
    write_conda_env()
    print(f"{CONDA_ENV.relative_to(ROOT)}: pins from {LOCK.name}", file=sys.stderr)

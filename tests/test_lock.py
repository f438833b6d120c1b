"""requirements.lock pins everything pyproject.toml asks for; the conda environment and the
environment the tests run in agree with it (multirun.lockfile)."""

from __future__ import annotations

import importlib.metadata
import tomllib

import pytest
import yaml
from conftest import ROOT
from packaging.markers import Marker
from packaging.requirements import Requirement

from multirun import lockfile

LOCK = lockfile.read_lock(ROOT / "requirements.lock")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_pin_has_a_sha256():
    assert len(LOCK) > 50
    for pin in LOCK.values():
        assert pin["hashes"] and all(h.startswith("sha256:") and len(h) == 71 for h in pin["hashes"])


@pytest.mark.parametrize("group", ["dependencies", "dev", "slurm"])
def test_lock_satisfies_pyproject(group):
    """Every requirement of pyproject.toml (runtime, dev and slurm extras) is pinned at a
    version its specifier admits, and the lock says how it was made (`make lock`)."""
    reqs = PROJECT["dependencies"] if group == "dependencies" else \
        PROJECT["optional-dependencies"][group]
    for text in reqs:
        req = Requirement(text)
        pin = LOCK.get(lockfile.canonical(req.name))
        assert pin is not None, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pin["version"], prereleases=True), (text, pin["version"])
    assert "make lock" in (ROOT / "requirements.lock").read_text().split("\n", 3)[1]


def test_torch_stays_at_the_cached_release():
    """The lock's torch and torchvision are within envs/lock-constraints.txt's caps."""
    caps = [Requirement(line) for line in (ROOT / "envs" / "lock-constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert {c.name for c in caps} == {"torch", "torchvision"}
    for cap in caps:
        assert cap.specifier.contains(LOCK[cap.name]["version"])


def test_conda_env_agrees_with_the_lock(tmp_path):
    """envs/multirun.yaml pins every runtime dependency a job imports at the lock's version,
    and is exactly what `make lock` (python -m multirun.lockfile) writes."""
    env = yaml.safe_load((ROOT / "envs" / "multirun.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {lockfile.canonical(n): v for n, v in (line.split("==") for line in pip if "==" in line)}
    assert pins == {name: LOCK[name]["version"] for name in pins}
    wanted = {lockfile.canonical(n) for n in lockfile.runtime_dependencies()} - lockfile.NOT_IN_JOBS
    assert set(pins) == wanted
    copy = tmp_path / "multirun.yaml"
    copy.write_text((ROOT / "envs" / "multirun.yaml").read_text())
    lockfile.write_conda_env(copy)
    assert copy.read_text() == (ROOT / "envs" / "multirun.yaml").read_text()


def test_conda_env_follows_a_changed_lock(tmp_path):
    """A new version in the lock and a new dependency in pyproject.toml reach the env file;
    its comments, conda packages and `-e ..` stay."""
    lock = (ROOT / "requirements.lock").read_text().replace(
        f"\nnumpy=={LOCK['numpy']['version']}", "\nnumpy==9.9.9")
    (tmp_path / "requirements.lock").write_text(lock)
    project = (ROOT / "pyproject.toml").read_text().replace('"ninja>=1.11",', '"ninja>=1.11", "uv",')
    (tmp_path / "pyproject.toml").write_text(project)
    env = tmp_path / "multirun.yaml"
    env.write_text((ROOT / "envs" / "multirun.yaml").read_text())
    lockfile.write_conda_env(env, tmp_path / "requirements.lock", tmp_path / "pyproject.toml")
    text = env.read_text()
    assert "      - numpy==9.9.9\n" in text and f"      - uv=={LOCK['uv']['version']}\n" in text
    assert "      - -e ..\n" in text and "cxx-compiler" in text and text.startswith("# ")
    assert text.count("- torch==") == 1


def test_a_lock_without_hashes_is_refused(tmp_path):
    bad = tmp_path / "requirements.lock"
    bad.write_text("numpy==2.0.0\n    # via nothing\n")
    with pytest.raises(ValueError, match="no --hash for numpy: run `make lock`"):
        lockfile.read_lock(bad)
    bad.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match=r"requirements.lock:1: not a pinned"):
        lockfile.read_lock(bad)


def test_tests_run_with_the_locked_versions():
    """The environment running this suite is the lock (make setup installs it), package by
    package where the lock's marker applies here."""
    wrong = {}
    for name, pin in LOCK.items():
        if pin["marker"] and not Marker(pin["marker"]).evaluate():
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+")[0] != pin["version"]:
            wrong[name] = (installed, pin["version"])
    assert not wrong, f"installed vs locked (run `make setup`): {wrong}"

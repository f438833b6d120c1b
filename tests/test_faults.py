"""Faults and bad input (docs/reliability.md): advice that works, checked tables, checks
before any work, a full disk, leftovers and permissions, bit-identical reruns.

The library parts run here directly; the workflow parts on a copy of the finished tiny
run (conftest's ``tiny_copy``), each following the message it gets verbatim.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, planned_jobs, snakemake, tiny_config, write_config

from multirun import contracts, snake
from multirun.config import ConfigError, check, train_examples
from multirun.locks import lock_advice

# ----------------------------------------------------------------------------- helpers


class FakeJob:
    """The parts of Snakemake's ``snakemake`` object that :func:`snake.run` reads."""

    def __init__(self, outputs, log=None, threads=1, rule="fake"):
        self.output, self.log = list(outputs), [str(log)] if log else []
        self.threads, self.rule, self.config = threads, rule, {}


def run_job(tmp_path: Path, body: str, *, fsize: int | None = None) -> subprocess.CompletedProcess:
    """Run ``body`` (defines ``main(smk)``) through snake.run in a fresh Python, optionally
    under a file-size limit (SIGXFSZ ignored, so writes fail with EFBIG as on a full disk)."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import numpy as np, torch
        from multirun import contracts, snake
        from test_faults import FakeJob
        out = {str(tmp_path / "out")!r}
        {textwrap.indent(textwrap.dedent(body), "        ").strip()}
        snake.run(FakeJob(OUTPUTS, log=out + "/job.log"), main)
    """))
    (tmp_path / "out").mkdir(exist_ok=True)

    def limit():
        if fsize is not None:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, preexec_fn=limit)


def outputs_of(workdir: Path) -> dict[str, object]:
    """Every result of a run, keyed by path: arrays, checkpoint tensors, tables, figures' bytes."""
    found = {}
    for path in sorted((workdir / "results").rglob("*")):
        rel = str(path.relative_to(workdir))
        if not path.is_file() or rel.startswith(("results/logs", "results/runtimes")):
            continue
        if path.suffix == ".npy":
            found[rel] = np.load(path)
        elif path.suffix == ".npz":
            with np.load(path) as f:
                found |= {f"{rel}:{k}": f[k] for k in f.files}
        elif path.suffix == ".pt":
            found[rel] = path.read_bytes()  # bytes: the same shard trains to the same file
        else:
            found[rel] = path.read_bytes()
    return found


def assert_same_outputs(workdir: Path, reference: Path) -> None:
    got, want = outputs_of(workdir), outputs_of(reference)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            assert got[key] == value, key


def follow(workdir: Path, message: str) -> subprocess.CompletedProcess:
    """Run the ``snakemake ...`` command a message gives, verbatim (in ``workdir``)."""
    command = re.search(r"with: (snakemake [^\n]*)", message).group(1).strip()
    args = shlex.split(command)[1:]
    assert args[:2] == ["--cores", "all"]
    return snakemake(workdir, *args[2:])


# ----------------------------------------------------------------------------- 1. advice


@pytest.mark.parametrize("loader, damage", [
    (contracts.load_dataset, b""), (contracts.load_npz, b"PK\x03\x04garbage"),
    (lambda p: contracts.load_npy(p, ndim=3), b"\x93NUMPY"), (contracts.load_torch, b"junk"),
    (lambda p: contracts.load_table(p, "scores"), b"n_models,subset\n2,0\n"),
])
def test_every_unreadable_file_gives_the_command_that_remakes_it(tmp_path, loader, damage):
    path = tmp_path / "results" / "f.bin"
    for content in (None, damage):  # missing, then damaged
        if content is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        with pytest.raises(contracts.ContractError) as err:
            loader(path)
        assert str(err.value).startswith(f"{path}: ")
        assert str(err.value).endswith(f"remake it with: snakemake --cores all --forcerun {path}")


def test_the_remake_command_carries_the_runs_configfile(tiny_run, tiny_copy, monkeypatch):
    """Run with --configfile over the default config.yaml, the printed command names the
    same file (else it would remake the file of the default config), and it repairs."""
    workdir, cfg = tiny_copy
    monkeypatch.chdir(workdir)  # --configfile is read from where snakemake starts
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    scores = workdir / "results" / "knn" / "raw" / "scores.csv"
    mtime = scores.stat().st_mtime_ns
    scores.write_text(scores.read_text()[:40])
    os.utime(scores, ns=(mtime, mtime))
    proc = snakemake(workdir, "check", "--configfile", "tiny.yaml", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "--forcerun results/knn/raw/scores.csv --configfile tiny.yaml" in text, text[-2000:]
    follow(workdir, text)
    assert_same_outputs(workdir, tiny_run[0])


def test_check_remakes_a_deleted_intermediate(tiny_run, tiny_copy):
    """A plain run does not notice a deleted logits file; `snakemake check` remakes it."""
    workdir, _ = tiny_copy
    gone = workdir / "results" / "logits" / "shard-001" / "test.npy"
    gone.unlink()
    assert planned_jobs(workdir) == {}  # Snakemake's own view: nothing to do
    proc = snakemake(workdir, "check")
    log = (workdir / "results" / "logs" / "check.log").read_text()
    assert re.search(r"all \d+ intermediates of the default targets meet their contracts", log)
    assert "rule logits" in proc.stdout + proc.stderr  # remade, and what is made from it
    assert "rule figure" not in proc.stdout + proc.stderr  # drawn by the next plain run
    snakemake(workdir)
    assert planned_jobs(workdir) == {}
    assert_same_outputs(workdir, tiny_run[0])


def test_check_lists_damaged_files_and_its_command_repairs_them(tiny_run, tiny_copy):
    """One file of each kind damaged in place, modification times kept (a damaged file with
    a newer time makes its consumers rerun, and the first of them names it with the same
    command): check names each, its one command remakes all."""
    workdir, _ = tiny_copy
    res = workdir / "results"
    # the files are downstream ones, so the repair reruns a third of the run, not all of it
    damaged = [res / "hessian" / "shard-000-0.npz", res / "train" / "width-8.pt",
               res / "logits" / "shard-001" / "train.npy", res / "knn" / "raw" / "scores.csv",
               res / "logits" / "shard-001" / "test.npy", res / "logits" / "shard-001" / "seeds.npy"]
    times = {path: path.stat().st_mtime_ns for path in damaged}
    (res / "hessian" / "shard-000-0.npz").write_bytes(b"")  # zero bytes
    (res / "train" / "width-8.pt").write_bytes(os.urandom(300))  # garbage checkpoint
    logits = res / "logits" / "shard-001" / "train.npy"
    logits.write_bytes(logits.read_bytes()[:400])  # truncated
    scores = res / "knn" / "raw" / "scores.csv"
    lines = scores.read_text().splitlines(keepends=True)
    scores.write_text("".join(lines[: len(lines) // 2]))  # cut in half at a line boundary
    test = res / "logits" / "shard-001" / "test.npy"  # valid, but a class short
    np.save(test, np.load(test)[..., :-1])
    seeds = res / "logits" / "shard-001" / "seeds.npy"  # valid, but not the config's seeds
    np.save(seeds, np.load(seeds) + 100)
    for path, mtime in times.items():
        os.utime(path, ns=(mtime, mtime))
    proc = snakemake(workdir, "check", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    line = next(x for x in text.splitlines() if x.startswith("multirun error in rule check"))
    assert re.search(r"6 of \d+ files break their contract", line)
    for path, why in [("hessian/shard-000-0.npz", "cannot be read"), ("train/width-8.pt", "cannot be loaded"),
                      ("logits/shard-001/train.npy", "cannot be read"),
                      ("knn/raw/scores.csv", "the config gives 18"),
                      ("logits/shard-001/test.npy", "logits of 9 classes, the dataset has 10"),
                      ("logits/shard-001/seeds.npy", r"seeds \[10\d, 10\d\], the config gives this shard")]:
        assert re.search(rf"results/{re.escape(path)}: [^\n]*{why}", text), (path, text[-3000:])
    follow(workdir, text)
    assert_same_outputs(workdir, tiny_run[0])
    proc = snakemake(workdir, "check")  # and everything meets its contract again
    assert re.search(r"check: all \d+ intermediates of the default targets meet their "
                     "contracts", proc.stdout + proc.stderr)


def test_a_job_that_reads_a_damaged_table_says_how_to_remake_it(tiny_run, tiny_copy):
    workdir, _ = tiny_copy
    scores = workdir / "results" / "knn" / "logsoftmax" / "scores.csv"
    text = scores.read_text()
    nine = [i for i, c in enumerate(text) if c == "\n"][8]
    scores.write_text(text[: nine + 5])  # 8 rows and the start of the 9th
    proc = snakemake(workdir, "--forcerun", "figure_accuracy", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # Every job that reads the table reruns (it is newer than their outputs); the first to
    # start says it, and which one that is depends on the scheduler.
    line = next(x for x in text.splitlines() if x.startswith("multirun error in rule "))
    assert re.match(r"multirun error in rule (figure_accuracy|figure_neighbours|headline_accuracy)\b", line)
    assert f"{scores.relative_to(workdir)}: row" in line and "truncated" in line
    follow(workdir, line)
    assert_same_outputs(workdir, tiny_run[0])


def test_lock_advice_tells_a_live_run_from_a_dead_one(tiny_copy):
    workdir, _ = tiny_copy
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.output.lock").write_text("results/data/dataset.npz\n")  # left by a kill
    # Said on every run while the lock is there. Cold (no warm interpreter, docs/testing.md):
    # a served run's client process would itself look like a live run in this folder.
    proc = snakemake(workdir, "--dry-run", env={"MULTIRUN_WARM": ""})
    note = next(x for x in proc.stderr.splitlines() if x.startswith("multirun: "))
    assert "holds a lock, but no Snakemake process on this machine works in" in note
    assert "`snakemake --unlock`, then rerun" in note
    fake = workdir.parent / "snakemake"  # a process named like a live run in this folder
    fake.write_text("import time\ntime.sleep(120)\n")
    live = subprocess.Popen([sys.executable, str(fake)], cwd=workdir)
    try:
        cmdline = Path(f"/proc/{live.pid}/cmdline")
        deadline = time.monotonic() + 30  # until the child has exec'd (before: pytest's argv)
        while str(fake).encode() not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        advice = lock_advice(workdir)
        assert f"pid {live.pid}" in advice and "Do NOT use --unlock" in advice
    finally:
        live.kill()
        live.wait()
    assert "no Snakemake process" in lock_advice(workdir)
    snakemake(workdir, "--unlock")
    assert lock_advice(workdir) is None


# ----------------------------------------------------------------------------- 2. tables


def write_scores(path: Path, rows: int = 6) -> None:
    fields = list(contracts.TABLES["scores"].columns)
    contracts.save_csv(path, [{"n_models": 2, "subset": i, "method": "kernel", "k": 3,
                               "vote": "majority", "accuracy": 0.5, "ci_low": 0.4,
                               "ci_high": 0.6} for i in range(rows)], fields)


@pytest.mark.parametrize("damage, message", [
    ("half", "has 3 rows, the config gives 6"),
    ("midline", "row 3 has"),
    ("header", "lacks columns ['method']"),
    ("nan", "row 2, column 'accuracy' is nan; no NaN"),
    ("text", "row 1, column 'k': 'three' is not a number"),
    ("empty", "is empty"),
])
def test_a_malformed_table_stops_with_one_line_naming_it(tmp_path, damage, message):
    path = tmp_path / "scores.csv"
    write_scores(path)
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    damaged = {
        "half": "".join(lines[:4]), "midline": text[: len(lines[0]) + 2 * len(lines[1]) + 9],
        "header": text.replace("method", "methd", 1),
        "nan": text.replace("0.5", "nan", 2).replace("nan", "0.5", 1),
        "text": text.replace(",3,", ",three,", 1), "empty": "",
    }[damage]
    path.write_text(damaged)
    with pytest.raises(contracts.ContractError) as err:
        contracts.load_table(path, "scores", rows=6)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)
    write_scores(path)
    assert len(contracts.load_table(path, "scores", rows=6)) == 6


# ----------------------------------------------------------------------------- 3. config


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["kernel"].update(k_max=5000), "kernel.k_max: 5000 exceeds the 240 train"),
    (lambda c: c["train"]["recipe"].update(patience=3), "train.recipe.patience: 3"),
    (lambda c: c["width_sweep"]["recipe"].update(patience=1), "width_sweep.recipe.patience: 1"),
    (lambda c: c["train"].update(seeds=10**9), "train.seeds: 1000000000 exceeds limits.seeds"),
    (lambda c: c["studies"]["memorization"].update(seeds=10**9), "studies.memorization.seeds"),
    (lambda c: c["dataset"].update(num_samples=10**9), "dataset.num_samples: 1000000000 exceeds"),
    (lambda c: c["train"]["recipe"].update(epochs=10**6), "train.recipe.epochs: 1000000 exceeds"),
    (lambda c: c["width_sweep"]["grid"].update(epochs=10**6), "width_sweep.grid.epochs"),
])
def test_sizes_are_checked_before_any_job(edit, message):
    cfg = tiny_config()
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert message in str(err.value)


def test_limits_can_be_raised():
    cfg = tiny_config()
    cfg["train"]["seeds"] = 200_000
    cfg["limits"]["seeds"] = 200_000
    assert check(cfg)["train"]["seeds"] == 200_000
    assert train_examples(tiny_config()) == 240  # 80% of dataset.num_samples=300


def test_patience_keeps_working_where_a_validation_split_exists():
    cfg = tiny_config()
    assert cfg["studies"]["label_noise"]["recipe"]["patience"] == 2
    check(cfg)


def test_a_bad_size_stops_the_run_before_any_job_deletes_anything(tiny_copy):
    workdir, cfg = tiny_copy
    before = outputs_of(workdir)
    cfg["kernel"]["k_max"] = 5000
    write_config(workdir, cfg)
    proc = snakemake(workdir, check=False)
    assert proc.returncode != 0 and "kernel.k_max: 5000" in proc.stdout + proc.stderr
    assert "Building DAG" not in proc.stdout + proc.stderr
    assert sorted(outputs_of(workdir)) == sorted(before)


def test_figure_formats_are_honoured_exactly(tiny_copy):
    workdir, cfg = tiny_copy
    cfg["figures"]["formats"] = ["pdf"]
    write_config(workdir, cfg)
    proc = snakemake(workdir, "--dry-run", "--forceall")
    planned = re.findall(r"output: ([^\n]*)", proc.stdout + proc.stderr)
    figures = [p for line in planned for p in line.split(", ") if "/figures/" in p]
    assert figures and all(p.endswith((".pdf", ".json")) for p in figures), figures


# ----------------------------------------------------------------------------- 4. disk full


@pytest.mark.parametrize("writer", ["save_npy", "save_npz", "save_torch", "save_csv"])
def test_a_full_disk_is_one_line_naming_the_path(tmp_path, writer):
    call = {
        "save_npy": "contracts.save_npy(OUTPUTS[0], np.zeros(100_000))",
        "save_npz": "contracts.save_npz(OUTPUTS[0], a=np.zeros(100_000))",
        "save_torch": "contracts.save_torch(OUTPUTS[0], {'a': torch.zeros(100_000)})",
        "save_csv": "contracts.save_csv(OUTPUTS[0], [{'a': i} for i in range(100_000)], ['a'])",
    }[writer]
    suffix = {"save_npy": "npy", "save_npz": "npz", "save_torch": "pt", "save_csv": "csv"}[writer]
    body = f"""
        OUTPUTS = [out + "/result.{suffix}"]
        def main(smk):
            print("working")
            {call}
    """
    proc = run_job(tmp_path, body, fsize=64 * 1024)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"multirun error in rule fake: {tmp_path}/out/result.{suffix}: cannot "
                               "be written: the file-size limit was reached")
    assert "written so far" in lines[0] and "free in" in lines[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["job.log"]  # no temporary
    assert (tmp_path / "out" / "job.log").read_text() == "working\n"  # nothing more written


def test_no_space_names_the_free_space(tmp_path):
    err = contracts.no_space(tmp_path / "x.npy", OSError(28, "No space left on device"), 5 << 20)
    assert str(err).startswith(f"{tmp_path}/x.npy: cannot be written: no space left on the device")
    assert "more than the 5.0 MiB written so far" in str(err) and f"free in {tmp_path}" in str(err)


# ----------------------------------------------------------------------------- 5. leftovers


def test_outputs_follow_the_umask(tmp_path):
    writers = {
        "a.npy": lambda p: contracts.save_npy(p, np.zeros(3)),
        "b.npz": lambda p: contracts.save_npz(p, a=np.zeros(3)),
        "c.json": lambda p: contracts.save_json(p, {"a": 1}),
        "d.csv": lambda p: contracts.save_csv(p, [{"a": 1}], ["a"]),
        "e.pt": lambda p: contracts.save_torch(p, {"a": torch.zeros(3)}),
        "f.png": lambda p: contracts.save_with(p, lambda t: t.write_bytes(b"png")),
    }
    old = os.umask(0o022)
    try:
        for umask in (0o022, 0o077, 0o002):
            os.umask(umask)
            for name, write in writers.items():
                path = tmp_path / f"{umask:o}" / name
                write(path)
                plain = path.with_name(f"plain-{name}")
                plain.write_bytes(b"")  # what any program writes under this umask
                assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(old)


def test_a_killed_jobs_temporaries_are_removed_when_it_runs_again(tmp_path):
    out = tmp_path / "figures" / "plot.png"
    out.parent.mkdir()
    left = [out.parent / ".plot.png.k2j4x9.png", out.parent / ".plot.png.abc.png"]
    keep = [out.parent / ".other.png.abc.png", out.parent / "plot.pdf"]
    for path in left + keep:
        path.write_bytes(b"")

    def main(smk):
        contracts.save_with(out, lambda t: t.write_bytes(b"png"))

    snake.run(FakeJob([out]), main)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, *(p.name for p in keep)])


def test_a_workflow_rerun_sweeps_a_killed_figure_save(tiny_copy):
    workdir, _ = tiny_copy
    figures = workdir / "results" / "figures"
    stale = figures / ".accuracy_vs_models.png.x1y2z3.png"  # a kill during savefig
    stale.write_bytes(b"")
    snakemake(workdir, "--forcerun", "figure_accuracy")
    assert not stale.exists()
    assert not [p for p in figures.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- 6. identical


def test_training_a_shard_twice_gives_identical_bytes(tmp_path):
    """1 and 2 threads, first in a fresh process and then after other work in the same
    process: the same checkpoint bytes every time."""
    body = """
        from multirun import data, train
        from multirun.model_spec import normalize_spec
        from multirun.recipe import normalize_recipe
        from conftest import tiny_config
        ORDER = THREADS
        OUTPUTS = [out + f"/width-8-{ORDER}-{i}.pt" for i in range(2)]
        def main(smk):
            cfg, cpu = tiny_config(), torch.device("cpu")
            ds = data.make_dataset("mnist1d", seed=42, num_samples=600)
            for i, threads in enumerate(ORDER):
                torch.set_num_threads(threads)
                ckpt = train.train_shard(
                    torch.from_numpy(ds["x_train"]), torch.from_numpy(ds["y_train"]),
                    seeds=[0, 1, 2], model_spec=normalize_spec(cfg["width_sweep"]["model"] | {"width": 8}),
                    recipe=normalize_recipe(cfg["width_sweep"]["recipe"] | {"epochs": 3}), device=cpu)
                contracts.save_torch(OUTPUTS[i], ckpt)
                # another job's work before the next training, in the same process
                (torch.randn(300, 301) @ torch.randn(301, 77)).sum()
                train.train_shard(torch.randn(64, 40), torch.randint(0, 10, (64,)), seeds=[5],
                                  model_spec=normalize_spec({"name": "mlp", "width": 3}),
                                  recipe=normalize_recipe(cfg["width_sweep"]["recipe"] | {"epochs": 1}),
                                  device=cpu)
    """
    for order in ((1, 2), (2, 1)):
        proc = run_job(tmp_path, body.replace("THREADS", repr(order)))
        assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted((tmp_path / "out").glob("width-8-*.pt"))
    assert len(files) == 4
    assert len({f.read_bytes() for f in files}) == 1


def test_retraining_in_a_job_after_another_job_gives_the_same_file(tiny_run, tiny_copy):
    """Both sweep widths retrained one after the other on 1 core (threads 1, the tiny run
    used 2): the same checkpoint bytes (what is made from them is then the same too: the
    later jobs are deterministic functions of their inputs, checked by the other tests)."""
    workdir, _ = tiny_copy
    snakemake(workdir, "--forcerun", "train_width", "--until", "train_width", "--cores", "1")
    assert_same_outputs(workdir, tiny_run[0])

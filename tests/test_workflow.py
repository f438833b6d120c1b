"""The whole workflow on a tiny config: outputs, contracts, caching and bad input."""

from __future__ import annotations

import csv
import re
import shutil

import numpy as np
import pytest
import yaml
from conftest import ROOT, TINY_CONFIG, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.workflow


def test_run_produces_every_output(tiny_run):
    workdir, cfg = tiny_run
    res = workdir / "results"
    for name in ("accuracy_vs_models", "hessian_spectrum", "width_sweep_default"):
        assert (res / "figures" / f"{name}.png").stat().st_size > 10_000
    for shard, seeds in (("000", [0, 1]), ("001", [2, 3])):
        test = np.load(res / "logits" / f"shard-{shard}" / "test.npy", mmap_mode="r")
        train = np.load(res / "logits" / f"shard-{shard}" / "train.npy", mmap_mode="r")
        assert test.dtype == np.float16 and test.shape == (2, 60, 10)
        assert train.shape == (2, 240, 10)
        assert np.load(res / "logits" / f"shard-{shard}" / "seeds.npy").tolist() == seeds
        # learning curves beside the checkpoint: the last epoch's test accuracy is the model's
        with open(res / "train" / f"shard-{shard}.metrics.csv") as f:
            rows = list(csv.DictReader(f))
        epochs = cfg["train"]["recipe"]["epochs"]
        assert [(int(r["epoch"]), int(r["seed"])) for r in rows] == [
            (e, s) for e in range(1, epochs + 1) for s in seeds]
        y_test = np.load(res / "data" / "dataset.npz")["y_test"]
        acc = (test.argmax(-1) == y_test).mean(1)  # float16 logits: ties may flip one example
        last = [float(r["test_acc"]) for r in rows if int(r["epoch"]) == epochs]
        np.testing.assert_allclose(last, acc, atol=1.5 / len(y_test))
    nb = np.load(res / "kernel" / "logsoftmax" / "neighbours.npz")
    assert nb["index"].dtype == np.int32 and nb["index"].shape == (3, 60, 5)  # 2 subsets of 2, 1 of 4
    assert nb["sizes"].tolist() == [2, 2, 4]
    assert np.all(np.diff(nb["similarity"], axis=-1) <= 1e-6)  # sorted descending
    with open(res / "knn" / "logsoftmax" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    kinds = {(r["method"], r["k"], r["vote"]) for r in rows}
    assert ("kernel", "3", "weighted") in kinds and ("ensemble", "", "") in kinds
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    with open(res / "effdim" / "sweep-default.csv") as f:
        widths = {int(r["width"]) for r in csv.DictReader(f)}
    assert widths == {4, 8}


PLACEHOLDERS = {"XXX": r"\d{3}", "W": r"\d+", "I": r"\d+", "CKPT": r"[^/]+", "NAME": r"[^/]+",
                "ALPHA": r"[^/]+", "VARIANT": "(?:logsoftmax|raw)"}


def readme_output_patterns() -> dict[str, re.Pattern]:
    """The paths of the README's "What lands where" table (its first column), as regexes
    over paths below ``results/``: ``{a,b}`` alternatives, ``*`` within a folder, the
    upper-case placeholders, and a trailing ``/`` for everything below a folder."""
    text = (ROOT / "README.md").read_text().split("## What lands where", 1)[1].split("\n## ", 1)[0]
    patterns = {}
    for row in re.findall(r"^\| (.+?) \| .* \|$", text, re.M)[2:]:  # past the header
        for path in re.findall(r"`([^`]+)`", row):
            rx = re.sub(r"\\\{(.*?)\\\}", lambda m: "(?:" + m.group(1).replace(",", "|") + ")",
                        re.escape(path)).replace(r"\*", "[^/]*")
            for word, sub in PLACEHOLDERS.items():
                rx = re.sub(rf"(?<![A-Za-z]){word}(?![A-Za-z])", sub.replace("\\", "\\\\"), rx)
            patterns[path] = re.compile(rx + (".+" if path.endswith("/") else ""))
    return patterns


def test_readme_table_names_every_output(tiny_run):
    """Every file of the finished tiny run matches a path of the README's table, and every
    path there of what the default run makes matches one of its files."""
    res = tiny_run[0] / "results"
    files = [str(f.relative_to(res)) for f in res.rglob("*") if f.is_file()]
    patterns = readme_output_patterns()
    assert len(patterns) > 15
    unlisted = [f for f in files if not any(p.fullmatch(f) for p in patterns.values())]
    assert not unlisted, f"add to README's What lands where: {unlisted}"
    not_default = ("kernel/VARIANT/dense.npy", "sweeps/", "studies/", "subsets/", "published/",
                   "local/")
    for path, pattern in patterns.items():
        if not path.startswith(not_default):
            assert any(pattern.fullmatch(f) for f in files), f"README names {path}: not made"


def test_second_run_schedules_nothing(tiny_run):
    workdir, _ = tiny_run
    assert planned_jobs(workdir) == {}


def test_knn_setting_reruns_only_scoring_and_its_figure(tiny_copy):
    workdir, cfg = tiny_copy
    cfg["knn"]["power"] = 2
    write_config(workdir, cfg)
    # both kernel variants' scores (logsoftmax, raw), the two figures that read scores and
    # the report's headline accuracy table
    assert planned_jobs(workdir) == {"knn": 2, "figure_accuracy": 1, "figure_neighbours": 1,
                                     "headline_accuracy": 1, "all": 1}


def test_one_more_shard_trains_only_that_shard(tiny_copy):
    workdir, cfg = tiny_copy
    cfg["train"]["seeds"] = 6
    write_config(workdir, cfg)
    jobs = planned_jobs(workdir)
    assert jobs["train_shard"] == 1 and jobs["logits"] == 1
    assert jobs["kernel"] == 2 and jobs["knn"] == 2  # both variants read every shard
    assert "hessian" not in jobs and "train_width" not in jobs and "dataset" not in jobs


def test_hessian_setting_touches_neither_training_nor_kernel(tiny_copy):
    workdir, cfg = tiny_copy
    cfg["hessian"]["steps"] = 12
    write_config(workdir, cfg)
    jobs = planned_jobs(workdir)
    assert jobs.get("hessian", 0) >= 1
    assert not {"train_shard", "train_width", "logits", "kernel", "knn", "dataset"} & set(jobs)


def test_device_and_figure_settings_rerun_no_computation(tiny_copy):
    workdir, cfg = tiny_copy
    for section in ("train", "kernel", "hessian"):
        cfg[section]["device"] = "cpu"  # where a job runs does not change what it computes
    write_config(workdir, cfg)
    assert planned_jobs(workdir) == {}
    cfg["hessian"]["slq"]["sigma"] = 0.05  # density broadening: drawing only
    write_config(workdir, cfg)
    assert planned_jobs(workdir) == {"figure_spectrum": 1, "figure_width_sweep": 1, "all": 1}


def test_default_written_out_retrains_nothing(tiny_copy):
    workdir, _ = tiny_copy
    cfg = yaml.safe_load(TINY_CONFIG.read_text())  # as written: most keys left to the schema
    assert "label_smoothing" not in cfg["train"]["recipe"]
    write_config(workdir, cfg)
    assert planned_jobs(workdir) == {}
    cfg["train"]["recipe"].update(label_smoothing=0.0, momentum=0.9, lr=0.05, schedule="cosine")
    cfg["train"]["model"].update(name="mlp", depth=2, batchnorm=False)
    cfg["width_sweep"]["recipe"]["label_noise"] = 0.2
    cfg["figures"]["pair_ranks"] = [601, 648]
    write_config(workdir, cfg)
    assert planned_jobs(workdir) == {}


def test_nested_key_from_the_command_line(tiny_copy):
    """--config hands nested values over as strings; they take the schema's types."""
    workdir, _ = tiny_copy
    jobs = planned_jobs(workdir, "--config", "train={seeds: 6}", "knn={power: 2}")
    assert jobs["train_shard"] == 1 and jobs["knn"] == 2
    assert "train_width" not in jobs and "hessian" not in jobs


@pytest.fixture
def source_copy(tmp_path):
    """A copy of the workflow and its library, to edit (never the repository itself)."""
    dst = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("workflow", "scripts", "src"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    shutil.copy2(ROOT / "Snakefile", dst / "Snakefile")
    return dst


def edit(path):
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    return original


def test_plotting_code_edit_redraws_only_its_figures(tiny_copy, source_copy):
    workdir, _ = tiny_copy
    assert planned_jobs(workdir, root=source_copy) == {}
    spectra = source_copy / "src" / "multirun" / "plots" / "spectra.py"
    original = edit(spectra)
    assert planned_jobs(workdir, root=source_copy) == {
        "figure_spectrum": 1, "figure_width_sweep": 1, "all": 1}
    spectra.write_text(original)  # the same content again: nothing to do
    assert planned_jobs(workdir, root=source_copy) == {}


def test_kernel_code_edit_reruns_kernel_and_downstream_not_training(tiny_copy, source_copy):
    workdir, _ = tiny_copy
    edit(source_copy / "src" / "multirun" / "kernel" / "engine.py")
    jobs = planned_jobs(workdir, root=source_copy)
    assert jobs["kernel"] == 2 and jobs["knn"] == 2 and jobs["figure_accuracy"] == 1
    untouched = {"dataset", "train_shard", "train_width", "logits", "hessian", "effdim",
                 "figure_spectrum", "figure_width_sweep"}
    assert not untouched & set(jobs)


def test_figure_resolution_reruns_only_drawing(tiny_copy):
    """Figure rules only draw: the kernels behind the neighbour figures are cached rules."""
    workdir, cfg = tiny_copy
    cfg["figures"]["dpi"] = 80
    write_config(workdir, cfg)
    jobs = planned_jobs(workdir)
    assert "figure_neighbours" in jobs and "figure_accuracy" in jobs
    assert all(name.startswith("figure_") or name == "all" for name in jobs), jobs


def test_unknown_config_key_is_named_before_any_job(tiny_copy):
    workdir, cfg = tiny_copy
    cfg["knn"]["powr"] = 2
    write_config(workdir, cfg)
    proc = snakemake(workdir, "--dry-run", check=False)
    assert proc.returncode != 0
    assert "knn.powr: unknown key" in proc.stdout + proc.stderr


@pytest.mark.parametrize("damage", ["truncate", "nan"])
def test_bad_logits_fail_clearly_and_leave_no_output(tiny_copy, damage):
    workdir, _ = tiny_copy
    res = workdir / "results"
    bad = res / "logits" / "shard-001" / "train.npy"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:500])
    else:
        arr = np.load(bad)
        arr[1, 7, 3] = np.nan
        np.save(bad, arr)
    out = res / "kernel" / "logsoftmax" / "neighbours.npz"
    # only that kernel job (with both variants forced, either may fail first and end the run)
    proc = snakemake(workdir, str(out.relative_to(workdir)), "--forcerun", "kernel", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "shard-001/train.npy" in text
    assert ("truncated" in text) if damage == "truncate" else ("NaN" in text)
    # the kernel job(s) that ran and failed left no output (the first failure stops the run;
    # which variant runs first is the scheduler's choice, the other keeps its earlier output)
    failed = [v for v in ("logsoftmax", "raw")
              if "error:" in (res / "logs" / "kernel" / f"{v}.log").read_text()]
    assert failed
    for variant in failed:
        out = res / "kernel" / variant / "neighbours.npz"
        assert not out.exists()
        assert not list(out.parent.glob(".neighbours*"))  # no temporary left behind


def test_mnist1d_paper_preset_plans_the_default_run(tmp_path):
    # configs/mnist1d-paper.yaml: the paper's Adam MLP through the normal workflow (a dry run;
    # docs/training.md has the measured accuracy)
    cfg = yaml.safe_load((ROOT / "configs" / "mnist1d-paper.yaml").read_text())
    assert cfg["train"]["recipe"]["optimizer"] == "adam"
    write_config(tmp_path, {**cfg, "results": "results"})
    jobs = planned_jobs(tmp_path)
    assert jobs["train_shard"] == 1 and jobs["dataset"] == 1 and jobs["figure_accuracy"] == 1
    assert "hessian" not in jobs and "train_width" not in jobs

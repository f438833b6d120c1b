"""python -m multirun.summary: the README's measured tables, printed from a run's results."""

from __future__ import annotations

import csv
import re
import subprocess
import sys

import pytest
from conftest import ROOT, job_env

from multirun import summary

pytestmark = pytest.mark.workflow


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _labels(table: str) -> list[str]:
    """First cells of a Markdown table, numbers blanked (the README's run is not the tiny one)."""
    return [re.sub(r"[\d][\d,.]*", "#", line.split("|")[1].strip())
            for line in table.strip().splitlines() if not line.startswith("| ---")]


@pytest.fixture(scope="module")
def printed(tiny_run):
    workdir, cfg = tiny_run
    res = workdir / cfg["results"]
    proc = subprocess.run([sys.executable, "-m", "multirun.summary", str(res)], capture_output=True,
                          text=True, env=job_env())
    assert proc.returncode == 0, proc.stderr
    return res, proc.stdout


def test_accuracy_rows_are_the_scores_at_the_largest_model_count(printed):
    res, out = printed
    rows = _csv(res / "knn" / "logsoftmax" / "scores.csv")
    largest = max(int(r["n_models"]) for r in rows)
    at = [r for r in rows if int(r["n_models"]) == largest]

    def one(method, k="", vote=""):
        (row,) = [r for r in at if (r["method"], r["k"], r["vote"]) == (method, k, vote)]
        return f"{100 * float(row['accuracy']):.1f}% ({100 * float(row['ci_low']):.1f}-" \
               f"{100 * float(row['ci_high']):.1f})"

    k_big = max(int(r["k"]) for r in at if r["method"] == "kernel")
    assert f"| {largest} models, 60 test examples |" in out  # 20% of 300 MNIST-1D examples
    assert f"| mean single model | {one('single')} |" in out
    assert f"| logit-averaging ensemble | {one('ensemble')} |" in out
    assert f"| kernel 3-NN, majority vote | {one('kernel', '3', 'majority')} |" in out
    assert f"| kernel {k_big}-NN, weighted vote | {one('kernel', str(k_big), 'weighted')} |" in out
    raw = [r for r in _csv(res / "knn" / "raw" / "scores.csv") if int(r["n_models"]) == largest]
    three = next(r for r in raw if (r["method"], r["k"], r["vote"]) == ("kernel", "3", "majority"))
    assert f"on raw logits instead of log_softmax | {100 * float(three['accuracy']):.1f}% / " in out


def test_width_table_lists_every_seed_of_every_width(printed):
    res, out = printed
    rows = [r for r in _csv(res / "effdim" / "sweep-default.csv") if float(r["z"]) == 1.0]
    widths = sorted({int(r["width"]) for r in rows})
    table = out.split("| width |", 1)[1]
    lines = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in table.splitlines()[2:]}
    neff = lines["N_eff(H, 1) per seed (+- SE)"]
    test_loss = lines["test loss (mean over seeds)"]
    assert len(neff) == len(test_loss) == len(widths) == 2
    for cell, loss_cell, width in zip(neff, test_loss, widths, strict=True):
        mine = sorted((r for r in rows if int(r["width"]) == width), key=lambda r: int(r["seed"]))
        want = [f"{float(r['effective_dimension']):.1f} +- {float(r['effective_dimension_se']):.1f}"
                for r in mine]
        assert cell.strip() == " / ".join(want)
        assert float(loss_cell) == pytest.approx(sum(float(r["test_loss"]) for r in mine) / 2, rel=1e-2)
    first = next(r for r in rows if int(r["width"]) == widths[0])
    assert lines["parameters"][0].strip() == f"{int(first['num_params']):,}"


def test_readme_tables_are_the_scripts_format(printed, tmp_path):
    """The README's measured block has exactly the rows the script prints (its numbers come
    from the default run: `python -m multirun.summary --readme README.md` rewrites it)."""
    res, out = printed
    text = (ROOT / "README.md").read_text()
    block = text.split(summary.BEGIN, 1)[1].split(summary.END, 1)[0]
    tables = [_labels(t) for t in out.strip().split("\n\n")]
    assert [_labels(t) for t in block.strip().split("\n\n")] == tables
    copy = tmp_path / "README.md"
    copy.write_text(text)
    assert summary.main([str(res), "--readme", str(copy)]) == 0
    new = copy.read_text()
    assert new.split(summary.BEGIN)[0] == text.split(summary.BEGIN)[0]  # nothing else changes
    assert new.split(summary.END)[1] == text.split(summary.END)[1]
    assert f"{summary.BEGIN}\n{out.strip()}\n{summary.END}" in new


def test_missing_results_are_named(tmp_path, capsys):
    assert summary.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "knn/logsoftmax/scores.csv: missing" in err and "snakemake --cores 2" in err


def test_a_table_without_the_rows_asked_for_is_named(tiny_run, tmp_path, capsys):
    """A z the width sweep was not scored at: the message names the table and the key."""
    results = tiny_run[0] / "results"
    assert summary.main([str(results), "--z", "7"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"effdim/sweep-default\.csv: no rows at z = 7 \(hessian\.z\)", err), err

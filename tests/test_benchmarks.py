"""The benchmarks/ scripts run to the end at toy sizes and print their ratios.

Their numbers at these sizes mean nothing (they are measured at full size: docs/kernel.md,
docs/training.md, docs/hessian.md, docs/attribution.md); what is checked is that each script
still runs against the library as it is now, and the correctness lines they print.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT, job_env

pytestmark = pytest.mark.workflow


def bench(name: str, *args: str) -> str:
    """Run ``benchmarks/NAME.py ARGS`` like its docstring says; its stdout + stderr."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args],
                          capture_output=True, text=True, env=job_env(), cwd=ROOT, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} {' '.join(args)} failed:\n{out[-3000:]}"
    return out


def test_bench_kernel_matches_the_reference_and_prints_its_ratios():
    out = bench("bench_kernel", "--models", "16", "--train", "500", "--test", "100",
                "--repeats", "1")
    error = float(re.search(r"max \|similarity - reference\| +: ([\d.e+-]+)", out).group(1))
    assert error < 1e-5, out[-2000:]
    for ratio in ("engine / GEMM reference", "bytes read / data size", "reference time / engine time"):
        assert re.search(rf"RATIO {re.escape(ratio)} +: \d", out), (ratio, out[-2000:])


def test_bench_train_prints_the_program_against_its_floor():
    out = bench("bench_train", "--epochs", "1", "--repeats", "1", "--loop-seeds", "2",
                "--no-cnn", "--no-airbench", "--no-full-shard")
    assert re.search(r"RATIO mlp program / its GEMMs alone: \d", out), out[-2000:]
    assert re.search(r"mlp: [\d.]+ ms/seed-epoch .* of floor", out), out[-2000:]


def test_bench_hessian_runs_lanczos_and_power_iteration():
    out = bench("bench_hessian", "--examples", "200", "--epochs", "1", "--top", "5",
                "--ref-steps", "80", "--max-steps", "60", "--reps", "2", "--skip-workflow")
    # the top 5 eigenvalues to 1e-3 of the reference run, in fewer HVPs than power iteration
    lanczos = re.search(r"1e-3 reached \(oracle: vs reference\) after (\d+) HVPs \([\d.]+s, "
                        r"max rel err ([\d.e+-]+)\)", out)
    power = re.search(r"power iteration \(PyHessian, deflated, tol [\d.]+\): (\d+) HVPs", out)
    assert lanczos and power, out[-2000:]
    assert float(lanczos.group(2)) <= 1e-3 and int(lanczos.group(1)) < int(power.group(1))
    out = bench("bench_hessian", "--resnet18", "--resnet-width", "4", "--resnet-examples", "16",
                "--resnet-batch", "16", "--resnet-steps", "24", "--reps", "2")
    assert re.search(r"HVP.*gradient", out), out[-2000:]


def test_bench_subsets_fits_and_scores_and_trains_on_subsets():
    out = bench("bench_subsets", "--models", "8", "--train", "200", "--test", "50",
                "--heldout", "2", "--validation", "2")
    assert re.search(r"LDS of the fitted datamodels: -?[\d.]+ \+- [\d.]+", out), out[-2000:]
    out = bench("bench_subsets", "--training", "--seeds", "4")
    assert re.search(r"subsets alpha=0\.5 +4 seeds in +[\d.]+ s", out), out[-2000:]


def test_bench_effdim_compares_slq_with_the_dense_spectrum(tiny_run):
    results = tiny_run[0] / "results"
    spectrum = min((results / "hessian").glob("width-*-0.npz"),
                   key=lambda p: int(p.name.split("-")[1]))
    out = bench("bench_effdim", str(spectrum), "--results", str(results), "--z", "1")
    row = re.search(r"^\| (\d+) \| (\d+) \| 1 \| (-?[\d.]+) \+- ([\d.]+) \| -?[\d.]+ \| "
                    r"(-?[\d.]+) \|", out, re.M)
    assert row and row.group(1) == spectrum.name.split("-")[1], out[-2000:]
    # SLQ's estimate of the whole spectrum's N_eff against the dense float64
    # eigendecomposition's: within 1 SE at full size (docs/hessian.md); the tiny run's 2
    # probes of 8 steps give an SE of one probe difference and a quadrature bias, so here
    # within 4 SE or 30%
    est, se, dense = float(row.group(3)), float(row.group(4)), float(row.group(5))
    assert abs(est - dense) <= max(4 * se, 0.3 * abs(dense)), out[-2000:]

"""The suite's warm interpreter (tests/warm): a served process must look to its script like
the fresh process it replaces, and end like it (exit code, signal, a killed client)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import job_env

SCRIPT = """
import json, os, resource, sys
seen = {"served": "torch" in sys.modules, "argv": sys.argv, "cwd": os.getcwd(),
        "path": sys.path, "name": __name__, "file": __file__, "umask": os.umask(0o22),
        "fsize": resource.getrlimit(resource.RLIMIT_FSIZE),
        "env": {k: os.environ.get(k) for k in ("JOB_VALUE", "OMP_NUM_THREADS")}}
print(json.dumps(seen))
"""


@pytest.fixture
def served(warm_interpreter, tmp_path):
    """A script under ``.snakemake/scripts`` (what the warm interpreter serves), an
    environment for it, and the server ready."""
    if warm_interpreter is None:
        pytest.skip("MULTIRUN_TEST_COLD is set: no warm interpreter to test")
    deadline = time.monotonic() + 120
    while not Path(warm_interpreter).exists():  # it imports torch and Snakemake first
        assert time.monotonic() < deadline, "the warm interpreter did not start in 120 s"
        time.sleep(0.1)
    folder = tmp_path / ".snakemake" / "scripts"
    folder.mkdir(parents=True)
    env = job_env(env={"JOB_VALUE": "x", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                       "MKL_NUM_THREADS": "1"})
    return folder, env


def _run(script: Path, env: dict, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=env, cwd=script.parents[2], **kwargs)


def test_a_served_script_sees_what_a_fresh_process_sees(served):
    folder, env = served
    script = folder / "tmp1.view.py"
    script.write_text(SCRIPT)

    def fsize():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (10**9, 10**9))

    warm = json.loads(_run(script, env, "a", "b", preexec_fn=fsize).stdout)
    cold = json.loads(_run(script, {k: v for k, v in env.items() if k != "MULTIRUN_WARM"},
                           "a", "b", preexec_fn=fsize).stdout)
    assert warm.pop("served") and not cold.pop("served")
    assert warm == cold
    assert warm["fsize"] == [10**9, 10**9] and warm["env"]["JOB_VALUE"] == "x"


def test_a_served_script_ends_as_a_fresh_one(served):
    folder, env = served
    cases = {"sys.exit(3)": (3, ""), "raise ValueError('boom')": (1, "ValueError: boom"),
             "sys.exit('a message')": (1, "a message"), "print('ok')": (0, "")}
    for body, (code, said) in cases.items():
        script = folder / "tmp2.end.py"
        script.write_text(f"import sys\n{body}\n")
        proc = _run(script, env)
        assert proc.returncode == code, (body, proc.stderr)
        assert said in proc.stderr, (body, proc.stderr)


def test_signals_reach_the_worker_and_a_killed_client_takes_it_along(served, tmp_path):
    folder, env = served
    script = folder / "tmp3.wait.py"
    pid_file = tmp_path / "worker.pid"
    script.write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                      "time.sleep(60)\n")
    for sig, status in ((signal.SIGTERM, -signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)):
        pid_file.unlink(missing_ok=True)
        client = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        assert worker != client.pid  # served: the script runs in a fork of the server
        client.send_signal(sig)
        assert client.wait(timeout=30) == status
        while Path(f"/proc/{worker}").exists():  # gone, by the signal or killed with it
            assert time.monotonic() < deadline + 30
            time.sleep(0.05)


def test_a_job_of_two_threads_gets_the_thread_pools_a_fresh_one_gets(served):
    """The server's torch and numpy loaded with one thread each; a two-thread job (Snakemake
    sets OMP_NUM_THREADS etc. to its threads) must see two, as a cold process does (in every
    pool: the server has also loaded scipy's OpenBLAS and scikit-learn's OpenMP)."""
    folder, env = served
    script = folder / "tmp5.threads.py"
    script.write_text("import json, sys\nserved = 'torch' in sys.modules\nimport numpy, torch\n"
                      "from threadpoolctl import threadpool_info\n"
                      "pools = sorted({(p['user_api'], p['num_threads']) for p in threadpool_info()})\n"
                      "print(json.dumps([served, torch.get_num_threads(), pools]))\n")
    two = {k: "2" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    warm = json.loads(_run(script, {**env, **two}).stdout)
    cold = json.loads(_run(script, {**env, **two, "MULTIRUN_WARM": ""}).stdout)
    assert warm[0] and not cold[0]
    assert warm[1:] == cold[1:] and warm[1] == 2, (warm, cold)


def test_a_process_started_otherwise_starts_cold(served):
    folder, env = served
    script = folder / "tmp4.view.py"
    script.write_text(SCRIPT)
    for other in ({"PYTHONHASHSEED": "1"}, {"PYTHONWARNINGS": "default"}):
        seen = json.loads(_run(script, {**env, **other}).stdout)
        assert not seen["served"], other
    outside = folder.parents[1] / "plain.py"  # not a Snakemake script job
    outside.write_text(SCRIPT)
    assert not json.loads(_run(outside, env).stdout)["served"]
    assert os.environ.get("MULTIRUN_WARM")

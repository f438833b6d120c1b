"""GPU slots on a local run (multirun.gpus), on fake devices: no CUDA is needed or touched.

The allocator takes its devices as a count or as names, and ``MULTIRUN_FAKE_GPUS=N`` makes a
job believe CUDA sees N devices, so every path below runs on a CPU-only machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, job_env, snakemake, tiny_config, write_config

from multirun import gpus, snake
from multirun.contracts import ContractError

# One process of the concurrency test: take a slot, say so, hold it until told (a line on
# stdin), say so, give it back. Events go to one O_APPEND file: its line order is the order
# in which they happened across processes.
HOLDER = """
import os, sys
from multirun import gpus
events, devices, per_device, folder = sys.argv[1:]
slot = gpus.acquire(int(devices), per_device=int(per_device), folder=folder, poll=0.05)
fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
os.write(fd, f"got {os.getpid()} {slot.positions[0]} {slot.shares[0]}\\n".encode())
sys.stdin.readline()
os.write(fd, f"free {os.getpid()} {slot.positions[0]} {slot.shares[0]}\\n".encode())
slot.release()
"""

# A job in a process of its own, as Snakemake starts it: what its work sees of the devices.
JOB = """
import json, os, sys
from types import SimpleNamespace
from multirun import snake
log, out = sys.argv[1:]
smk = SimpleNamespace(resources={"gpu": 1}, log=[log], config={"gpu_jobs_per_device": 1},
                      threads=1, rule="train_shard")
def main(_):
    import torch
    seen = {"cvd": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if torch.cuda.is_available():
        seen |= {"count": torch.cuda.device_count(), "current": torch.cuda.current_device(),
                 "name": torch.cuda.get_device_name()}
    with open(out, "w") as f:
        json.dump(seen, f)
snake.run(smk, main)
"""


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment for the allocator: no CUDA_VISIBLE_DEVICES, no SLURM, locks in
    ``tmp_path``. Returns the lock folder."""
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpus.FAKE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(gpus.LOCKS_ENV, str(tmp_path / "locks"))
    return tmp_path / "locks"


def test_visible_devices_follow_cuda_visible_devices():
    assert gpus.visible_devices({gpus.FAKE_ENV: "4"}) == ["0", "1", "2", "3"]
    assert gpus.visible_devices({gpus.FAKE_ENV: "0"}) == []
    fake = {gpus.FAKE_ENV: "4"}
    assert gpus.visible_devices(fake | {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert gpus.visible_devices(fake | {"CUDA_VISIBLE_DEVICES": " 3, 1 "}) == ["3", "1"]
    assert gpus.visible_devices(fake | {"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # as CUDA reads it
    assert gpus.visible_devices(fake | {"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpus.visible_devices(fake | {"CUDA_VISIBLE_DEVICES": "GPU-a1,GPU-b2"}) == ["GPU-a1", "GPU-b2"]
    # CUDA uses no more entries than it has devices (here 2 of the 3 listed)
    assert gpus.visible_devices({gpus.FAKE_ENV: "2", "CUDA_VISIBLE_DEVICES": "0,1,2"}) == ["0", "1"]
    with pytest.raises(ContractError, match=gpus.FAKE_ENV):
        gpus.visible_devices({gpus.FAKE_ENV: "two"})


def test_lock_folder_is_per_user_per_slurm_job_and_apart_for_fakes(tmp_path, monkeypatch):
    base = tmp_path / "locks"
    assert gpus.lock_folder({gpus.LOCKS_ENV: str(base)}) == base
    assert base.stat().st_mode & 0o777 == 0o700
    slurm = gpus.lock_folder({gpus.LOCKS_ENV: str(base), "SLURM_JOB_ID": "123"})
    assert slurm == base / "slurm-123" and slurm.is_dir()
    assert gpus.lock_folder({gpus.LOCKS_ENV: str(base), gpus.FAKE_ENV: "2"}) == base / "fake"
    assert gpus.lock_folder({}) == Path(f"/tmp/multirun-gpus-{os.getuid()}")
    monkeypatch.setattr(os, "getuid", lambda: base.stat().st_uid + 1)  # someone else's folder
    with pytest.raises(ContractError, match=f"{base}.*belongs to another user.*{gpus.LOCKS_ENV}"):
        gpus.lock_folder({gpus.LOCKS_ENV: str(base)})


def test_lowest_free_device_first(tmp_path):
    slots = [gpus.acquire(4, folder=tmp_path) for _ in range(4)]
    assert [s.positions for s in slots] == [(0,), (1,), (2,), (3,)]
    assert gpus.acquire(4, folder=tmp_path, wait=False) is None  # all four held
    slots[2].release()
    slots[1].release()
    slots[1] = gpus.acquire(4, folder=tmp_path)
    assert slots[1].positions == (1,)  # the lowest free one
    slots[2] = gpus.acquire(4, folder=tmp_path)
    assert slots[2].positions == (2,)
    assert gpus.acquire(4, folder=tmp_path, wait=False) is None


def test_shared_devices_fill_evenly(tmp_path):
    """With K shares a job takes the device with the fewest jobs: 4 jobs on 4 devices each get
    their own, the next 4 double up, and a ninth finds nothing free."""
    slots = [gpus.acquire(["a", "b", "c", "d"], per_device=2, folder=tmp_path) for _ in range(8)]
    assert [s.devices[0] for s in slots] == list("abcdabcd")
    assert [s.shares[0] for s in slots] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert gpus.acquire(["a", "b", "c", "d"], per_device=2, folder=tmp_path, wait=False) is None
    slots[0].release()
    slots[6].release()  # a and c now hold one job each: a, the lower, goes first
    again = gpus.acquire(["a", "b", "c", "d"], per_device=2, folder=tmp_path)
    assert again.devices == ("a",) and again.shares == (0,)


def test_a_job_of_several_gpus_takes_distinct_devices_or_none(tmp_path):
    first = gpus.acquire(4, count=2, folder=tmp_path)
    assert first.positions == (0, 1) and first.devices == ("0", "1")
    single = gpus.acquire(4, folder=tmp_path)
    assert single.positions == (2,)
    assert gpus.acquire(4, count=2, folder=tmp_path, wait=False) is None  # only device 3 free
    last = gpus.acquire(4, folder=tmp_path)
    assert last.positions == (3,)  # nothing was kept half-taken
    single.release()
    first.release()
    three = gpus.acquire(4, count=3, folder=tmp_path)
    assert three.positions == (0, 1, 2) and three.devices == ("0", "1", "2")
    with pytest.raises(ContractError, match="5 GPU slots among 4"):
        gpus.acquire(4, count=5, folder=tmp_path)


def _events(path: Path) -> list[tuple[str, int, int, int]]:
    if not path.exists():
        return []
    return [(w[0], int(w[1]), int(w[2]), int(w[3]))
            for w in (line.split() for line in path.read_text().splitlines())]


def _wait_for(what, events: Path, timeout: float = 300.0):
    """Poll until ``what()`` is true; a guard against a hang, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            so_far = events.read_text() if events.exists() else ""
            raise AssertionError(f"timed out; events so far:\n{so_far}")
        time.sleep(0.05)


@pytest.mark.parametrize("per_device", [1, 2])
def test_eight_processes_on_four_devices(tmp_path, per_device):
    """8 processes over 4 fake devices with K shares each: never two on one slot, never more
    than K on one device, every process gets a slot, and a SIGKILLed holder's slot goes to
    the next process."""
    devices, slots = 4, 4 * per_device
    events, folder = tmp_path / "events", tmp_path / "locks"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}

    def start():
        return subprocess.Popen([sys.executable, "-c", HOLDER, str(events), str(devices), str(per_device),
                                 str(folder)], stdin=subprocess.PIPE, env=env, text=True)

    procs = {p.pid: p for p in (start() for _ in range(8))}
    killed: set[int] = set()
    try:
        got = lambda: [e for e in _events(events) if e[0] == "got"]  # noqa: E731
        _wait_for(lambda: len(got()) == min(8, slots), events)
        holders = got()
        assert len({(pos, share) for _, _, pos, share in holders}) == len(holders)
        # SIGKILL one holder: the kernel drops its lock and the next process takes that slot
        _, victim, pos, share = holders[0]
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        killed.add(victim)
        if len(procs) <= slots:  # nobody is waiting (K = 2): a ninth process comes
            extra = start()
            procs[extra.pid] = extra
        _wait_for(lambda: len(got()) == len(holders) + 1, events)
        assert got()[-1][2:] == (pos, share)  # the only free slot was the victim's
        # the others finish one at a time; each freed slot goes to a waiting process

        def holding() -> set[int]:
            return {e[1] for e in got()} & {pid for pid, p in procs.items() if p.poll() is None}

        while any(p.poll() is None for p in procs.values()):
            _wait_for(lambda: bool(holding()), events)
            pid = min(holding())
            procs[pid].communicate("\n", timeout=300)
            assert procs[pid].returncode == 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    log = _events(events)
    assert sorted(pid for kind, pid, _, _ in log if kind == "got") == sorted(procs)  # one each
    held: dict[tuple[int, int], int] = {}
    for kind, pid, pos, share in log:  # replay: a slot is never held by two living processes
        assert 0 <= pos < devices and 0 <= share < per_device  # hence at most K per device
        if kind == "got":
            assert held.get((pos, share)) in (None, *killed), f"slot {(pos, share)} held twice:\n{log}"
            held[(pos, share)] = pid
        else:
            assert held.pop((pos, share)) == pid


def _job(tmp_path: Path, gpu: int, per_device: int = 1, name: str = "job") -> SimpleNamespace:
    """A stand-in for the snakemake object of a job that asks for ``gpu`` GPUs."""
    return SimpleNamespace(resources={"gpu": gpu, "mem_mb": 100}, log=[str(tmp_path / f"{name}.log")],
                           config={"gpu_jobs_per_device": per_device}, threads=1, rule="train_shard")


def _run_job(smk) -> str | None:
    """Run ``smk`` through snake.run; returns CUDA_VISIBLE_DEVICES as the job's work saw it."""
    seen, threads = {}, torch.get_num_threads()
    try:
        snake.run(smk, lambda _: seen.update(cvd=os.environ.get("CUDA_VISIBLE_DEVICES")))
    finally:
        torch.set_num_threads(threads)  # snake.run sets the job's threads
    return seen["cvd"]


def test_job_through_snake_run_uses_its_slot_and_logs_it(env, monkeypatch, tmp_path):
    monkeypatch.setenv(gpus.FAKE_ENV, "2")
    held = gpus.acquire(2, folder=gpus.lock_folder())  # device 0 is busy elsewhere
    assert _run_job(_job(tmp_path, 1)) == "1"
    log = (tmp_path / "job.log").read_text()
    assert re.search(r"^gpu slot taken at \S+: CUDA_VISIBLE_DEVICES=1 \(entries 1 of visible 0,1; "
                     r"share 0 of 1;", log, re.M), log
    assert re.search(r"^gpu slot released at \S+: CUDA_VISIBLE_DEVICES=1$", log, re.M), log
    assert gpus.acquire(2, folder=gpus.lock_folder()).positions == (1,)  # released again
    held.release()


def test_a_job_process_sees_only_its_device(env, tmp_path, device):
    """A job in a fresh process takes the lowest free device and sees only that one. On CUDA
    (where a GPU is visible): its torch counts one device, the one its slot names (device 1
    when device 0 is held and there are two or more). On the CPU: the same on 2 fake devices."""
    fake = {gpus.FAKE_ENV: "2"} if device == "cpu" else {}
    count = 2 if fake else torch.cuda.device_count()
    held = gpus.acquire(count, folder=gpus.lock_folder(os.environ | fake)) if count >= 2 else None
    want = "1" if count >= 2 else "0"
    log, out = tmp_path / "job.log", tmp_path / "seen.json"
    subprocess.run([sys.executable, "-c", JOB, str(log), str(out)], env=job_env(env=fake), check=True)
    seen = json.loads(out.read_text())
    assert seen["cvd"] == want, log.read_text()
    assert f"CUDA_VISIBLE_DEVICES={want} (entries {want} of visible" in log.read_text()
    if device == "cuda":
        assert (seen["count"], seen["current"]) == (1, 0)
        assert seen["name"] == torch.cuda.get_device_name(int(want))
        assert seen["name"] in log.read_text()
    else:
        assert "count" not in seen  # fake devices: CUDA untouched
    if held:
        held.release()


def test_existing_cuda_visible_devices_is_respected(env, monkeypatch, tmp_path):
    monkeypatch.setenv(gpus.FAKE_ENV, "8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    held = gpus.acquire(gpus.visible_devices(), folder=gpus.lock_folder())
    assert held.devices == ("5",)
    assert _run_job(_job(tmp_path, 1)) == "7"
    with pytest.raises(SystemExit):  # 3 GPUs per job, 2 visible: one message, exit 1
        snake.run(_job(tmp_path, 3, name="three"), lambda _: None)
    assert "config key gpu asks 3 GPUs per job but only 2 devices are visible " \
           "(CUDA_VISIBLE_DEVICES=5,7)" in (tmp_path / "three.log").read_text()
    held.release()


def test_slurm_jobs_on_one_node_each_get_their_device_0(env, monkeypatch, tmp_path):
    """SLURM gives each job its own GPU as device 0: two jobs on one node must not wait for
    each other's device 0, so each locks in a folder of its own SLURM job."""
    monkeypatch.setenv(gpus.FAKE_ENV, "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    other = gpus.acquire(gpus.visible_devices(), folder=gpus.lock_folder())  # job 41 holds it
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert _run_job(_job(tmp_path, 1)) == "0"
    assert f"locks in {env / 'slurm-42' / 'fake'})" in (tmp_path / "job.log").read_text()
    other.release()


def test_no_slot_for_gpu_0_or_without_devices(env, monkeypatch, tmp_path):
    monkeypatch.setenv(gpus.FAKE_ENV, "2")
    assert _run_job(_job(tmp_path, 0)) is None  # gpu: 0: untouched
    assert "gpu slot" not in (tmp_path / "job.log").read_text()
    assert not (env / "fake").exists() or not list((env / "fake").glob("gpu-*"))
    monkeypatch.setenv(gpus.FAKE_ENV, "0")
    assert _run_job(_job(tmp_path, 1)) is None  # a CPU machine with gpu: 1
    assert "gpu slot: none taken, no CUDA device is visible" in (tmp_path / "job.log").read_text()


def test_shares_in_a_job_log(env, monkeypatch, tmp_path):
    monkeypatch.setenv(gpus.FAKE_ENV, "1")
    held = gpus.acquire(1, per_device=2, folder=gpus.lock_folder())
    assert _run_job(_job(tmp_path, 1, per_device=2)) == "0"
    log = (tmp_path / "job.log").read_text()
    assert "CUDA_VISIBLE_DEVICES=0 (entries 0 of visible 0; share 1 of 2;" in log
    held.release()


def test_meet_waits_for_slots_held_at_once(env, monkeypatch):
    """The tests' rendezvous: False when the wait runs out with one slot held, True once two
    are, and at once for every later job (the ``met`` file)."""
    monkeypatch.setenv(gpus.FAKE_ENV, "2")
    folder = gpus.lock_folder()
    first = gpus.acquire(2, folder=folder)
    assert not gpus._meet(folder, 2, timeout=0.2)
    second = gpus.acquire(2, folder=folder)
    assert gpus._meet(folder, 2, timeout=0.2)
    second.release()
    first.release()
    assert gpus._meet(folder, 2, timeout=0)


def _slot_intervals(logs: Path) -> list[tuple[str, datetime, datetime, str]]:
    """(device, taken, released, log name) of every job log under ``logs`` that took a slot."""
    spans = []
    for log in sorted(logs.rglob("*.log")):
        text = log.read_text()
        taken = re.search(r"^gpu slot taken at (\S+): CUDA_VISIBLE_DEVICES=(\S+)", text, re.M)
        if taken:
            released = re.search(r"^gpu slot released at (\S+): ", text, re.M)
            assert released, text
            spans.append((taken[2], datetime.fromisoformat(taken[1]),
                          datetime.fromisoformat(released[1]), str(log.relative_to(logs))))
    return spans


@pytest.mark.workflow
def test_workflow_with_two_gpus_puts_concurrent_jobs_on_different_devices(env, tmp_path):
    """The tiny config with gpu: 1 under --resources gpu=2 on 2 fake devices: every GPU job
    (training shards, logits, width sweep) takes a slot, and jobs that ran at the same time
    held different devices. Each job holds its slot a fraction of a second, less than the
    spread of two jobs' start-up times on busy cores, so the first job to take a slot waits
    until a second one holds one too (MULTIRUN_FAKE_GPUS_MEET): Snakemake must have started
    both, or the wait runs out and nothing overlaps."""
    cfg = tiny_config() | {"gpu": 1}
    write_config(tmp_path, cfg)
    targets = [f"results/logits/shard-{s}/test.npy" for s in ("000", "001")]
    targets += [f"results/train/width-{w}.pt" for w in cfg["width_sweep"]["widths"]]
    proc = snakemake(tmp_path, *targets, "--cores", "4", "--resources", "gpu=2",  # targets first
                     env={gpus.FAKE_ENV: "2", gpus.MEET_ENV: "2"})
    spans = _slot_intervals(tmp_path / "results" / "logs")
    assert len(spans) == 6, (spans, proc.stderr[-3000:])  # 2 train, 2 logits, 2 widths
    assert {d for d, *_ in spans} <= {"0", "1"}
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:]
                   if a[1] < b[2] and b[1] < a[2]]
    assert overlapping, spans  # Snakemake ran GPU jobs side by side ...
    for a, b in overlapping:  # ... and those never shared a device
        assert a[0] != b[0], (a, b)


def test_gpu_check_script_runs_the_steps_it_is_asked_for(tmp_path):
    """benchmarks/gpu_check.sh (docs/gpu.md's runbook): ``ONLY`` picks the steps, each writes
    its log and reports its exit status. Here step 01, the ``-k cuda`` tests: on a CPU only
    the CUDA_VISIBLE_DEVICES tests match; on a GPU, every CUDA case."""
    env = {name: value for name, value in os.environ.items()  # as a user runs it: not
           if not name.startswith(("PYTEST_", "MULTIRUN_WARM")) and name != "PYTHONPATH"}
    env |= {"PY": sys.executable, "ONLY": "01"}  # inside this pytest (or its xdist worker)
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert re.search(r"^== 01-correctness: exit 0 after \d+ s$", out, re.M), out
    assert re.search(r"\d+ passed", (tmp_path / "01-correctness.log").read_text()), out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01-correctness.log"]


def test_a_cuda_device_where_there_is_none_names_the_key():
    smk = SimpleNamespace(config={"kernel": {"device": "cuda"}, "train": {"device": "auto"}})
    assert snake.device(smk, "train") == "auto"
    if torch.cuda.is_available():
        assert snake.device(smk, "kernel") == "cuda"
    else:
        with pytest.raises(ContractError, match=r"config key kernel\.device: cuda, but this "
                                                r"job sees no CUDA device; use auto"):
            snake.device(smk, "kernel")

"""Real services for the tests: a one-node SLURM cluster on localhost and headless Chromium.

Both come from Debian packages (`make system-deps` installs slurm-wlm, munge and chromium);
where they are missing the tests that need them skip and say how to get them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "run `make system-deps` as root (apt-get install slurm-wlm munge chromium)"
SLURM_PROGRAMS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# The largest mem_mb a job of the tiny workflow asks for; a smaller node would reject it.
TINY_MAX_MEM_MB = 8000
# The executor plugin strips SLURM_CONF before its nested `srun`, which then reads the
# default path: the test cluster's slurm.conf is copied there while it runs.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# multirun test cluster (tests/services.py); removed when the tests end"


def missing_programs(*names: str) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


def slurm_unavailable() -> str | None:
    """Why a local SLURM cannot be started here, or None when it can."""
    missing = missing_programs(*SLURM_PROGRAMS)
    if missing:
        return f"SLURM programs missing ({', '.join(missing)}): {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "a local SLURM needs root (slurmd starts jobs as their user)"
    if SYSTEM_CONF.exists() and MARKER not in SYSTEM_CONF.read_text(errors="replace"):
        return f"{SYSTEM_CONF} belongs to a configured SLURM; not replacing it"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line(min_mem_mb: int = TINY_MAX_MEM_MB) -> str:
    """This host as a slurm.conf node line (`slurmd -C`: its real CPUs and memory).

    On a host with less memory than the largest job asks for, the node claims
    min_mem_mb (and slurm.conf gets SlurmdParameters=config_overrides) so jobs fit.
    """
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    mem = int(re.search(r"RealMemory=(\d+)", line).group(1))
    if mem < min_mem_mb:
        line = line.replace(f"RealMemory={mem}", f"RealMemory={min_mem_mb}")
    return line


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} missing)"


@dataclass
class SlurmCluster:
    """munged, slurmctld and slurmd of a private one-node cluster, all under ``root``.

    Partitions: ``cpu`` (the default) and ``gpu``, both on this host. The node declares
    one GRES gpu backed by /dev/null, so that sbatch --gpus=1 is accepted and a test can
    check which partition each job ran in; jobs still run on the CPU (no CUDA device).
    No accounting: sacct does not work here, squeue does.
    """

    root: Path
    env: dict = field(default_factory=dict)
    procs: list = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def write_config(self) -> None:
        r = self.root
        for sub in ("etc", "munge", "run", "state", "spool", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "run", 0o755)  # munged wants its socket directory searchable by all
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        node = node_line()
        name = re.match(r"NodeName=(\S+)", node).group(1)
        overrides = "" if f"RealMemory={TINY_MAX_MEM_MB}" not in node else (
            "SlurmdParameters=config_overrides\n")
        self.conf.write_text(f"""\
{MARKER}
ClusterName=multirun-test
SlurmctldHost={name}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/run/munge.socket
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
ReturnToService=2
GresTypes=gpu
{overrides}{node} NodeAddr=127.0.0.1 Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes={name} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={name} MaxTime=INFINITE State=UP
""")
        (r / "etc" / "gres.conf").write_text(f"NodeName={name} Name=gpu File=/dev/null\n")
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.conf, SYSTEM_CONF)

    def _daemon(self, *cmd: str) -> None:
        log = open(self.root / "log" / f"{Path(cmd[0]).name}.out", "ab")  # noqa: SIM115
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env))

    def start(self, timeout: float = 90) -> None:
        r = self.root
        self._daemon("munged", "--foreground", f"--socket={r}/run/munge.socket",
                     f"--key-file={r}/munge/munge.key", f"--pid-file={r}/run/munged.pid",
                     f"--seed-file={r}/munge/munged.seed", f"--log-file={r}/log/munged.log")
        self._wait(lambda: (r / "run" / "munge.socket").exists(), 20, "munged")
        self._daemon("slurmctld", "-D")
        self._wait(lambda: self._run("sinfo", "-h").returncode == 0, 30, "slurmctld")
        self._daemon("slurmd", "-D")
        self._wait(self.idle, timeout, "slurmd (node idle)")

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env)

    def idle(self) -> bool:
        states = self._run("sinfo", "-h", "-N", "-o", "%T").stdout.split()
        return bool(states) and all(s == "idle" for s in states)

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                break
            if ready():
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {p.name}\n{_tail(p)}" for p in sorted((self.root / "log").iterdir()))
        raise RuntimeError(f"local SLURM: {what} did not come up (exited: {dead})\n{logs}")

    def jobs(self) -> list[dict]:
        """Every job slurmctld still knows (finished ones for MinJobAge seconds)."""
        keys = ("id", "state", "partition", "cpus", "account", "gpus", "comment")
        fields = ("JobID:20", "State:20", "Partition:20", "NumCPUs:8", "Account:40",
                  "tres-per-job:40", "Comment:300")
        out = self._run("squeue", "--states=all", "--noheader", "-O", ",".join(fields)).stdout
        return [dict(zip(keys, line.split(), strict=True)) for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        """Stop the daemons this object started (slurmd first), newest first."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        if SYSTEM_CONF.exists() and MARKER in SYSTEM_CONF.read_text(errors="replace"):
            SYSTEM_CONF.unlink()


def start_slurm() -> SlurmCluster:
    """A running private cluster in a fresh directory under /tmp (short socket paths)."""
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="multirun-slurm-")))
    cluster.write_config()
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def render_page(html: Path, workdir: Path, *, screenshot: Path | None = None,
                budget_ms: int = 15000, size: str = "1400,1000") -> str:
    """The DOM of a local HTML file after its JavaScript ran, in headless Chromium.

    With ``screenshot`` also writes a PNG of the page. Offline flags: no network
    services, no first-run, a fresh profile in ``workdir``.
    """
    browser = chromium()
    if browser is None:
        raise RuntimeError(f"chromium missing: {INSTALL_HINT}")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={workdir / 'profile'}",
             f"--window-size={size}", f"--virtual-time-budget={budget_ms}"]
    url = html.resolve().as_uri()
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True,
                       text=True, timeout=120, check=True)
    proc = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                          timeout=120, check=True)
    return proc.stdout

"""A warm interpreter for the test suite: Python processes started as forks of a process
that has already imported torch, numpy, matplotlib and Snakemake (docs/testing.md).

Each job of a tiny workflow spends 3-5 s of CPU importing torch and each ``snakemake``
start 2-3 s importing Snakemake, before any work: most of the suite's time. Under the suite
(``tests/conftest.py`` starts one server per pytest process), a Python process that is a
Snakemake script job (``python .../.snakemake/scripts/tmpXXXX.name.py``) or a ``python -m
snakemake`` run hands itself to this server at start-up (``tests/warm/sitecustomize.py``):
it sends its argv, working folder, environment, ``sys.path``, resource limits and its
stdin/stdout/stderr, and the server forks a *worker* that runs the same script or module
with all of them, as the fresh process would have, except that the imports are done. The
started process waits and exits as the worker did (its exit code, or the same signal);
signals sent to it reach the worker, and if it dies the worker is killed.

Nothing of the workflow or the library is imported here, only third-party packages of the
same interpreter (``PRELOAD``), so a worker imports this checkout's ``multirun`` (or another checkout's,
by its ``sys.path``) afresh. A process the server does not serve (another interpreter, a
server not yet ready or gone) simply starts cold, as without the server.

    python tests/warm/warmstart.py SOCKET PARENT_PID

exits when the parent process does.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import select
import signal
import socket
import struct
import sys
import types

# What the jobs import that costs most (CPU s on the 2-core Zen 3): torch 3.5-5, Snakemake
# 2.6, torch._dynamo 3.2 (every forward-over-reverse HVP), scipy.stats 1.2, matplotlib.pyplot
# 0.8 (every figure), scikit-learn 0.7, scipy.sparse.linalg 0.4; then what a `snakemake` run
# imports past its command line (0.25 s of the 1.0-1.2 s of a served dry run of the tiny config).
PRELOAD = ("numpy", "torch", "yaml", "matplotlib", "snakemake.cli", "snakemake.script",
           "matplotlib.pyplot", "torch._dynamo", "scipy.stats", "scipy.sparse.linalg",
           "sklearn.linear_model", "snakemake.api", "snakemake.workflow", "snakemake.dag",
           "snakemake.parser", "snakemake.report", "snakemake.profiles", "snakemake.storage",
           "smart_open", "requests", "nbformat", "docutils.core", "jinja2", "jsonschema",
           "fastjsonschema", "pygments", "yte", "dpath", "platformdirs",
           "snakemake_executor_plugin_slurm")
LIMITS = ("RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_CPU",
          "RLIMIT_CORE", "RLIMIT_STACK")
# Read once when an interpreter starts: a process whose values differ starts cold.
STARTUP_ENV = ("PYTHONWARNINGS", "PYTHONHASHSEED", "PYTHONOPTIMIZE", "PYTHONDONTWRITEBYTECODE",
               "PYTHONUTF8", "PYTHONIOENCODING", "PYTHONUNBUFFERED", "PYTHONDEVMODE",
               "PYTHONFAULTHANDLER", "PYTHONTRACEMALLOC", "PYTHONSAFEPATH", "LANG", "LC_ALL",
               "LC_CTYPE", "MKL_CBWR")
# Read by OpenMP and OpenBLAS when torch and numpy load (the server sets 1): a worker
# whose values differ (Snakemake sets them to each job's threads) sets those pools' sizes as
# its own start would have (threadpoolctl; torch.set_num_threads).
THREADS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)


def send(conn: socket.socket, obj, fds: list[int] = ()) -> None:
    """One message: a length-prefixed pickle, with file descriptors attached."""
    data = pickle.dumps(obj)
    socket.send_fds(conn, [struct.pack("!I", len(data)) + data], list(fds))


def receive(conn: socket.socket, max_fds: int = 0):
    """(object, fds) of one :func:`send`, or (None, []) when the other side has gone."""
    head, fds, _, _ = socket.recv_fds(conn, 4, max_fds)
    if len(head) < 4:
        return None, fds
    size, = struct.unpack("!I", head)
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None, fds
        data += chunk
    return pickle.loads(data), fds


def serve(path: str, parent: int) -> dict:
    """Accept requests until the parent exits; returns only in a worker, with its request."""
    os.environ.update(THREADS_ENV)  # before numpy and torch load their thread pools
    for name in PRELOAD:
        __import__(name)
    sys.stdout.flush()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".new")
    os.rename(path + ".new", path)  # clients see the socket only once it listens
    listener.listen(64)
    listener.settimeout(0.5)
    supervisors = 0
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            conn = None
        while supervisors and os.waitpid(-1, os.WNOHANG)[0]:  # reaped: their CPU (their
            supervisors -= 1  # workers' included) adds to ours, and to the suite's in the end
        if conn is None:
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            listener.close()
            return _supervise(conn)
        supervisors += 1
        conn.close()
    sys.exit(0)


def _supervise(conn: socket.socket) -> dict:
    """In a fork per request: fork the worker (returning its request in it), then wait for
    it or for the client to go, and send the client the worker's wait status."""
    request, fds = receive(conn, max_fds=3)
    if (request is None or len(fds) != 3 or request["executable"] != sys.executable
            or any(request["env"].get(k) != os.environ.get(k) for k in STARTUP_ENV)):
        send(conn, 0)  # not ours to serve: the client starts cold
        os._exit(0)
    pid = os.fork()
    if pid == 0:
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        return request
    for fd in fds:
        os.close(fd)
    send(conn, pid)
    try:
        watch, poll = [conn, os.pidfd_open(pid)], None  # readable when the worker ends
    except (AttributeError, OSError):  # a kernel before 5.3: look every 0.1 s
        watch, poll = [conn], 0.1
    while True:
        ready, _, _ = select.select(watch, [], [], poll)
        if conn in ready and not conn.recv(1):  # the client died: so does its worker
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            send(conn, status)
            os._exit(0)


def run(request: dict) -> None:
    """Become the process the client would have been, and run its script or module."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    for name, limits in request["limits"].items():
        resource.setrlimit(getattr(resource, name), limits)
    for number in request["ignored"]:
        signal.signal(number, signal.SIG_IGN)
    _thread_pools(request["env"])
    argv = request["argv"]
    sys.orig_argv = [sys.executable, *argv]
    first = request["cwd"] if argv[0] == "-m" else os.path.dirname(os.path.abspath(argv[0]))
    sys.path[:] = [first, *request["path"]]
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    if argv[0] == "-m":
        import runpy

        sys.argv = argv[1:]
        runpy._run_module_as_main(argv[1])  # what `python -m` does, in the new __main__
        return
    sys.argv = list(argv)
    main.__file__ = argv[0]
    with open(argv[0], "rb") as f:
        code = compile(f.read(), argv[0], "exec")
    exec(code, vars(main))  # noqa: S102 (the script the client was started to run)


def _thread_pools(env: dict) -> None:
    """Size OpenBLAS's and OpenMP's pools (torch's too) as a process started with ``env``
    would: a variable's value, or one thread per core where it is unset."""
    if all(env.get(k) == v for k, v in THREADS_ENV.items()):
        return
    import torch
    from threadpoolctl import threadpool_limits

    def count(*names: str) -> int:
        return next((int(env[n]) for n in names if env.get(n)), os.cpu_count() or 1)

    threadpool_limits(count("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"), user_api="blas")
    threadpool_limits(count("OMP_NUM_THREADS"), user_api="openmp")
    torch.set_num_threads(count("OMP_NUM_THREADS"))


def finish(request: dict) -> None:
    """Run the request and end as the interpreter would (atexit handlers, threads joined,
    the output flushed, the exit code of SystemExit or 1 after a traceback), but with
    ``os._exit``: tearing down torch's modules in a fork costs 2 s, copying every page."""
    try:
        run(request)
        code = 0
    except SystemExit as err:  # as the interpreter reads it: None 0, a number, else 1
        code = 0 if err.code is None else err.code if isinstance(err.code, int) else 1
        if code == 1 and not isinstance(err.code, int):
            print(err.code, file=sys.stderr)
    except BaseException as err:
        sys.excepthook(type(err), err, err.__traceback__)
        code = 1
        if isinstance(err, KeyboardInterrupt):
            code = -signal.SIGINT
    import atexit
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code < 0:  # as Python ends after an uncaught KeyboardInterrupt: by the signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def client(path: str) -> None:
    """In a process just started (from sitecustomize): have the server run it, then exit
    as its worker did. Returns (the process then starts cold) where the server does not
    answer or declines."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        umask = os.umask(0)
        os.umask(umask)
        send(conn, {
            "executable": sys.executable, "argv": sys.orig_argv[1:], "cwd": os.getcwd(),
            "env": dict(os.environ), "path": list(sys.path), "umask": umask,
            "limits": {name: resource.getrlimit(getattr(resource, name)) for name in LIMITS},
            "ignored": [n for n in signal.valid_signals()
                        if n not in (signal.SIGKILL, signal.SIGSTOP)
                        and signal.getsignal(n) == signal.SIG_IGN and n != signal.SIGPIPE],
        }, [0, 1, 2])
        pid, _ = receive(conn)
    except OSError:  # no server (yet, or any more), or a closed stdin/stdout/stderr
        conn.close()
        return
    if not pid:
        conn.close()
        return
    for number in FORWARDED:
        signal.signal(number, lambda number, _frame: os.kill(pid, number))
    status, _ = receive(conn)
    if status is None:  # the server died under the worker
        print(f"warmstart: the server at {path} went away", file=sys.stderr)
        os._exit(70)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    finish(serve(sys.argv[1], int(sys.argv[2])))

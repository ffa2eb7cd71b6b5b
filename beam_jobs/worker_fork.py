"""Beam worker processes forked from a copy of the driver that has already imported Beam and the job.

A fresh Beam worker process spends about 0.7 s before its first element (the interpreter, Beam's
imports, the job's modules), and the local runner starts its workers at the start of the run, so
every local run with worker processes waits that long (one CommonCrawl WARC file takes about 0.7 s).
Here the driver forks one server process before the run, after its own imports and before any gRPC
channel or thread of the run exists. The runner's worker command (`worker_fork_client.py`, the
standard library only: about 20 ms) hands its environment and standard streams to the server,
which forks a worker that runs Beam's own harness (`sdk_worker_main.main`) with them; the client
exits with the worker's exit status, as the runner expects of its worker command. The server exits
when the driver does (its end of a pipe closes).

Only for the local runner (`beam_jobs/common.py:local_runner`) on a POSIX system; any other runner
starts its workers itself.
"""
from __future__ import annotations

import functools
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback
import uuid

_CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_fork_client.py")


@functools.cache  # one server per driver process, for all its runs
def worker_command() -> str | None:
    """The worker command for Beam's SubprocessSDKEnvironment (None where fork is unavailable)."""
    if not sys.platform.startswith("linux"):
        return None
    # An abstract socket (Linux): no file to leave behind when the run is killed.
    name = f"corpusmill-workers-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    listener.listen(64)
    from apache_beam.runners.worker import sdk_worker_main  # noqa: F401  (imported once, here)
    # The driver keeps the pipe's write end open until it exits (never closed here): its end is
    # what tells the server to go.
    driver_alive, _keep = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()  # the forked processes' collections leave the driver's objects (and their pages) alone
    if os.fork() == 0:
        os.close(_keep)
        _serve(listener, driver_alive)
    os.close(driver_alive)
    listener.close()
    return f"{sys.executable} -S {_CLIENT} {name}"


def _serve(listener: socket.socket, driver_alive: int) -> None:
    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which ends the run
        # Not the driver's standard streams: whoever reads the driver's output to its end (a pipe,
        # the CLI's filter of standard error) would wait for this process too. A worker gets the
        # streams of its client, as a worker process started by the runner would have.
        quiet = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(quiet, fd)
        os.close(quiet)
        while True:
            ready, _, _ = select.select([listener, driver_alive], [], [])
            if driver_alive in ready:
                break
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                os.close(driver_alive)
                _work(conn)
            conn.close()
    except BaseException:
        code = 1  # the driver's next worker start then fails: the run ends with Beam's error
    finally:
        os._exit(code)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    size = int.from_bytes(data[:8], "big")
    data = data[8:]
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            raise EOFError("worker client closed its connection")
        data += more
    return json.loads(data), fds


def _work(conn: socket.socket) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        start, fds = _receive(conn)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        # What a worker process started by the runner would have had: the client's environment and
        # folder (the driver's at the worker's start, not at the server's).
        os.chdir(start["cwd"])
        os.environ.clear()
        os.environ.update(start["environ"])
        from apache_beam.runners.worker import sdk_worker_main
        sdk_worker_main.main([])
        code = 0
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush(), sys.stderr.flush()
            conn.sendall(bytes([code & 0xFF]))
        finally:
            os._exit(code)

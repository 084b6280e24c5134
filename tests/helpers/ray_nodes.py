"""Real Ray nodes for tests: ``ray start --block`` on free ports with token auth, stopped by their own process ids.

Each node runs in its own session (``start_new_session``), so stopping it signals exactly the processes
that node started (the session's members), never another Ray on the machine. The head gets its own
``--temp-dir``, so its address file is not the machine's default one (a plain ``ray.init()`` elsewhere
would join a cluster it finds there).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayNodes:
    """A local Ray cluster of ``ray start`` nodes; ``env`` is what a client needs (address, token)."""

    def __init__(self) -> None:
        token = uuid.uuid4().hex
        # short: Ray's unix socket paths live under the temp dir
        self.temp_dir = tempfile.mkdtemp(prefix="vaR", dir="/tmp")
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
                    # a raylet waits this long for its agents (Python processes, slow to start on busy cores)
                    "RAY_agent_register_timeout_ms": "120000", "RAY_raylet_start_wait_time_s": "120"}
        self.env.pop("RAY_ADDRESS", None)
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.address: str | None = None
        self.dashboard: str | None = None

    def _ports(self) -> list[str]:
        names = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                 "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
        return [f"--{name}={free_port()}" for name in names]

    def _start(self, args: list[str], wrap: list[str] | None = None, attempts: int = 3) -> None:
        """``ray start`` a node; on busy cores its Python agents can miss Ray's fixed 30 s start-up window: retry."""
        for attempt in range(attempts):
            try:
                return self._start_once(args, wrap)
            except RuntimeError:
                if attempt == attempts - 1:
                    raise

    def _start_once(self, args: list[str], wrap: list[str] | None, timeout: float = 180,
                    ready: Callable[[str], bool] | None = None) -> None:
        """Start a node and wait until ``ready(log text)`` (default: Ray says its runtime started)."""
        ready = ready or (lambda text: STARTED in text)
        log = Path(self.temp_dir) / f"node{len(self.procs)}.log"
        cmd = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats",
               "--object-store-memory=150000000", *self._ports(), *args]
        if wrap:  # e.g. a private mount namespace: ["unshare", "-m", ..., "sh", "-c", "... exec \"$@\"", "sh"]
            cmd = [*wrap, *cmd]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log)
        deadline = time.monotonic() + timeout
        while not ready(log.read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text()[-4000:]
                self._stop_one(self.procs.pop())
                self.logs.pop()
                raise RuntimeError(f"ray start failed ({' '.join(cmd)}):\n{text}")
            time.sleep(0.5)

    def start_head(self, num_cpus: int, num_gpus: int = 0, dashboard: bool = False, name: str = "head") -> str:
        """Start the head; return its GCS address (host:port)."""
        self._start(self._head_args(num_cpus, num_gpus, dashboard, name))
        # the head's own record of its address (its IP as Ray detected it)
        self.address = (Path(self.temp_dir) / "ray_current_cluster").read_text().strip()
        return self.address

    def start_head_until_jobs_answer(self, num_cpus: int, timeout: float = 180) -> None:
        """Start a head with a dashboard and return as soon as its job server answers HTTP, which is before
        the node's job agent is up (what a script meets right after ``ray start --head``)."""
        args = self._head_args(num_cpus, 0, True, "head")

        def answers(_: str) -> bool:
            try:
                urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=1)
            except urllib.error.HTTPError:
                return True  # it answered (e.g. 401 without a token)
            except OSError:
                return False
            return True

        self._start_once(args, None, timeout, ready=answers)

    def _head_args(self, num_cpus: int, num_gpus: int, dashboard: bool, name: str) -> list[str]:
        port, dash = free_port(), free_port()
        self.dashboard = f"http://127.0.0.1:{dash}"
        return ["--head", f"--port={port}", f"--dashboard-port={dash}",
                f"--ray-client-server-port={free_port()}", f"--temp-dir={self.temp_dir}",
                f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", f"--node-name={name}",
                f"--include-dashboard={'true' if dashboard else 'false'}"]

    def add_node(self, num_cpus: int, num_gpus: int = 0, name: str = "worker", wrap: list[str] | None = None) -> None:
        """Join a worker node (``ray start --address``), optionally started through ``wrap``."""
        assert self.address, "start the head first"
        self._start([f"--address={self.address}", f"--num-cpus={num_cpus}",
                     f"--num-gpus={num_gpus}", f"--node-name={name}"], wrap=wrap)

    def stop(self) -> None:
        """Stop every process these nodes started (their sessions), worker nodes first, then the head."""
        for proc in reversed(self.procs):
            self._stop_one(proc)
        self.procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


    @staticmethod
    def _stop_one(proc: subprocess.Popen) -> None:
        sid = proc.pid  # session leader: start_new_session
        members = [p for p in psutil.process_iter() if _sid(p) == sid]
        for p in members:
            _signal(p, signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=15)
        for p in alive + [p for p in psutil.process_iter() if _sid(p) == sid]:
            _signal(p, signal.SIGKILL)
        proc.wait(timeout=15)


def _sid(proc: psutil.Process) -> int | None:
    try:
        return os.getsid(proc.pid)
    except (ProcessLookupError, PermissionError):
        return None


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def unshare_hiding(folder: Path) -> list[str] | None:
    """A ``wrap`` that starts a node in a private mount namespace where ``folder`` is an empty tmpfs.

    That node (and every worker it spawns) sees ``folder`` empty while the rest of the machine sees its
    files: the case of a node whose storage lacks a path. None when mount namespaces are not allowed here.
    """
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs none '{folder}'"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f"mount -t tmpfs none '{folder}' && exec \"$@\"", "sh"]

"""Helpers for programs that start Kamailio, SIPp and redis-server on this
host: the demo (``approute.demo``), the end-to-end tests and the benchmarks.

Everything is on 127.0.0.1, on ports free when asked for; each process runs
in a session of its own and is stopped by its pid (and its process group,
for Kamailio's workers), never by name."""

from __future__ import annotations

import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Set, Tuple, TypeVar

LOCAL = "127.0.0.1"

T = TypeVar("T")

_handed_out: Set[int] = set()


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port on 127.0.0.1 free now for ``kind`` (SOCK_DGRAM: UDP,
    SOCK_STREAM: TCP), never one this process handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((LOCAL, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out and port > 1024:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port on %s" % LOCAL)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 (see free_port)."""
    return free_port(socket.SOCK_DGRAM)


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 (see free_port)."""
    return free_port(socket.SOCK_STREAM)


class WaitTimeout(AssertionError):
    """wait_for() gave up (an AssertionError: a test that waits fails as such)."""


def wait_for(pred: Callable[[], T], timeout: float, interval: float = 0.05,
             what: str = "condition") -> T:
    """pred()'s first true value, asked every ``interval`` seconds; WaitTimeout
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise WaitTimeout("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def sip_options(port: int, timeout: float = 0.3, host: str = LOCAL) -> Optional[str]:
    """Sends one OPTIONS to the SIP server at host:port (UDP); returns the
    status line of its answer, or None when none came within ``timeout``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((LOCAL, 0))
            s.settimeout(timeout)
            lport = s.getsockname()[1]
            cid = uuid.uuid4().hex
            msg = ("OPTIONS sip:%s:%d SIP/2.0\r\n"
                   "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s\r\n"
                   "From: <sip:probe@%s>;tag=%s\r\n"
                   "To: <sip:%s:%d>\r\n"
                   "Call-ID: %s\r\n"
                   "CSeq: 1 OPTIONS\r\n"
                   "Max-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n"
                   % (host, port, LOCAL, lport, cid[:16], LOCAL, cid[:8], host, port, cid))
            s.sendto(msg.encode(), (host, port))
            data, _ = s.recvfrom(65535)
        except OSError:  # socket.timeout is an OSError
            return None
    return data.decode(errors="replace").split("\r\n", 1)[0]


class Proc:
    """A child process started here, in a session of its own (its pgid is
    its pid); its output goes to ``log``.  stop() ends it by pid, then its
    process group (workers left behind by a main process that died first)."""

    def __init__(self, name: str, argv: Sequence[str], log: Path,
                 env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None):
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._logf = open(log, "ab")
        self.p = subprocess.Popen(
            self.argv, stdout=self._logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True)
        self.pid = self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Optional[int]:
        """Sends ``sig`` (the process is continued first, should it be
        stopped), waits up to ``timeout`` seconds, then kills the group.
        Returns the exit status."""
        if self.p.poll() is None:
            for s in (signal.SIGCONT, sig):
                try:
                    os.kill(self.pid, s)
                except ProcessLookupError:
                    break
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)  # our own session: pgid == pid
                except ProcessLookupError:
                    pass
                self.p.wait(timeout=5)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._logf.close()
        return self.p.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL, timeout=5)


def start_redis(workdir: Path, binary: Optional[str] = None,
                timeout: float = 5.0) -> Tuple[Proc, str]:
    """A redis-server on a free loopback TCP port, its files in ``workdir``
    (no persistence); returns it and its URL once it accepts connections.
    FileNotFoundError without redis-server, RuntimeError when it does not
    come up (it is stopped then)."""
    binary = binary or shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not found (apt-get install redis-server)")
    port = free_tcp_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", LOCAL, "--dir", str(workdir), "--save", "",
            "--appendonly", "no", "--loglevel", "warning"]
    proc = Proc("redis", argv, workdir / "redis.out")

    def up() -> bool:
        try:
            socket.create_connection((LOCAL, port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        wait_for(lambda: up() or not proc.alive(), timeout, interval=0.02, what="redis-server")
    except WaitTimeout:
        pass
    if not up():
        proc.stop()
        raise RuntimeError("redis-server did not start on port %d (see %s)"
                           % (port, workdir / "redis.out"))
    return proc, "redis://%s:%d/0" % (LOCAL, port)



def site_dirs() -> str:
    """Where an embedded interpreter (Kamailio's app_python3) finds this
    approute package and its dependencies: for APPROUTE_SITE_DIRS of
    examples/kamailio/approute_handler.py (os.pathsep separated)."""
    dirs: List[str] = [str(Path(__file__).resolve().parent.parent)]
    try:
        dirs.extend(site.getsitepackages())
    except AttributeError:  # pragma: no cover - some virtualenv layouts
        pass
    dirs.extend(p for p in sys.path if p.endswith("site-packages"))
    out: List[str] = []
    for d in dirs:
        if d and os.path.isdir(d) and d not in out:
            out.append(d)
    return os.pathsep.join(out)

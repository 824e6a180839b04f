"""approute._procs: the process and port helpers of the demo, the e2e tests and the benches."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import pytest
from approute import _procs


def test_free_ports_are_free_and_never_handed_out_twice() -> None:
    ports = [_procs.free_udp_port() for _ in range(20)] + [_procs.free_tcp_port() for _ in range(5)]
    assert len(set(ports)) == len(ports)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((_procs.LOCAL, ports[0]))  # still free


def test_proc_runs_in_its_own_session_and_stops_by_pid(tmp_path: Path) -> None:
    p = _procs.Proc("sleeper", [sys.executable, "-c", "import time; print('up', flush=True); "
                                "time.sleep(60)"], tmp_path / "sleeper.out")
    assert p.alive()
    _procs.wait_for(lambda: "up" in (tmp_path / "sleeper.out").read_text(), 10, what="sleeper output")
    assert os.getpgid(p.pid) == p.pid  # its own group: stop() can reach its children
    os.kill(p.pid, signal.SIGSTOP)  # a stopped process is continued, then terminated
    assert p.stop(timeout=10) == -signal.SIGTERM
    assert not p.alive()


def test_wait_for_returns_the_value_or_fails_as_an_assertion() -> None:
    assert _procs.wait_for(lambda: 42, 1) == 42
    with pytest.raises(AssertionError, match="timed out after 0.1s waiting for nothing"):
        _procs.wait_for(lambda: None, 0.1, interval=0.02, what="nothing")


def test_sip_options_without_a_server_is_none() -> None:
    assert _procs.sip_options(_procs.free_udp_port(), timeout=0.1) is None


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_start_redis_answers_and_stops(tmp_path: Path) -> None:
    proc, url = _procs.start_redis(tmp_path / "redis")
    try:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection((_procs.LOCAL, port), timeout=2) as c:
            c.sendall(b"PING\r\n")
            assert c.recv(16) == b"+PONG\r\n"
    finally:
        proc.stop()
    assert not proc.alive()

"""The node agent against a fake Asterisk: what it publishes when Asterisk's
Manager refuses CoreStatus (a missing permission), when Asterisk is down
(no Manager, no control socket) and when it comes back; one Manager session
kept across reports.

The Manager is a real TCP server speaking the AMI text protocol (the banner,
``Action:`` blocks, responses with the ActionID); the proxy is the fake
proxy of test_agent.py, so each PUBLISH is read as it went on the wire.
"""

from __future__ import annotations

import logging
import random
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

pytest.importorskip("approute.agent")
from approute._procs import free_tcp_port  # noqa: E402
from approute.agent import (  # noqa: E402
    Agent,
    AgentError,
    AmiClient,
    AsteriskUnreachable,
    Collector,
    read_channels,
)
from test_agent import FakeProxy, Signer, config, write_fake_proc  # noqa: E402


class FakeManager:
    """An Asterisk Manager Interface on 127.0.0.1.  ``calls`` is the
    CoreCurrentCalls it answers; ``permission=False`` answers CoreStatus as
    Asterisk does for a user without `write = system|reporting`.  stop()
    closes the port and every session (Asterisk stopped); start() opens the
    same port again."""

    def __init__(self, calls: int = 7, permission: bool = True):
        self.calls = calls
        self.permission = permission
        self.port = 0
        self.actions: List[Dict[str, str]] = []
        self.connections = 0
        self._srv: Optional[socket.socket] = None
        self._conns: List[socket.socket] = []
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(4)
        self.port = srv.getsockname()[1]
        self._srv = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            srv, conns, self._srv, self._conns = self._srv, self._conns, None, []
        for s in [srv] + conns:
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def actions_named(self, name: str) -> List[Dict[str, str]]:
        return [a for a in self.actions if a.get("Action") == name]

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(c)
                self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        try:
            f = c.makefile("rb")
            c.sendall(b"Asterisk Call Manager/9.0.0\r\n")
            authed = False
            while True:
                block: Dict[str, str] = {}
                while True:
                    line = f.readline()
                    if not line:
                        return
                    text = line.decode().rstrip("\r\n")
                    if not text:
                        break
                    k, _, v = text.partition(":")
                    block[k.strip()] = v.strip()
                if not block:
                    continue
                self.actions.append(block)
                aid = block.get("ActionID", "")
                act = block.get("Action", "")
                if act == "Login":
                    authed = block.get("Secret") == "p"
                    out = ("Response: Success\r\nActionID: %s\r\nMessage: Authentication accepted"
                           % aid) if authed else (
                        "Response: Error\r\nActionID: %s\r\nMessage: Authentication failed" % aid)
                    c.sendall(b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: ok\r\n\r\n")
                    c.sendall((out + "\r\n\r\n").encode())
                elif act == "CoreStatus" and authed and self.permission:
                    c.sendall(("Response: Success\r\nActionID: %s\r\nCoreStartupDate: 2026-12-07\r\n"
                               "CoreReloadTime: 17:00:00\r\nCoreCurrentCalls: %d\r\n\r\n"
                               % (aid, self.calls)).encode())
                elif act == "CoreStatus":
                    c.sendall(("Response: Error\r\nActionID: %s\r\nMessage: Permission denied\r\n\r\n"
                               % aid).encode())
                elif act == "Logoff":
                    c.sendall(("Response: Goodbye\r\nActionID: %s\r\nMessage: Thanks for all the "
                               "fish.\r\n\r\n" % aid).encode())
                    return
        except OSError:
            return
        finally:
            c.close()


@pytest.fixture
def fake_proc(tmp_path):
    return write_fake_proc(tmp_path)


@pytest.fixture
def proxy():
    p = FakeProxy()
    yield p
    p.close()


@pytest.fixture
def manager():
    made: List[FakeManager] = []

    def make(**kw) -> FakeManager:
        m = FakeManager(**kw)
        made.append(m)
        return m
    yield make
    for m in made:
        m.stop()


def ami_channels(port: int) -> Dict[str, Any]:
    return {"source": "ami", "timeout": 1,
            "ami": {"host": "127.0.0.1", "port": port, "username": "approute", "secret": "p"}}


def real_agent(proxy_port: int, tmp_path: Path, channels: Dict[str, Any]) -> Agent:
    """An Agent with the real Collector (figures from the fake /proc and the
    channel source), a fake signer and the fake proxy."""
    cfg = config(proxy_port, tmp_path, channels=channels)
    return Agent(cfg, sign=Signer(), rng=random.Random(3))


# --------------------------------------------------------------------------
# one Manager session

def test_one_ami_session_is_kept_across_reports_and_renewed_after_a_restart(manager):
    m = manager(calls=4)
    client = AmiClient("127.0.0.1", m.port, "approute", "p", timeout=1)
    try:
        assert client.core_status() == {"channels": 4.0}
        m.calls = 5
        assert client.core_status() == {"channels": 5.0}
        assert m.connections == 1 and len(m.actions_named("Login")) == 1
        assert m.actions_named("Login")[0]["Events"] == "off"
        assert len(m.actions_named("CoreStatus")) == 2 and not m.actions_named("Logoff")
        m.stop()  # Asterisk restarts: the kept session is gone
        m.start()
        assert client.core_status() == {"channels": 5.0}
        assert m.connections == 2 and len(m.actions_named("Login")) == 2
    finally:
        client.close()
    assert len(m.actions_named("Logoff")) == 1


def test_ami_errors_tell_down_from_refused(manager):
    m = manager(permission=False)
    with pytest.raises(AgentError, match="write = reporting") as e:
        AmiClient("127.0.0.1", m.port, "approute", "p", timeout=1).core_status()
    assert not isinstance(e.value, AsteriskUnreachable)  # Asterisk answered
    with pytest.raises(AgentError, match="login refused") as e:
        AmiClient("127.0.0.1", m.port, "approute", "wrong", timeout=1).core_status()
    assert not isinstance(e.value, AsteriskUnreachable)
    with pytest.raises(AsteriskUnreachable):
        AmiClient("127.0.0.1", free_tcp_port(), "approute", "p", timeout=1).core_status()


# --------------------------------------------------------------------------
# what the agent publishes

def test_corestatus_refused_publishes_the_report_without_channels_and_says_why_once(
        proxy, manager, tmp_path, fake_proc, caplog):
    p = proxy
    m = manager(permission=False)
    a = real_agent(p.port, tmp_path, ami_channels(m.port))
    try:
        with caplog.at_level(logging.DEBUG, logger="approute.agent"):
            a.step()
            a.step()
        bodies = [q.report() for q in p.requests if q.body]
        assert bodies, "the report still goes"
        assert all("channels" not in b["load"] and "mem" in b["load"] for b in bodies)
        assert all("health" not in b for b in bodies), "Asterisk answers: the node stays up"
        assert all(q.h("expires") == "5" for q in p.requests)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "Permission denied" in errors[0].getMessage()
        assert "write = reporting" in errors[0].getMessage()
        assert m.connections == 1 and len(m.actions_named("Login")) == 1
    finally:
        a.close()
    assert len(m.actions_named("Logoff")) == 1, "close() ends the session"


def test_asterisk_down_publishes_health_down_then_up_when_it_answers_again(
        proxy, manager, tmp_path, fake_proc, caplog):
    p = proxy
    m = manager(calls=3)
    a = real_agent(p.port, tmp_path, ami_channels(m.port))
    try:
        a.step()
        assert p.requests[-1].report()["load"]["channels"] == 3
        assert "health" not in p.requests[-1].report()

        m.stop()  # Asterisk stopped: the next report, one interval later, says so
        with caplog.at_level(logging.INFO, logger="approute.agent"):
            a.step()
        down = p.requests[-1]
        assert down.body, "a modify with the figures, not a bodyless refresh"
        assert down.report()["health"] == "down"
        assert "channels" not in down.report()["load"]
        assert down.h("expires") == "5", "not a leave: the lease is renewed"
        assert down.h("sip-if-match") == "et1"
        assert any("cannot reach Asterisk" in r.getMessage() for r in caplog.records)

        a.step()  # still down: the node stays a member, still down
        assert p.requests[-1].h("expires") == "5"
        assert all(q.report()["health"] == "down" for q in p.requests[1:] if q.body)

        m.start()
        with caplog.at_level(logging.INFO, logger="approute.agent"):
            a.step()
        back = p.requests[-1]
        assert "health" not in back.report() and back.report()["load"]["channels"] == 3
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        a.close()


def test_asterisk_source_down_publishes_health_down(proxy, tmp_path, fake_proc):
    """`source: asterisk` with its `command:` (how a non-default -C config is
    given): `asterisk -rx` exits 1 when no Asterisk listens on the control
    socket."""
    p = proxy
    flag = tmp_path / "up"
    script = tmp_path / "fake-asterisk"
    script.write_text(
        "import os, sys\n"
        "if not os.path.exists(%r):\n"
        "    sys.stderr.write('Unable to connect to remote asterisk (does "
        "/var/run/asterisk/asterisk.ctl exist?)\\n')\n"
        "    sys.exit(1)\n"
        "print('12 active channels\\n4 active calls')\n" % str(flag))
    channels = {"source": "asterisk",
                "command": [sys.executable, str(script), "-C", "/etc/asterisk-b/asterisk.conf",
                            "-rx", "core show channels count"]}
    a = real_agent(p.port, tmp_path, channels)
    try:
        a.step()
        assert p.requests[-1].report()["health"] == "down"
        flag.write_text("")
        a.step()
        r = p.requests[-1].report()
        assert "health" not in r and r["load"]["channels"] == 12
    finally:
        a.close()


def test_a_failing_generic_command_is_not_a_dead_asterisk(tmp_path, fake_proc):
    cfg = config(5060, tmp_path, channels={"source": "command", "command": "false"})
    with pytest.raises(AgentError) as e:
        read_channels(cfg.channels)
    assert not isinstance(e.value, AsteriskUnreachable)
    report = Collector(cfg)()
    assert "health" not in report and "channels" not in report["load"]

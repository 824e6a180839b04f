"""The Redis ACL user that docs/cluster.md ("Hardening Redis") gives approute is
enough for two proxies to share claims, counts and admin states, and no wider
than the commands approute sends: a real redis-server started here (free
loopback port, temp dir, no persistence) with exactly the documented line,
stopped by its pid. Skipped without redis-server unless APPROUTE_REDIS_REQUIRED=1."""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Set

import pytest

import approute

ROOT = Path(__file__).resolve().parents[2]
NAME = "acltest"


def documented_acl() -> str:
    text = (ROOT / "docs/cluster.md").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("user approute on ")]
    assert len(lines) == 1, lines
    return lines[0]


def allowed_commands(acl: str) -> Set[str]:
    return {tok[1:].lower() for tok in acl.split() if tok.startswith("+")}


def script_commands() -> Set[str]:
    """What the client sends and what its Lua scripts call."""
    scripts = (ROOT / "libapproute/src/placement/cluster_scripts.h").read_text(encoding="utf-8")
    called = {m.lower() for m in re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", scripts)}
    assert {"hset", "zadd", "time"} <= called  # the pattern still finds the scripts' calls
    return called | {"evalsha", "script|load", "select"}


def test_the_documented_acl_names_every_command_approute_uses() -> None:
    acl = documented_acl()
    assert "-@all" in acl and "~{approute:prod}:*" in acl and "resetchannels" in acl
    missing = script_commands() - allowed_commands(acl)
    assert not missing, "docs/cluster.md's ACL lacks: %s" % sorted(missing)
    extra = allowed_commands(acl) - script_commands()
    assert not extra, "docs/cluster.md's ACL allows commands approute never sends: %s" % sorted(extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def start_redis(tmp_path: Path, acl_lines: List[str]) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("APPROUTE_REDIS_REQUIRED") == "1":
            pytest.fail("redis-server not found and APPROUTE_REDIS_REQUIRED=1")
        pytest.skip("redis-server not found (install redis-server)")
    port = _free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text("\n".join([
        "port %d" % port, "bind 127.0.0.1", "protected-mode yes", 'dir "%s"' % tmp_path,
        'save ""', "appendonly no", "loglevel warning", "maxmemory-policy noeviction",
        "user default off", *acl_lines]) + "\n")
    proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("redis-server did not start on port %d (config %s)" % (port, conf))
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def router_conf(url: str, proxy: str) -> str:
    return """
cluster: {redis: "%s", name: %s, proxy: %s, timeout_ms: 200}
nodes:
  - {id: a, uri: "sip:127.0.0.1:5071", pool: media, capacity: {conference: 5}}
  - {id: b, uri: "sip:127.0.0.1:5072", pool: media, capacity: {conference: 5}}
apps:
  conference: {pool: media, resource: conference, strategy: round_robin, affinity: {grace: 60}}
""" % (url, NAME, proxy)


def two_proxies(port: int, secret: str):
    url = "redis://approute:%s@127.0.0.1:%d/0" % (secret, port)
    return (approute.Router.from_yaml(router_conf(url, "kam1")),
            approute.Router.from_yaml(router_conf(url, "kam2")))


@pytest.fixture
def secret() -> str:
    return secrets.token_hex(16)


def test_two_proxies_work_with_only_the_documented_acl(tmp_path: Path, secret: str) -> None:
    acl = documented_acl().replace("{approute:prod}", "{approute:%s}" % NAME)
    acl = acl.replace(">A-LONG-RANDOM-SECRET", ">" + secret)
    with start_redis(tmp_path, [acl]) as port:
        kam1, kam2 = two_proxies(port, secret)
        d1 = kam1.route("conference", call_id="c1", key="tenant.example.com")
        d2 = kam2.route("conference", call_id="c2", key="tenant.example.com")
        assert d1.ok and d2.ok and d2.node_id == d1.node_id  # one node per key, over both
        assert kam2.node(d1.node_id).sessions.get("conference") == 2  # counts over both
        retried = kam1.retry("c1", code=503)
        assert retried.ok and retried.node_id != d1.node_id
        kam1.end("c1")
        kam2.end("c2")
        kam1.drain("b")
        deadline = time.monotonic() + 5
        while kam2.node("b").state != "draining" and time.monotonic() < deadline:
            kam2.sweep()  # applies the deployment's admin states (about once a second)
            time.sleep(0.1)
        assert kam2.node("b").state == "draining"  # an admin state set at kam1
        for r in (kam1, kam2):
            c = r.cluster()
            assert c["mode"] == "cluster" and c["failures"] == 0, c
            assert c["degraded_placements"] == 0 and sorted(c["proxies"]) == ["kam1", "kam2"], c


def test_a_user_without_a_needed_command_is_refused(tmp_path: Path, secret: str) -> None:
    # The test above can fail: the same line without TIME (which the scripts call) breaks it.
    acl = documented_acl().replace("{approute:prod}", "{approute:%s}" % NAME)
    acl = acl.replace(">A-LONG-RANDOM-SECRET", ">" + secret).replace(" +time", "")
    with start_redis(tmp_path, [acl]) as port:
        kam1, _ = two_proxies(port, secret)
        kam1.route("conference", call_id="c1", key="tenant.example.com")
        c = kam1.cluster()
        assert c["failures"] > 0 or c["degraded_placements"] > 0, c

"""A wrong Redis address does not start silently: `approute validate` connects
to cluster.redis and says what it found or the exact error, a router that
starts degraded logs a warning, `approute status` shows the degraded state
first and `approute_cluster_degraded` is 1. Against real redis-servers
(reachable, wrong port, wrong password), started here and stopped by pid."""
from __future__ import annotations

import io
import logging
import os
import re
import secrets
import uuid
from pathlib import Path
from typing import List, Tuple

import approute
from approute import cli
from approute._procs import free_tcp_port
from test_cluster import acl_args, documented_acl, redis_server


def _conf(url: str) -> str:
    return """nodes:
  - {id: a, uri: "sip:127.0.0.1:5071"}
cluster: {redis: "%s", name: checks, proxy: kam1, timeout_ms: 50}
apps:
  default: {strategy: round_robin}
""" % url


def _validate(tmp_path: Path, url: str, *flags: str) -> Tuple[int, str, str]:
    path = tmp_path / "router.yaml"
    path.write_text(_conf(url))
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["validate", str(path), *flags], out, err)
    return rc, out.getvalue(), err.getvalue()


def test_reachable_redis_is_described(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        rc, out, err = _validate(tmp_path, url)
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert rc == 0, err
        m = re.search(r"cluster\.redis (\S+): reachable, primary 127\.0\.0\.1:%s, role master, "
                      r"redis (\d+\.\d+\.\d+), maxmemory-policy (\S+), round trip \d+ us" % port, out)
        assert m, out
        assert m.group(1) == url
        assert "ok (1 nodes)" in out
        # the server's policy evicts by default: said as a warning, not an error
        if m.group(3) != "noeviction":
            assert "warning: cluster.redis: maxmemory-policy is %s" % m.group(3) in err
        check = approute.check_redis(url)
        assert check["ok"] and check["role"] == "master" and check["version"] == m.group(2)


def test_wrong_port_is_an_error_with_the_exact_cause(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:%d/0" % free_tcp_port()  # nothing listens there
    rc, out, err = _validate(tmp_path, url)
    assert rc == 1, out
    # file:line:column of the redis value, the address and the connection error
    assert re.search(r"router\.yaml:3:\d+: error: cluster\.redis: %s: redis: cannot connect to "
                     r"127\.0\.0\.1:\d+: Connection refused" % re.escape(url), err), err
    assert "ok (" not in out
    # --no-check-redis: offline checks only
    rc, out, err = _validate(tmp_path, url, "--no-check-redis")
    assert rc == 0 and "ok (1 nodes)" in out and err == "", (out, err)


def test_wrong_password_is_an_error_and_the_password_is_not_shown(tmp_path: Path) -> None:
    right = secrets.token_hex(8)
    with redis_server(tmp_path, ("--requirepass", right)) as url:
        wrong = url.replace("redis://", "redis://:not-%s@" % right)
        rc, out, err = _validate(tmp_path, wrong)
        assert rc == 1, out
        assert "AUTH" in err and ("WRONGPASS" in err or "invalid password" in err), err
        assert "not-" + right not in err + out and "redis://:***@" in err, err
        # the right one passes
        rc, out, err = _validate(tmp_path, url.replace("redis://", "redis://:%s@" % right))
        assert rc == 0 and "reachable" in out, err
        assert right not in out


def test_the_documented_acl_checks_ok_with_role_and_version_unknown(tmp_path: Path) -> None:
    secret = secrets.token_hex(16)
    acl = documented_acl().replace("{approute:prod}", "{approute:checks}").replace(
        ">A-LONG-RANDOM-SECRET", ">" + secret)
    with redis_server(tmp_path, acl_args(acl)) as url:
        rc, out, err = _validate(tmp_path, url.replace("redis://", "redis://approute:%s@" % secret))
        assert rc == 0, err
        assert "reachable" in out and "role unknown, version unknown" in out, out
        assert "ROLE not allowed to this user (ACL)" in err, err


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: List[Tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


def test_a_router_that_starts_degraded_says_so(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    url = "redis://127.0.0.1:%d/0" % free_tcp_port()
    segment = "approute-degraded-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    rec = _Records()
    log = logging.getLogger("approute")
    log.addHandler(rec)
    try:
        r = approute.Router.from_yaml(_conf(url), shared=segment)
        warned = [m for lvl, m in rec.lines if lvl == logging.WARNING]
        assert len(warned) == 1, rec.lines
        assert "cluster checks: Redis did not answer at start" in warned[0]
        assert "Connection refused" in warned[0] and "mode degraded" in warned[0], warned
        assert r.route("default", call_id="c1").ok  # it still routes, on this host's state
        c = r.cluster()
        assert c["mode"] == "degraded" and "Connection refused" in c["last_error"], c

        out, err = io.StringIO(), io.StringIO()
        assert cli.main(["status", "--shared", segment], out, err) == 0, err.getvalue()
        first = out.getvalue().splitlines()[0]
        assert first.startswith("DEGRADED: Redis is out (redis: cannot connect to"), out.getvalue()
        out = io.StringIO()
        assert cli.main(["metrics", "--shared", segment], out, err) == 0, err.getvalue()
        fam = {f.name: f for f in text_string_to_metric_families(out.getvalue())}
        assert fam["approute_cluster_degraded"].samples[0].value == 1
    finally:
        log.removeHandler(rec)
        approute.Router.unlink(segment)


def test_a_router_with_its_redis_up_starts_quietly(tmp_path: Path) -> None:
    rec = _Records()
    log = logging.getLogger("approute")
    log.addHandler(rec)
    try:
        with redis_server(tmp_path) as url:
            r = approute.Router.from_yaml(_conf(url))
            assert r.cluster()["mode"] == "cluster"
        assert rec.lines == []
    finally:
        log.removeHandler(rec)

"""router.cluster() and `approute status` with `cluster:`, and the Redis ACL user
docs/cluster.md documents, against a real redis-server started here (free
loopback port, temp dir, no persistence) and stopped by its pid. Skipped
without redis-server unless APPROUTE_REDIS_REQUIRED=1."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence, Set, Tuple

import approute
import pytest
from approute import cli
from approute._procs import start_redis, wait_for


@contextlib.contextmanager
def redis_server(tmp_path: Path, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """A redis-server (its URL) with `extra_args` as configuration; stopped by its pid."""
    if shutil.which("redis-server") is None:
        if os.environ.get("APPROUTE_REDIS_REQUIRED") == "1":
            pytest.fail("redis-server not found and APPROUTE_REDIS_REQUIRED=1")
        pytest.skip("redis-server not found (install redis-server)")
    try:
        proc, url = start_redis(tmp_path / "redis", extra_args=extra_args)
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url


def _conf(url: str) -> str:
    return """
cluster: {redis: "%s", name: pytest, proxy: kam1, timeout_ms: 50}
nodes:
  - {id: a, uri: "sip:127.0.0.1:5071", capacity: {calls: 2}}
apps:
  default: {strategy: round_robin}
""" % url


def test_local_without_cluster() -> None:
    r = approute.Router.from_yaml("nodes: [{id: a, uri: 'sip:127.0.0.1:5071'}]\n")
    c = r.cluster()
    assert c["mode"] == "local" and c["round_trips"] == 0


def test_cluster_status_in_router_and_cli(redis_url: str) -> None:
    segment = "approute-cluster-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    try:
        r = approute.Router.from_yaml(_conf(redis_url), shared=segment)
        assert r.route("x", call_id="c1").ok
        assert r.route("x", call_id="c2").ok
        assert not r.route("x", call_id="c3").ok  # capacity 2, counted in Redis too
        c = r.cluster()
        assert c["mode"] == "cluster", c
        assert (c["name"], c["proxy"], c["proxies"]) == ("pytest", "kam1", ["kam1"])
        assert c["round_trips"] > 0 and c["failures"] == 0 and c["degraded_placements"] == 0
        assert c["outage_refusals"] == 0
        assert c["last_sync_ms"] > 0 and 0 < c["rtt_p50_us"] <= c["rtt_p99_us"]

        out, err = io.StringIO(), io.StringIO()
        assert cli.main(["status", "--shared", segment, "--json"], out, err) == 0, err.getvalue()
        doc = json.loads(out.getvalue())
        assert doc["cluster"]["mode"] == "cluster" and doc["cluster"]["proxies"] == ["kam1"]
        out = io.StringIO()
        assert cli.main(["status", "--shared", segment], out, err) == 0, err.getvalue()
        first = out.getvalue().splitlines()[0]
        assert first.startswith("cluster: cluster   deployment: pytest   proxy: kam1   proxies: kam1"), first
    finally:
        approute.Router.unlink(segment)


def test_cluster_figures_in_approute_metrics(redis_url: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    segment = "approute-cluster-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    try:
        r = approute.Router.from_yaml(_conf(redis_url), shared=segment)
        assert r.route("x", call_id="m1").ok
        out, err = io.StringIO(), io.StringIO()
        assert cli.main(["metrics", "--shared", segment], out, err) == 0, err.getvalue()
        fam = {f.name: f for f in text_string_to_metric_families(out.getvalue())}
        assert fam["approute_cluster_degraded"].samples[0].value == 0
        assert fam["approute_cluster_proxies"].samples[0].value == 1
        assert fam["approute_cluster_redis_round_trips"].samples[0].value > 0
        assert fam["approute_cluster_redis_failures"].samples[0].value == 0
        assert fam["approute_cluster_degraded_placements"].samples[0].value == 0
        assert fam["approute_cluster_outage_refusals"].samples[0].value == 0
    finally:
        approute.Router.unlink(segment)


def test_status_has_no_cluster_line_without_cluster() -> None:
    segment = "approute-cluster-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    try:
        approute.Router.from_yaml("nodes: [{id: a, uri: 'sip:127.0.0.1:5071'}]\n", shared=segment)
        out, err = io.StringIO(), io.StringIO()
        assert cli.main(["status", "--shared", segment], out, err) == 0, err.getvalue()
        assert not out.getvalue().startswith("cluster:")
        out = io.StringIO()
        assert cli.main(["status", "--shared", segment, "--json"], out, err) == 0
        assert json.loads(out.getvalue())["cluster"]["mode"] == "local"
        out = io.StringIO()
        assert cli.main(["metrics", "--shared", segment], out, err) == 0
        assert "approute_cluster" not in out.getvalue()
    finally:
        approute.Router.unlink(segment)


def test_upkeep_renews_the_lease_and_cluster_warns_without_it(redis_url: str) -> None:
    idle = approute.Router.from_yaml(_conf(redis_url).replace("kam1", "idle"))
    c = idle.cluster()
    assert c["lease_age_ms"] == -1 and "lease: not renewed yet" in c["warning"], c
    assert "WARNING: lease: not renewed yet" in cli.cluster_text(c)
    kept = approute.Router.from_yaml(_conf(redis_url).replace("kam1", "kept"), upkeep=True)
    wait_for(lambda: kept.cluster()["lease_age_ms"] >= 0, 10, what="the upkeep thread's first sweep")
    c = kept.cluster()
    assert c["warning"] == "" and c["lease_age_ms"] >= 0, c
    assert c["primary"] == redis_url[len("redis://"):].split("/")[0]
    assert "kept" in c["proxies"]
    assert "WARNING" not in cli.cluster_text(c)
    idle.sweep()
    assert idle.cluster()["warning"] == ""


def test_sentinel_password_needs_a_sentinel_address() -> None:
    conf = _conf("redis://127.0.0.1:6379/0").replace("timeout_ms: 50", "timeout_ms: 50, sentinel_password: x")
    with pytest.raises(ValueError, match="cluster.sentinel_password.*needs a redis\\+sentinel://"):
        approute.Router.from_yaml(conf)


# --------------------------------------------------------------------------
# The ACL user docs/cluster.md ("Hardening Redis") gives approute: enough for
# two proxies to share claims, counts and admin states, and no wider than the
# commands approute sends.

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


def router_conf(url: str, proxy: str) -> str:
    # reserve_block: a call of `plain` (no key) takes a block (kReserveBlock),
    # so its commands are checked against the ACL too.
    return """
cluster: {redis: "%s", name: %s, proxy: %s, timeout_ms: 200, reserve_block: 4}
nodes:
  - {id: a, uri: "sip:127.0.0.1:5071", pool: media, capacity: {conference: 5}}
  - {id: b, uri: "sip:127.0.0.1:5072", pool: media, capacity: {conference: 5}}
apps:
  conference: {pool: media, resource: conference, strategy: round_robin, affinity: {grace: 60}}
  plain: {pool: media, resource: conference, strategy: round_robin}
""" % (url, NAME, proxy)


def acl_args(acl: str) -> Tuple[str, ...]:
    """redis-server arguments: hardened as docs/cluster.md says, with `acl` as the only user."""
    return ("--protected-mode", "yes", "--maxmemory-policy", "noeviction",
            "--user", "default", "off", "--user", *acl.split()[1:])


def two_proxies(url: str, secret: str) -> Tuple[approute.Router, approute.Router]:
    url = url.replace("redis://", "redis://approute:%s@" % secret)
    return (approute.Router.from_yaml(router_conf(url, "kam1")),
            approute.Router.from_yaml(router_conf(url, "kam2")))


def test_two_proxies_work_with_only_the_documented_acl(tmp_path: Path) -> None:
    secret = secrets.token_hex(16)
    acl = documented_acl().replace("{approute:prod}", "{approute:%s}" % NAME)
    acl = acl.replace(">A-LONG-RANDOM-SECRET", ">" + secret)
    with redis_server(tmp_path, acl_args(acl)) as url:
        kam1, kam2 = two_proxies(url, secret)
        d1 = kam1.route("conference", call_id="c1", key="tenant.example.com")
        d2 = kam2.route("conference", call_id="c2", key="tenant.example.com")
        assert d1.ok and d2.ok and d2.node_id == d1.node_id  # one node per key, over both
        assert d1.node_id is not None
        assert kam2.node(d1.node_id).sessions.get("conference") == 2  # counts over both
        retried = kam1.retry("c1", code=503)
        assert retried.ok and retried.node_id != d1.node_id
        kam1.end("c1")
        kam2.end("c2")
        assert kam1.route("plain", call_id="p1").ok  # a reservation taking a block
        kam1.end("p1")
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


def test_a_user_without_a_needed_command_is_refused(tmp_path: Path) -> None:
    secret = secrets.token_hex(16)
    # The test above can fail: the same line without TIME (which the scripts call) breaks it.
    acl = documented_acl().replace("{approute:prod}", "{approute:%s}" % NAME)
    acl = acl.replace(">A-LONG-RANDOM-SECRET", ">" + secret).replace(" +time", "")
    with redis_server(tmp_path, acl_args(acl)) as url:
        kam1, _ = two_proxies(url, secret)
        kam1.route("conference", call_id="c1", key="tenant.example.com")
        c = kam1.cluster()
        assert c["failures"] > 0 or c["degraded_placements"] > 0, c

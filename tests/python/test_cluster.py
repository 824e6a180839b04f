"""router.cluster() and `approute status` with `cluster:`, against a real
redis-server started here (free loopback port, temp dir, no persistence) and
stopped by its pid. Skipped without redis-server unless APPROUTE_REDIS_REQUIRED=1."""
from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import approute
import pytest
from approute import cli
from approute._procs import start_redis


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        if os.environ.get("APPROUTE_REDIS_REQUIRED") == "1":
            pytest.fail("redis-server not found and APPROUTE_REDIS_REQUIRED=1")
        pytest.skip("redis-server not found (install redis-server)")
    try:
        proc, url = start_redis(tmp_path / "redis")
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield url
    finally:
        proc.stop()


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

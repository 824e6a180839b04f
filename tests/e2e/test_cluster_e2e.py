"""Two real Kamailio proxies with the example config share one redis-server
(started here on a free loopback port, stopped by its pid) through
`cluster:`; SIPp callers alternate between them: each domain lands on one
node, a node's capacity holds over both proxies, and a drain typed with the
CLI at one proxy is obeyed by the other, and a node that joins by PUBLISH
at one proxy takes calls through the other until it leaves."""
from __future__ import annotations

import io
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import pytest
from approute._procs import start_redis
from e2e_harness import CONFERENCE_APP, E2E, Call, status_config, wait_for

# Random placement: two proxies on their own would scatter a domain.
RANDOM_CONFERENCE = CONFERENCE_APP.replace("strategy: round_robin", "strategy: random")


@pytest.fixture
def redis_url(tmp_path: Path):
    if shutil.which("redis-server") is None:
        if os.environ.get("APPROUTE_REDIS_REQUIRED") == "1":
            pytest.fail("redis-server not found and APPROUTE_REDIS_REQUIRED=1")
        pytest.skip("redis-server not found (install redis-server)")
    proc, url = start_redis(tmp_path / "redis")
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture
def pair(e2e, tmp_path, request, redis_url):
    """Proxy kam1 (the e2e fixture) and kam2, same nodes, one Redis."""
    second_dir = tmp_path / "kam2"
    second_dir.mkdir()
    other = E2E(second_dir, request)
    other.nodes = e2e.nodes  # the same "Asterisk" nodes behind both proxies
    deployment = "e2e-%d-%d" % (os.getpid(), int(time.monotonic() * 1000))

    def configure(node_extra: str = "", apps_yaml=None, configured=None, router_extra: str = "") -> None:
        for env, proxy in ((e2e, "kam1"), (other, "kam2")):
            env.write_config(node_extra=node_extra, apps_yaml=apps_yaml, configured=configured, router_extra=(
                "cluster: {redis: \"%s\", name: %s, proxy: %s, timeout_ms: 50}\n"
                % (redis_url, deployment, proxy)) + router_extra)

    def start() -> None:
        e2e.start_kamailio(children=2)
        other.start_kamailio(children=2)

    yield e2e, other, configure, start
    other.nodes = {}
    other.close()


def test_each_domain_on_one_node_over_both_proxies(pair):
    one, two, configure, start = pair
    for i in range(1, 4):
        one.add_node("n%d" % i)
    configure(apps_yaml=RANDOM_CONFERENCE)
    start()
    domains = ["d%d.example.com" % i for i in range(6)]
    run1 = one.start_calls([Call(d, user="a%d" % i, hold_ms=1500) for i in range(3) for d in domains],
                           rate=20)
    run2 = two.start_calls([Call(d, user="b%d" % i, hold_ms=1500) for i in range(3) for d in domains],
                           rate=20)
    results = run1.wait() + run2.wait()
    assert [r.status for r in results] == [200] * 36, results
    by_domain = defaultdict(set)
    for r in results:
        by_domain[r.domain].add(one.node_of(r.call_id))
    assert all(len(n) == 1 for n in by_domain.values()), dict(by_domain)
    assert len(set().union(*by_domain.values())) > 1, "random placement should use several nodes"


def test_capacity_holds_over_both_proxies(pair):
    one, two, configure, start = pair
    one.add_node("n1")
    configure(node_extra=", capacity: {conference: 3}")
    start()
    # 3 long calls at each proxy, all different domains: 3 places in all.
    run1 = one.start_calls([Call("a%d.example.com" % i, hold_ms=4000) for i in range(3)], rate=10)
    run2 = two.start_calls([Call("b%d.example.com" % i, hold_ms=4000) for i in range(3)], rate=10)
    results = run1.wait() + run2.wait()
    statuses = sorted(r.status for r in results)
    assert statuses.count(200) == 3, statuses
    assert len(results) == 6 and all(s in (200, 503) for s in statuses), statuses


def test_cli_drain_at_one_proxy_holds_at_the_other(pair):
    from approute import cli

    one, two, configure, start = pair
    for i in range(1, 4):
        one.add_node("n%d" % i)
    configure()
    start()
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["drain", "n1", "--shared", one.shared], out, err) == 0, err.getvalue()
    time.sleep(1.5)  # each proxy applies the deployment's admin states once a second
    results = two.run_calls([Call("new%d.example.com" % i, hold_ms=100) for i in range(6)], rate=10)
    assert all(r.status == 200 for r in results), results
    assert "n1" not in {two.node_of(r.call_id) for r in results}
    assert two.router.node("n1").state == "draining"


def test_a_node_that_publishes_to_one_proxy_takes_calls_through_the_other(pair):
    from test_status_e2e import ROUND_ROBIN, Publisher

    one, two, configure, start = pair
    one.add_node("n1")
    configure(apps_yaml=ROUND_ROBIN, configured=[], router_extra=status_config())
    start()
    pub = Publisher(one, "n1")  # PUBLISH to kam1 only
    try:
        pub.join(expires=60)
        wait_for(lambda: "n1" in {n.id for n in two.router.nodes()}, 5, what="n1 known at kam2")
        results = two.run_calls([Call("p%d.example.com" % i, hold_ms=100) for i in range(4)], rate=10)
        assert [r.status for r in results] == [200] * 4, results
        assert {two.node_of(r.call_id) for r in results} == {"n1"}
        # A leave at kam1 ends it at kam2 too: no new calls there (kam2
        # merges the deployment's records within a second of a call, or at
        # its 5 s rtimer sweep), then it is removed once its calls are over.
        r = pub.send(None, expires=0)
        assert r.code == 200, r
        tries = iter(range(100))

        def refused_at_two() -> bool:
            res = two.run_calls([Call("q%d.example.com" % next(tries), hold_ms=50)], rate=10)
            return bool(res[0].status != 200)
        wait_for(refused_at_two, 8, interval=0.5, what="kam2 refusing new calls for n1")
        wait_for(lambda: "n1" not in {n.id for n in two.router.nodes()}, 12, interval=0.5,
                 what="n1 removed at kam2")
    finally:
        pub.close()

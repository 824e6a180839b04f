"""Drains that finish (router.drain, `approute drain`), affinity.bound,
strategies that refuse a call, and retry() with the original attrs."""
from __future__ import annotations

import io
import textwrap

import approute
import pytest
from approute import cli

CONF = textwrap.dedent(
    """
    nodes:
      - {id: a, uri: "sip:10.0.0.1:5060", pool: media, capacity: {conference: 50}}
      - {id: b, uri: "sip:10.0.0.2:5060", pool: media, capacity: {conference: 50}}
      - {id: c, uri: "sip:10.0.0.3:5060", pool: media, capacity: {conference: 50}}
    apps:
      conference:
        pool: media
        resource: conference
        strategy: STRATEGY
        affinity: {grace: 60}
        retry: {codes: [503], max_attempts: 3}
    """
)


def router(strategy: str = "least_loaded", **kw) -> approute.Router:
    r = approute.Router.from_yaml(CONF.replace("STRATEGY", strategy), **kw)
    r._set_time(1_800_000_000)
    return r


def test_drain_with_deadline_empties_the_node():
    r = router()
    x = r.route("conference", call_id="c1", key="k").node_id
    assert x is not None
    r.drain(x, deadline=10)
    assert r.node(x).state == "draining"
    assert r.route("conference", call_id="c2", key="k").node_id == x  # before the deadline
    r._set_time(1_800_000_010)
    d = r.route("conference", call_id="c3", key="k")
    assert d.node_id != x and d.reason == "strategy"
    r.end("c1")
    r.end("c2")
    assert r.sessions(node=x) == [] and r.affinities(node=x) == []
    assert [a.node_id for a in r.affinities()] == [d.node_id]


def test_draining_again_without_deadline_keeps_the_deadline():
    r = router()
    x = r.route("conference", call_id="c1", key="k").node_id
    assert x is not None
    r.drain(x, deadline=10)
    r.drain(x)  # e.g. `approute drain NODE --wait` to watch progress
    r._set_time(1_800_000_010)
    assert r.route("conference", call_id="c2", key="k").node_id != x


def test_drain_without_deadline_releases_a_key_when_its_last_session_ends():
    r = router()
    x = r.route("conference", call_id="c1", key="k").node_id
    assert x is not None
    r.drain(x)
    r.end("c1")
    assert r.affinities(node=x) == []  # no grace time on a draining node
    assert r.route("conference", call_id="c2", key="k").node_id != x


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_drain_bad_deadline_is_an_error_and_changes_nothing(bad):
    r = router()
    with pytest.raises(approute.InvalidArgumentError, match="deadline"):
        r.drain("a", deadline=bad)
    assert r.node("a").state == "active"
    with pytest.raises(approute.NotFoundError):
        r.drain("nope")


def test_cli_drain_waits_until_the_node_is_empty():
    r = router()
    x = r.route("conference", call_id="c1", key="k").node_id
    assert x is not None
    r.route("conference", call_id="c2", key="k")
    now = [0.0]
    ended = iter(["c1", "c2"])

    def sleep(s):  # each wait, one call ends
        now[0] += s
        r.end(next(ended))

    out = io.StringIO()
    rc = cli.drain(r, x, 5.0, True, 1.0, out, sleep=sleep, clock=lambda: now[0])
    lines = out.getvalue().splitlines()
    assert rc == 0
    assert lines[0] == "%s: draining, deadline 5s" % x
    assert lines[1] == "%s: 2 session(s), 1 key(s) left after 0.0s" % x
    assert lines[2] == "%s: 1 session(s), 1 key(s) left after 1.0s" % x
    assert lines[-1] == "%s: empty after 2.0s" % x


def test_cli_drain_rejects_a_bad_deadline():
    err = io.StringIO()
    assert cli.main(["drain", "a", "--shared", "nope", "--deadline", "-3"], io.StringIO(), err) == 2


def test_affinity_bound_spreads_a_popular_key_over_few_nodes():
    r = approute.Router.from_yaml(CONF.replace("STRATEGY", "least_loaded").replace(
        "{grace: 60}", "{grace: 60, bound: 1.25}"))
    for i in range(30):
        r.route("conference", call_id="bg%d" % i, key="bg%d" % i)
    homes = {r.route("conference", call_id="big%d" % i, key="big").node_id for i in range(30)}
    assert len(homes) == 2
    loads = [r.node(n).sessions["conference"] for n in "abc"]
    assert max(loads) <= -(-1.25 * sum(loads) // 3)


def test_affinity_bound_must_exceed_one():
    with pytest.raises(approute.ConfigError, match=r"affinity\.bound"):
        approute.Router.from_yaml(CONF.replace("STRATEGY", "round_robin")
                                  .replace("{grace: 60}", "{grace: 60, bound: 1}"))


class Recorder(approute.Strategy):
    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.seen = []

    def select(self, request, candidates):
        self.seen.append((request.attempt, dict(request.attrs)))
        return self.answer(request, candidates)


def test_refuse_means_no_node_and_no_fallback():
    rec = Recorder(lambda req, cs: approute.REFUSE if req.attrs.get("tier") == "blocked" else None)
    r = router("mine", strategies={"mine": rec})
    d = r.route("conference", call_id="c1", attrs={"tier": "blocked"})
    assert (d.ok, d.reason) == (False, "no_node")
    assert "refused" in d.detail
    assert r.stats()["sessions"] == 0
    assert r.route("conference", call_id="c2", attrs={"tier": "gold"}).ok  # None: the fallback picks
    assert repr(approute.REFUSE) == "approute.REFUSE"


def test_retry_hands_the_strategy_the_original_attrs():
    rec = Recorder(lambda req, cs: approute.REFUSE if req.attempt == 3 else cs[0].id)
    r = router("mine", strategies={"mine": rec})
    assert r.route("conference", call_id="c1", attrs={"region": "eu", "tier": "gold"}).ok
    assert r.retry("c1", code=503).ok
    d = r.retry("c1", code=503)
    assert not d.ok and "refused" in d.detail
    assert rec.seen == [(1, {"region": "eu", "tier": "gold"})] * 1 + [(2, {"region": "eu", "tier": "gold"}),
                                                                     (3, {"region": "eu", "tier": "gold"})]
    assert r.stats()["sessions"] == 0

"""router.sessions() and router.affinities(): what an operator lists."""
from __future__ import annotations

import approute
import pytest

CONF = """
nodes:
  - {id: a, uri: "sip:10.0.0.1", pool: media}
  - {id: b, uri: "sip:10.0.0.2", pool: media}
apps:
  conference: {pool: media, strategy: round_robin, resource: conference, affinity: {grace: 30}}
  plain: {pool: media, strategy: round_robin}
"""


def test_sessions_and_affinities_are_listed_and_filtered() -> None:
    r = approute.Router.from_yaml(CONF)
    d1 = r.route("conference", call_id="c1", key="one.example.com")
    d2 = r.route("conference", call_id="c2", key="two.example.com")
    r.route("plain", call_id="p1")
    rows = {s.call_id: s for s in r.sessions()}
    assert set(rows) == {"c1", "c2", "p1"}
    assert rows["c1"].node_id == d1.node_id and rows["c1"].key == "one.example.com"
    assert rows["p1"].key is None and rows["p1"].app == "plain"
    assert rows["c1"].attempt == 1 and rows["c1"].confirmed is False
    assert 0 <= rows["c1"].age < 5 and rows["c1"].expires_in > 3600
    assert {s.call_id for s in r.sessions(app="plain")} == {"p1"}
    assert {s.call_id for s in r.sessions(node=d2.node_id)} >= {"c2"}
    assert len(r.sessions(limit=1)) == 1
    affs = {a.key: a for a in r.affinities()}
    assert set(affs) == {"one.example.com", "two.example.com"}
    assert affs["one.example.com"].sessions == 1 and affs["one.example.com"].grace_left is None
    r.confirm("c1")
    assert [s.confirmed for s in r.sessions() if s.call_id == "c1"] == [True]
    r.end("c1")
    a = [x for x in r.affinities(app="conference") if x.key == "one.example.com"][0]
    assert a.sessions == 0 and a.grace_left is not None and 29 <= a.grace_left <= 30
    assert r.affinities(app="plain") == []


def test_listing_arguments_are_checked() -> None:
    r = approute.Router.from_yaml(CONF)
    with pytest.raises(approute.InvalidArgumentError, match="limit"):
        r.sessions(limit=-1)
    with pytest.raises(approute.InvalidArgumentError, match="limit"):
        r.affinities(limit=-1)
    assert r.sessions(node="nosuch") == []


def test_abandoned_calls_leave_no_affinity_but_answered_ones_keep_grace() -> None:
    r = approute.Router.from_yaml(CONF)
    for i in range(200):
        r.route("conference", call_id="f%d" % i, key="flood%d.example.com" % i)
        r.abandon("f%d" % i)
    assert r.affinities() == [] and r.stats()["affinities"] == 0
    r.route("conference", call_id="ok", key="real.example.com")
    r.confirm("ok")
    r.abandon("ok")  # e.g. a CANCEL racing the 200: the claim was answered
    (a,) = r.affinities()
    assert a.key == "real.example.com" and a.grace_left is not None
    with pytest.raises(approute.NotFoundError):
        r.abandon("ok")

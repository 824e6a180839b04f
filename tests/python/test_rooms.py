"""Rooms through the Python API: strict keys (a room never spans two nodes),
``prefer=`` for new keys, headroom, and what stats(), ``approute status``,
``approute metrics`` and ``approute keys`` show of them; several forked
processes racing on one new room, and two cluster proxies on one real Redis."""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import uuid
from collections import defaultdict
from typing import Any, Dict, List, Set, Tuple

import approute
import pytest
from approute import cli, metrics
from test_cluster import redis_url  # noqa: F401  (the fixture: a real redis-server on a free port)


def rooms_yaml(affinity: str, cap: int = 2, cluster: str = "") -> str:
    return (cluster + "nodes:\n"
            "  - {id: a, uri: \"sip:10.0.0.1:5060\", capacity: {conference: %d}}\n"
            "  - {id: b, uri: \"sip:10.0.0.2:5060\", capacity: {conference: %d}}\n"
            "apps:\n"
            "  conference:\n"
            "    strategy: least_loaded\n"
            "    resource: conference\n"
            "    affinity: %s\n" % (cap, cap, affinity))


def test_the_split_room_is_refused_instead() -> None:
    """2 nodes, capacity 2, least_loaded, strict: a, a, then key_full, never b."""
    r = approute.Router.from_yaml(rooms_yaml("{grace: 300, strict: true}"))
    d1 = r.route("conference", call_id="p1", key="room1000")
    d2 = r.route("conference", call_id="p2", key="room1000")
    assert d1.ok and d2.ok and d1.node_id == d2.node_id
    for call_id in ("p3", "p4"):
        d = r.route("conference", call_id=call_id, key="room1000")
        assert not d.ok and d.node_id is None
        assert d.reason == "key_full"
        assert d.detail == ("key 'room1000' lives on %s (2 live sessions), which is full: conference 2/2"
                            % d1.node_id)
    other = "b" if d1.node_id == "a" else "a"
    assert r.node(other).sessions.get("conference", 0) == 0
    stats = r.stats()
    assert stats["key_refusals"]["conference"]["key_full"] == 2
    assert stats["key_refusals"]["conference"]["key_down"] == 0
    keys = r.affinities(app="conference")
    assert [(k.key, k.node_id, k.sessions) for k in keys] == [("room1000", d1.node_id, 2)]


def test_non_strict_rooms_still_spill() -> None:
    r = approute.Router.from_yaml(rooms_yaml("{grace: 300}"))
    nodes = {r.route("conference", call_id="p%d" % i, key="room1000").node_id for i in range(4)}
    assert nodes == {"a", "b"}


def test_retry_never_moves_a_room_with_other_participants() -> None:
    r = approute.Router.from_yaml(rooms_yaml("{grace: 300, strict: true}", cap=10))
    home = r.route("conference", call_id="p1", key="room").node_id
    assert r.route("conference", call_id="p2", key="room").node_id == home
    d = r.retry("p2", code=503)
    assert not d.ok and d.reason == "key_tried", d
    assert r.route("conference", call_id="p3", key="room").node_id == home


def test_down_and_disabled_have_their_own_reasons() -> None:
    r = approute.Router.from_yaml(rooms_yaml("{grace: 300, strict: true}", cap=10))
    home = r.route("conference", call_id="p1", key="room").node_id
    assert home is not None
    r.set_health(home, "down")
    assert r.route("conference", call_id="p2", key="room").reason == "key_down"
    r.set_health(home, "up")
    r.set_state(home, "disabled")
    assert r.route("conference", call_id="p3", key="room").reason == "key_disabled"


def test_prefer_keeps_a_domains_rooms_together_and_never_refuses() -> None:
    r = approute.Router.from_yaml(rooms_yaml("{grace: 300, strict: true}", cap=3))
    first = r.route("conference", call_id="c1", key="room1", prefer="example.com")
    second = r.route("conference", call_id="c2", key="room2", prefer="example.com")
    assert (second.node_id, second.reason) == (first.node_id, "prefer")
    third = r.route("conference", call_id="c3", key="room3", prefer="example.com")
    assert third.node_id == first.node_id  # 3 of 3
    fourth = r.route("conference", call_id="c4", key="room4", prefer="example.com")
    assert fourth.ok and fourth.node_id != first.node_id, "soft: the full node's preference gives way"
    with pytest.raises(TypeError):
        r.route("conference", call_id="c5", key="room5", prefer=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefer is 65536 bytes long, at most 65535"):
        r.route("conference", call_id="c6", key="room6", prefer="p" * 65536)
    assert r.stats()["sessions"] == 4


def test_headroom_in_stats_status_and_metrics() -> None:
    segment = "approute-rooms-%d-%s" % (os.getpid(), uuid.uuid4().hex[:6])
    conf = rooms_yaml("{grace: 300, strict: true, headroom: 0.5}", cap=2)
    r = approute.Router.from_yaml(conf, shared=segment)
    try:
        assert r.route("conference", call_id="o1", key="room1").ok
        assert r.route("conference", call_id="o2", key="room2").ok
        refused = r.route("conference", call_id="o3", key="room3")
        assert not refused.ok and refused.reason == "no_node"
        assert "above the headroom for a new key" in refused.detail
        assert r.route("conference", call_id="j1", key="room1").ok  # an open room fills its node
        assert r.route("conference", call_id="j2", key="room1").reason == "key_full"
        assert r.stats()["headroom_refusals"] == {"conference": 1}

        out, err = io.StringIO(), io.StringIO()
        assert cli.main(["status", "--shared", segment], out, err) == 0, err.getvalue()
        text = out.getvalue()
        assert "key refusals (conference): key_full=1" in text
        assert "headroom refusals (conference): 1" in text

        page = metrics.metrics_text(dict(r.stats()), [])
        assert 'approute_key_refusals_total{app="conference",reason="key_full"} 1' in page
        assert 'approute_headroom_refusals_total{app="conference"} 1' in page

        out = io.StringIO()
        assert cli.main(["keys", "--shared", segment, "--json"], out, err) == 0, err.getvalue()
        assert '"sessions": 2' in out.getvalue()  # room1: o1 and j1
    finally:
        approute.Router.unlink(segment)


def test_bad_affinity_options_name_the_field() -> None:
    for bad, field in (("{strict: perhaps}", "strict"), ("{headroom: 1.5}", "headroom")):
        with pytest.raises(approute.ConfigError) as e:
            approute.Router.from_yaml(rooms_yaml(bad))
        assert "apps.conference.affinity.%s" % field in str(e.value)
        assert ":8:" in str(e.value)


CONF_MP = """
nodes:
  - {id: m1, uri: "sip:127.0.0.1:5071", capacity: {conference: 1000}}
  - {id: m2, uri: "sip:127.0.0.1:5072", capacity: {conference: 1000}}
  - {id: m3, uri: "sip:127.0.0.1:5073", capacity: {conference: 1000}}
apps:
  conference: {strategy: random, resource: conference, affinity: {grace: 60, strict: true}}
"""


def _participant(segment: str, index: int, start: Any, queue: Any) -> None:
    router = approute.Router.attach(segment)
    start.wait()
    placed = []
    for room in range(40):
        d = router.route("conference", call_id="p%d-%d" % (index, room), key="room%d" % room,
                         prefer="dom%d" % (room % 3))
        placed.append(("room%d" % room, d.node_id if d.ok else "-" + d.reason))
    queue.put(placed)


def test_processes_racing_on_new_rooms_follow_one_node() -> None:
    segment = "approute-rooms-mp-%d-%s" % (os.getpid(), uuid.uuid4().hex[:6])
    parent = approute.Router.from_yaml(CONF_MP, shared=segment)
    try:
        ctx = mp.get_context("fork")
        start, queue = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_participant, args=(segment, i, start, queue)) for i in range(6)]
        for p in procs:
            p.start()
        start.set()  # every process places the same new rooms at the same moment
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        nodes_of: Dict[str, Set[str]] = defaultdict(set)
        for placed in results:
            for room, node in placed:
                nodes_of[room].add(node)
        assert len(nodes_of) == 40
        for room, nodes in nodes_of.items():
            assert len(nodes) == 1 and not next(iter(nodes)).startswith("-"), (room, nodes)
        assert {k.sessions for k in parent.affinities()} == {6}
    finally:
        approute.Router.unlink(segment)


def _proxy(url: str, proxy: str, start: Any, queue: Any) -> None:
    segment = "approute-rooms-cl-%d" % os.getpid()
    approute.Router.unlink(segment)
    cluster = "cluster: {redis: \"%s\", name: pyrooms, proxy: %s, timeout_ms: 500}\n" % (url, proxy)
    conf = rooms_yaml("{grace: 60, strict: true}", cap=4, cluster=cluster)
    r = approute.Router.from_yaml(conf, shared=segment)
    start.wait()
    out: List[Tuple[str, str, str]] = []
    for i in range(12):
        room = "room%d" % (i % 3)
        d = r.route("conference", call_id="%s-%d" % (proxy, i), key=room)
        out.append((room, d.node_id or "-", d.reason))
    queue.put(out)
    approute.Router.unlink(segment)


def test_two_cluster_proxies_never_split_a_room(redis_url: str) -> None:  # noqa: F811
    ctx = mp.get_context("fork")
    start, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_proxy, args=(redis_url, "kam%d" % i, start, queue)) for i in range(2)]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    nodes_of: Dict[str, Set[str]] = defaultdict(set)
    placed = 0
    reasons: Dict[str, int] = defaultdict(int)
    for out in results:
        for room, node, reason in out:
            reasons[reason] += 1
            if node != "-":
                nodes_of[room].add(node)
                placed += 1
    assert all(len(n) == 1 for n in nodes_of.values()), dict(nodes_of)
    assert placed <= 8, "2 nodes x capacity 4, over both proxies"
    assert reasons["key_full"] > 0, dict(reasons)

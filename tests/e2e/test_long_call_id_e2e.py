"""A real UA's 300-byte Call-ID through Kamailio + approute + SIPp: routed,
retried off a 503 node and ended by its BYE like any other call (a Call-ID
longer than the router's 127-byte slot is stored by digest)."""

from __future__ import annotations

from typing import Any

from e2e_harness import Call, wait_for

# SIPp's Call-ID pattern: %u call number, %p pid, %s local address; padded to
# 300 bytes as some SBCs write them (an opaque token before the host).
_PAD = "x" * 300


def _cid_str(length: int) -> str:
    head = "%u-%p-"
    tail = "@%s"
    # %u, %p and %s expand to about 1, 6 and 9 characters: ~300 in all
    return head + _PAD[:length - len(head) - len(tail) - 10] + tail


def test_300_byte_call_id_is_routed_retried_and_ended(e2e: Any) -> None:
    e2e.add_node("n1", "uas_503.xml")
    e2e.add_node("n2", "uas_200.xml")
    e2e.add_node("n3", "uas_200.xml")
    e2e.write_config()
    e2e.start_kamailio()

    calls = [Call("long%d.example.com" % i, user="u%d" % i, hold_ms=1500) for i in range(6)]
    run = e2e.start_calls(calls, rate=10, cid_str=_cid_str(300))
    # while the calls are up the router lists them by their stored form
    wait_for(lambda: len(e2e.router.sessions()) >= 3, 10, what="live long-Call-ID sessions")
    listed = [s.call_id for s in e2e.router.sessions()]
    assert all(len(c) <= 127 and "~xxh3:" in c for c in listed), listed
    results = run.wait()

    assert [r.status for r in results] == [200] * len(calls), results
    for r in results:
        assert len(r.call_id) >= 290, r.call_id  # SIPp sent the long Call-ID
        assert e2e.node_of(r.call_id) in ("n2", "n3"), r.call_id
        tried = e2e.tried_nodes(r.call_id)
        assert len(tried) == len(set(tried)), (r.call_id, tried)
    assert e2e.nodes["n1"].call_ids(), "round robin over 6 new keys never picked the 503 node"
    routes = [d for d in e2e.decisions() if d["what"] == "route"]
    assert len(routes) >= len(calls), routes
    retries = [d for d in e2e.decisions() if d["what"] == "retry"]
    assert len(retries) == len(e2e.nodes["n1"].call_ids()), retries
    # every BYE ended its session: nothing counted anywhere
    e2e.wait_idle()
    assert int(e2e.router.stats()["sessions"]) == 0
    for n in e2e.router.nodes():
        assert sum(int(v) for v in dict(n.sessions).values()) == 0, (n.id, n.sessions)
    assert "Bad Request" not in e2e.log_tail(400)

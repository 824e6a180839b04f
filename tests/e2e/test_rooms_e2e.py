"""Conference rooms end to end: the example configs as shipped, a real
Kamailio (python_exec and KEMI), SIPp nodes and callers.

The room is the key (conf-<room> -> app_data), the caller's domain the
preference, strict keys and a headroom in router.yaml
(examples/kamailio/). Participants of one room calling from different
domains land on one node; once that node is full, a further participant of
that room is refused with 486 Busy Here and a Retry-After (docs/design.md,
"Strict keys at the SIP edge") and never reaches another node, while a new
room opens on another node.
"""

from __future__ import annotations

import re

import pytest
from e2e_harness import KAMAILIO_CFG, KAMAILIO_KEMI_CFG, REPO, Call, example_router

EXAMPLES = REPO / "examples" / "kamailio"


def example_configs(e2e, capacity: int) -> None:
    """examples/kamailio/router.yaml and approute-kamailio.yaml, with this
    test's nodes (capacity ``capacity`` each), segment and file paths."""
    router = example_router([(n.id, n.uri, capacity) for n in e2e.nodes.values()])
    router = router.replace('allow_sources: ["10.0.0.0/8"]', 'allow_sources: ["127.0.0.1/32"]')
    e2e.router_yaml.write_text(router)
    settings = (EXAMPLES / "approute-kamailio.yaml").read_text()
    settings = re.sub(r"(?m)^router: .*$", "router: %s" % e2e.router_yaml, settings)
    settings = re.sub(r"(?m)^shared: .*$", "shared: %s" % e2e.shared, settings)
    settings += "\nlog_decisions: true\n"
    e2e.settings_yaml.write_text(settings)


def retry_after(e2e, call_id: str) -> int:
    """The Retry-After of the call's failure answer, from the caller's log (0: none)."""
    text = "\n".join(f.read_text(errors="replace") for f in e2e.dir.glob("uac-*.log"))
    m = re.search(r"RESULT call_id=%s status=4\d\d \S+ \S+ retry_after=(\d*)" % re.escape(call_id), text)
    assert m, text
    return int(m.group(1) or 0)


@pytest.mark.parametrize("cfg", [KAMAILIO_CFG, KAMAILIO_KEMI_CFG], ids=["python_exec", "kemi"])
def test_a_room_stays_on_its_node_and_a_full_room_refuses_with_486(e2e, cfg):
    for i in (1, 2, 3):
        e2e.add_node("ast%d" % i, "uas_options.xml")   # answers the example's OPTIONS probes too
    # capacity 3, headroom 0.2: a node opens new rooms below 2.4 calls
    example_configs(e2e, capacity=3)
    e2e.start_kamailio(cfg=cfg)
    r = e2e.router
    app = r.config()["apps"]["conference"] if hasattr(r, "config") else None
    assert app is None or app["affinity"].get("strict") is True

    hold = 6000
    calls = [
        # room 2001: three participants from three domains fill its node
        Call("d1.example.com", user="p1", app="conf-2001", data="", hold_ms=hold, wait_ms=0),
        Call("d2.example.com", user="p2", app="conf-2001", data="", hold_ms=hold - 300, wait_ms=300),
        Call("d3.example.com", user="p3", app="conf-2001", data="", hold_ms=hold - 600, wait_ms=600),
        # a fourth participant of room 2001: its node is full
        Call("d4.example.com", user="p4", app="conf-2001", data="", hold_ms=500, wait_ms=1500),
        # a new room from the first participant's domain: its node has no room left
        Call("d1.example.com", user="q1", app="conf-2002", data="", hold_ms=1000, wait_ms=1800),
    ]
    results = e2e.run_calls(calls, rate=50, timeout=30)
    by_user = {res.caller.split("@")[0]: res for res in results}

    room_nodes = {e2e.node_of(by_user[u].call_id) for u in ("p1", "p2", "p3")}
    assert [by_user[u].status for u in ("p1", "p2", "p3")] == [200, 200, 200], results
    assert len(room_nodes) == 1, room_nodes          # three domains, one node
    home = room_nodes.pop()

    p4 = by_user["p4"]
    assert p4.status == 486, results                 # the room is full: Busy Here
    assert e2e.tried_nodes(p4.call_id) == []         # refused by the proxy, no node tried
    assert retry_after(e2e, p4.call_id) > 0          # with a Retry-After

    q1 = by_user["q1"]
    assert q1.status == 200, results
    assert e2e.node_of(q1.call_id) not in (None, home)  # a new room opens elsewhere

    # the proxy's log names the cause and the node; the caller saw only the phrase
    log = e2e.kamailio_log.read_text(errors="replace")
    assert re.search(r"key_full.*%s|%s.*key_full" % (home, home), log), e2e.log_tail(40)
    stats = r.stats()
    refusals = stats.get("key_refusals") or {}
    if refusals:  # per app and reason, when the core reports them
        assert refusals.get("conference", {}).get("key_full", 0) >= 1, refusals
    e2e.wait_idle(timeout=15)


@pytest.mark.parametrize("cfg", [KAMAILIO_CFG, KAMAILIO_KEMI_CFG], ids=["python_exec", "kemi"])
def test_a_node_that_bounces_a_live_room_is_not_replaced_by_another(e2e, cfg):
    """The room's node takes its first participant, then answers 503 (full,
    though the router counted room for more): the failure route does not
    carry the next participant to another node while the room lives there;
    the caller gets 486 with Retry-After, not the node's 503 (which upstream
    proxies fail over on)."""
    # each node takes its first call, then bounces every other one
    e2e.add_node("ast1", "uas_flaky.xml", inf=["ok"] + ["busy"] * 20)
    e2e.add_node("ast2", "uas_flaky.xml", inf=["ok"] + ["busy"] * 20)
    example_configs(e2e, capacity=10)
    e2e.start_kamailio(cfg=cfg)
    # q1 opens room 3002 on one node, p1 room 3001 on the other (least_loaded)
    calls = [Call("d2.example.com", user="q1", app="conf-3002", data="", hold_ms=3000, wait_ms=0),
             Call("d1.example.com", user="p1", app="conf-3001", data="", hold_ms=3000, wait_ms=300),
             Call("d2.example.com", user="p2", app="conf-3001", data="", hold_ms=500, wait_ms=1200)]
    results = {res.caller.split("@")[0]: res for res in e2e.run_calls(calls, rate=50, timeout=30)}
    assert results["q1"].status == 200 and results["p1"].status == 200, results
    home = e2e.node_of(results["p1"].call_id)
    assert e2e.node_of(results["q1"].call_id) not in (None, home), results
    p2 = results["p2"]
    assert p2.status == 486, results
    assert e2e.tried_nodes(p2.call_id) == [home]     # bounced there, not carried to the other node
    assert retry_after(e2e, p2.call_id) > 0          # the failure route's answer has one too
    e2e.wait_idle(timeout=15)

"""Apps of several resources through the Python API: ``resource: [conference,
channels]`` takes a unit of each or none, ``node().sessions`` shows each, a
retry and an end move and give back every unit, config errors name the item,
and forked processes sharing one segment never pass either capacity."""
from __future__ import annotations

import json
import multiprocessing as mp
import uuid
from typing import Dict, Tuple

import approute
import pytest

CAPS: Dict[str, Tuple[int, int]] = {"a": (4, 2), "b": (4, 4)}


def two_resources(app: str = "") -> str:
    nodes = "".join('  - {id: %s, uri: "sip:10.0.0.%d:5060", capacity: {conference: %d, channels: %d}}\n'
                    % (n, i + 1, seats, chans) for i, (n, (seats, chans)) in enumerate(sorted(CAPS.items())))
    return ("nodes:\n" + nodes + "apps:\n  conf:\n    strategy: round_robin\n"
            "    resource: [conference, channels]\n" + app)


def test_a_session_holds_a_unit_of_each_resource() -> None:
    r = approute.Router.from_yaml(two_resources())
    placed = [r.route("conf", call_id="c%d" % i) for i in range(7)]
    on = {n: sum(1 for d in placed if d.node_id == n) for n in CAPS}
    assert on == {"a": 2, "b": 4}, on  # a ran out of channels with seats to spare
    assert not placed[-1].ok and placed[-1].reason == "no_node"
    for n in CAPS:
        s = r.node(n).sessions
        assert s["conference"] == s["channels"] == on[n]
    for i in range(6):
        r.end("c%d" % i)
    assert all(r.node(n).sessions.get("channels", 0) == 0 for n in CAPS)
    assert all(r.node(n).sessions.get("conference", 0) == 0 for n in CAPS)


def test_retry_moves_every_unit() -> None:
    r = approute.Router.from_yaml(two_resources("    retry: {codes: [503], max_attempts: 2}\n"))
    first = r.route("conf", call_id="c1")
    again = r.retry("c1", code=503)
    assert first.node_id is not None and again.node_id is not None
    assert again.ok and again.node_id != first.node_id
    assert r.node(first.node_id).sessions.get("channels", 0) == 0
    assert r.node(again.node_id).sessions["channels"] == 1
    assert r.node(again.node_id).sessions["conference"] == 1


@pytest.mark.parametrize("resource, says", [
    ("[]", "apps.conf.resource: expected at least one resource name"),
    ("[conference, conference]", 'apps.conf.resource[1]: resource "conference" is named twice'),
    ("[conference, 'no spaces']", "apps.conf.resource[1]"),
])
def test_config_errors_name_the_item(resource: str, says: str) -> None:
    with pytest.raises(approute.ConfigError) as e:
        approute.Router.from_yaml(two_resources().replace("[conference, channels]", resource))
    assert says in str(e.value)


def _hammer(segment: str, proc: int, out: "mp.Queue[int]") -> None:
    r = approute.Router.attach(segment)
    worst = 0
    held = []
    for i in range(400):
        cid = "p%d-%d" % (proc, i)
        d = r.route("conf", call_id=cid)
        if d.ok and d.node_id is not None:
            s = r.node(d.node_id).sessions
            seats, chans = CAPS[d.node_id]
            worst = max(worst, s["conference"] - seats, s["channels"] - chans)
            held.append(cid)
        if len(held) >= 3 or (not d.ok and held):
            r.end(held.pop(0))
    for cid in held:
        r.end(cid)
    out.put(worst)


def test_processes_never_pass_either_capacity() -> None:
    segment = "/approute-test-res-%s" % uuid.uuid4().hex[:8]
    r = approute.Router.from_yaml(two_resources().replace("round_robin", "random"), shared=segment)
    try:
        ctx = mp.get_context("fork")
        q: "mp.Queue[int]" = ctx.Queue()
        procs = [ctx.Process(target=_hammer, args=(segment, p, q)) for p in range(4)]
        for p in procs:
            p.start()
        worst = [q.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        assert max(worst) <= 0, "a capacity was passed by %d" % max(worst)
        for n in CAPS:
            assert r.node(n).sessions.get("conference", 0) == 0
            assert r.node(n).sessions.get("channels", 0) == 0
    finally:
        approute.Router.unlink(segment)


def test_nodes_that_join_by_report_bound_both_resources() -> None:
    # No node in the config names either resource: the app's list registers them.
    secret = "resources-secret-0123456789"
    r = approute.Router.from_yaml(
        "nodes: []\napps:\n  conf: {strategy: least_loaded, resource: [conference, channels]}\n"
        "status:\n  allow_sources: [\"127.0.0.1/32\"]\n  keys: {default: {k1: \"%s\"}}\n" % secret)
    for node, cap, load in (("n1", {"conference": 10, "channels": 3}, {"channels": 1}),
                            ("n2", {"conference": 2, "channels": 10}, {})):
        body = json.dumps({"node": node, "uri": "sip:127.0.0.1:5099", "pool": "default", "state": "active",
                           "capacity": cap, "load": load, "seq": 1})
        auth = approute.sign_report(body, keyid="k1", secret=secret, node=node, etag="", expires=60)
        assert r.apply_report(body, expires=60, source="127.0.0.1", auth=auth).code == 200
    placed = [r.route("conf", call_id="c%d" % i) for i in range(6)]
    on = {n: sum(1 for d in placed if d.node_id == n) for n in ("n1", "n2")}
    # n1: 3 channels, 1 of them its own; n2: 2 seats
    assert on == {"n1": 2, "n2": 2}, on
    assert r.node("n1").sessions["channels"] == 2 and r.node("n2").sessions["conference"] == 2

"""Kamailio + approute + SIPp, end to end.

Each test builds its own little site on 127.0.0.1: SIPp UAS processes as
"Asterisk" nodes, Kamailio with the example config and the approute
handler, one shared-memory router segment, and SIPp callers.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict

import pytest
from e2e_harness import CONFERENCE_APP, KAMAILIO_KEMI_CFG, Call, wait_for


def three_nodes(e2e, scenarios=("uas_200.xml", "uas_200.xml", "uas_200.xml")):
    for i, sc in enumerate(scenarios, 1):
        e2e.add_node("n%d" % i, sc)


def assert_idle(e2e):
    """After every call has ended, nothing is counted anywhere."""
    e2e.wait_idle()
    for n in e2e.router.nodes():
        assert sum(int(v) for v in dict(n.sessions).values()) == 0, (n.id, n.sessions)


def domain_nodes(e2e, results):
    by_domain = defaultdict(set)
    for r in results:
        by_domain[r.domain].add(e2e.node_of(r.call_id))
    return by_domain


def test_same_domain_lands_on_one_node_whichever_worker(e2e):
    three_nodes(e2e)
    e2e.write_config()
    e2e.start_kamailio(children=4)

    calls = [Call("acme.example.com", user="a%d" % i, hold_ms=1500) for i in range(12)]
    results = e2e.run_calls(calls, rate=20)

    assert [r.status for r in results] == [200] * len(calls)
    nodes = {e2e.node_of(r.call_id) for r in results}
    assert len(nodes) == 1, nodes
    routes = [d for d in e2e.decisions() if d["what"] == "route"]
    assert len(routes) >= len(calls)
    # the calls were handled by several Kamailio workers, yet agree
    assert len({d["pid"] for d in routes}) >= 2, routes
    reasons = Counter(d["reason"] for d in routes)
    assert reasons["strategy"] == 1, reasons
    assert reasons["affinity"] >= len(calls) - 1, reasons
    # the node saw the application headers added by the proxy
    node = e2e.nodes[nodes.pop()]
    assert {(app, data) for _, app, data in node.invites()} == {("Conference", "1000")}
    assert_idle(e2e)


def test_different_domains_spread(e2e):
    three_nodes(e2e)
    e2e.write_config()
    e2e.start_kamailio()

    domains = ["d%d.example.com" % i for i in range(6)]
    calls = [Call(d, user="u%d" % j, hold_ms=200) for j in range(2) for d in domains]
    results = e2e.run_calls(calls, rate=10)

    assert all(r.status == 200 for r in results), results
    by_domain = domain_nodes(e2e, results)
    for d, nodes in by_domain.items():
        assert len(nodes) == 1, (d, nodes)  # each domain sticks to one node
    used = Counter(next(iter(n)) for n in by_domain.values())
    assert len(used) >= 2, used  # and the domains are spread over nodes
    assert max(used.values()) <= 4, used
    assert_idle(e2e)


def test_503_node_is_rerouted_and_never_retried(e2e):
    three_nodes(e2e, ("uas_503.xml", "uas_200.xml", "uas_200.xml"))
    e2e.write_config()
    e2e.start_kamailio()

    calls = [Call("b%d.example.com" % i, hold_ms=200) for i in range(6)]
    results = e2e.run_calls(calls, rate=10)

    assert all(r.status == 200 for r in results), results
    busy = e2e.nodes["n1"]
    assert busy.call_ids(), "round robin over 6 new keys never picked n1"
    for r in results:
        tried = e2e.tried_nodes(r.call_id)
        assert len(tried) == len(set(tried)), (r.call_id, tried)  # no node twice
        assert e2e.node_of(r.call_id) in ("n2", "n3")
    retries = [d for d in e2e.decisions() if d["what"] == "retry"]
    assert len(retries) == len(busy.call_ids()), retries
    assert all(d.get("from") == "n1" and d.get("code") == "503" for d in retries), retries
    assert_idle(e2e)


def test_all_nodes_busy_gives_503_after_each_node_once(e2e):
    three_nodes(e2e, ("uas_503.xml", "uas_503.xml", "uas_503.xml"))
    e2e.write_config()
    e2e.start_kamailio()

    results = e2e.run_calls([Call("c%d.example.com" % i, hold_ms=100) for i in range(3)], rate=5)

    assert [r.status for r in results] == [503] * 3, results
    for r in results:
        tried = e2e.tried_nodes(r.call_id)
        assert len(tried) == len(set(tried)), tried
        assert len(tried) <= 3, tried
    # each node answers 503 with Retry-After: 5 and is busy after it: tried
    # once, by the first call that reaches it; the calls after get 503 from
    # the proxy without trying it again
    invites = [len(n.call_ids()) for n in e2e.nodes.values()]
    assert max(invites) == 1 and sum(invites) == 3, invites
    assert {n.health for n in e2e.router.nodes()} == {"up"}
    assert all(n.busy_until is not None for n in e2e.router.nodes())
    assert_idle(e2e)


def test_draining_keeps_sessions_disabled_takes_nothing(e2e):
    three_nodes(e2e)
    e2e.write_config()
    e2e.start_kamailio()

    # a long call from acme pins acme to node X
    long_call = e2e.start_calls([Call("acme.example.com", user="long", hold_ms=6000)])
    wait_for(lambda: int(e2e.router.stats()["sessions"]) == 1, 5, what="first session")
    x = wait_for(lambda: next((n.id for n in e2e.nodes.values() if n.call_ids()), None), 5,
                 what="first INVITE at a node")
    e2e.router.set_state(x, "draining")
    assert e2e.router.node(x).state == "draining"

    # acme still goes to X (it holds acme's affinity); new domains do not
    results = e2e.run_calls(
        [Call("acme.example.com", user="second", hold_ms=200)]
        + [Call("new%d.example.com" % i, hold_ms=200) for i in range(4)], rate=10)
    assert all(r.status == 200 for r in results), results
    acme = [r for r in results if r.domain == "acme.example.com"]
    assert e2e.node_of(acme[0].call_id) == x
    for r in results:
        if r.domain != "acme.example.com":
            assert e2e.node_of(r.call_id) != x, r

    # disable one of the others: new keys only go to the last active node
    others = sorted(set(e2e.nodes) - {x})
    e2e.router.set_state(others[0], "disabled")
    results = e2e.run_calls([Call("late%d.example.com" % i, hold_ms=100) for i in range(3)],
                            rate=10)
    assert all(r.status == 200 for r in results), results
    assert {e2e.node_of(r.call_id) for r in results} == {others[1]}

    # the draining node kept its session until the caller hung up
    (first,) = long_call.wait()
    assert first.status == 200
    assert e2e.node_of(first.call_id) == x
    assert first.call_id in e2e.nodes[x].byes()
    assert_idle(e2e)


def test_counts_return_to_zero_after_bye(e2e):
    three_nodes(e2e)
    e2e.write_config()
    e2e.start_kamailio()

    run = e2e.start_calls([Call("z%d.example.com" % (i % 3), user="u%d" % i, hold_ms=2000)
                           for i in range(6)], rate=20)
    # while the calls are up, the router counts them on the nodes
    wait_for(lambda: int(e2e.router.stats()["sessions"]) == 6, 5, what="6 live sessions")
    assert sum(e2e.node_sessions(n) for n in e2e.nodes) == 6
    results = run.wait()
    assert all(r.status == 200 for r in results)
    assert_idle(e2e)
    stats = e2e.router.stats()
    assert int(stats["sessions"]) == 0
    assert int(stats["affinities"]) >= 1  # kept for the grace time


def test_killed_node_fails_over_within_timers(e2e):
    three_nodes(e2e)
    e2e.write_config()
    e2e.fr_timer = 1000
    e2e.start_kamailio()

    # pin a domain to a node, then kill that node
    (r0,) = e2e.run_calls([Call("victim.example.com", hold_ms=100)])
    assert r0.status == 200
    dead = e2e.node_of(r0.call_id)
    e2e.nodes[dead].proc.kill()

    calls = [Call("victim.example.com", user="again", hold_ms=100)] + [
        Call("k%d.example.com" % i, hold_ms=100) for i in range(5)]
    run = e2e.start_calls(calls, rate=10)
    results = run.wait()
    assert all(r.status == 200 for r in results), results
    for r in results:
        assert e2e.node_of(r.call_id) != dead
    # every call that went to the dead node was moved after one fr_timer
    retries = [d for d in e2e.decisions() if d["what"] == "retry"]
    assert retries and all(d.get("from") == dead and d.get("code") == "408" for d in retries)
    # six calls, at most a couple of timer periods (plus hold times) in all
    assert run.elapsed < 8.0, run.elapsed
    assert_idle(e2e)


def test_kamailio_restart_keeps_affinities(e2e):
    three_nodes(e2e)
    e2e.write_config()
    e2e.start_kamailio()

    domains = ["r%d.example.com" % i for i in range(3)]
    first = e2e.run_calls([Call(d, hold_ms=100) for d in domains], rate=10)
    before = {r.domain: e2e.node_of(r.call_id) for r in first}
    assert all(r.status == 200 for r in first)
    assert_idle(e2e)

    e2e.stop_kamailio()
    e2e._router = None
    # the state outlives the proxy
    assert int(e2e.router.stats()["affinities"]) >= 3
    e2e._router = None
    e2e.start_kamailio()

    second = e2e.run_calls([Call(d, user="back", hold_ms=100) for d in domains], rate=10)
    assert all(r.status == 200 for r in second)
    after = {r.domain: e2e.node_of(r.call_id) for r in second}
    assert after == before
    ids = {r.call_id for r in second}
    reasons = {d["call_id"]: d["reason"] for d in e2e.decisions()
               if d["what"] == "route" and d.get("call_id") in ids}
    assert set(reasons.values()) == {"affinity"}, reasons
    assert_idle(e2e)


def test_kemi_config_routes_and_retries(e2e):
    three_nodes(e2e, ("uas_503.xml", "uas_200.xml", "uas_200.xml"))
    e2e.write_config()
    e2e.start_kamailio(cfg=KAMAILIO_KEMI_CFG)

    calls = [Call("kemi%d.example.com" % (i % 3), user="k%d" % i, hold_ms=300) for i in range(6)]
    results = e2e.run_calls(calls, rate=10)
    assert all(r.status == 200 for r in results), results
    for r in results:
        tried = e2e.tried_nodes(r.call_id)
        assert len(tried) == len(set(tried)), tried
    for d, nodes in domain_nodes(e2e, results).items():
        assert len(nodes) == 1, (d, nodes)
    assert_idle(e2e)


def test_unknown_app_404_and_no_node_503(e2e):
    three_nodes(e2e)
    # no `default` app: an unknown application is an error
    e2e.write_config(apps_yaml=CONFERENCE_APP)
    e2e.start_kamailio()

    results = e2e.run_calls([Call("x.example.com", app="nosuchapp")])
    assert results[0].status == 404

    # an app matched by a rule: room-NNN is the conference app, data NNN
    results = e2e.run_calls([Call("x.example.com", app="room-4242", data="")])
    assert results[0].status == 200
    node = e2e.nodes[e2e.node_of(results[0].call_id)]
    assert ("Conference", "4242") in {(a, d) for _, a, d in node.invites()}

    for n in e2e.nodes:
        e2e.router.set_state(n, "disabled")
    results = e2e.run_calls([Call("y.example.com")])
    assert results[0].status == 503
    assert_idle(e2e)


def test_cli_sees_and_drains_the_running_router(e2e, capsys):
    from approute import cli

    three_nodes(e2e)
    e2e.write_config()
    e2e.start_kamailio()
    results = e2e.run_calls([Call("cli.example.com", hold_ms=100)])
    assert results[0].status == 200

    assert cli.main(["status", "--shared", e2e.shared, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert sorted(n["id"] for n in status["nodes"]) == ["n1", "n2", "n3"]

    assert cli.main(["drain", "n1", "--shared", e2e.shared]) == 0
    capsys.readouterr()
    assert e2e.router.node("n1").state == "draining"
    assert cli.main(["enable", "n1", "--shared", e2e.shared]) == 0
    assert e2e.router.node("n1").state == "active"

    assert cli.main(["metrics", "--shared", e2e.shared]) == 0
    text = capsys.readouterr().out
    assert "approute_node_sessions" in text
    assert_idle(e2e)


def test_cli_reload_reaches_every_worker(e2e, capsys):
    """`approute reload` moves the conference app to another pool; calls handled
    by any of Kamailio's workers follow at once."""
    from approute import cli

    three_nodes(e2e)
    e2e.write_config()
    e2e.start_kamailio(children=4)
    assert {r.status for r in e2e.run_calls([Call("before%d.example.com" % i) for i in range(3)])} == {200}

    text = e2e.router_yaml.read_text()
    uri3 = e2e.nodes["n3"].uri
    text = text.replace('{id: n3, uri: "%s", pool: media' % uri3, '{id: n3, uri: "%s", pool: vip' % uri3)
    text = text.replace("  conference:\n    pool: media", "  conference:\n    pool: vip")
    assert "pool: vip" in text and text.count("pool: vip") == 2
    new = e2e.dir / "router-vip.yaml"
    new.write_text(text)
    bad = e2e.dir / "router-bad.yaml"
    bad.write_text(text.replace("strategy: round_robin", "strategy: fastest", 1))
    assert cli.main(["reload", str(bad), "--shared", e2e.shared]) == 1
    assert e2e.router.node("n3").pool == "media"  # an invalid file changed nothing
    assert cli.main(["reload", str(new), "--shared", e2e.shared]) == 0
    capsys.readouterr()
    assert e2e.router.node("n3").pool == "vip"

    results = e2e.run_calls([Call("after%d.example.com" % i) for i in range(12)], rate=20)
    assert {r.status for r in results} == {200}, results
    assert {e2e.node_of(r.call_id) for r in results} == {"n3"}
    assert_idle(e2e)


def test_lost_bye_session_expires_through_rtimer_sweep(e2e):
    three_nodes(e2e)
    e2e.write_config(apps_yaml=CONFERENCE_APP + "    session: {lifetime: 2}\n")
    e2e.start_kamailio()

    run = e2e.start_calls([Call("lost.example.com", hold_ms=30000)])
    wait_for(lambda: int(e2e.router.stats()["sessions"]) == 1, 5, what="the session")
    time.sleep(0.5)  # let the 200/ACK through
    run.proc.kill()  # the caller vanishes: no BYE will ever come
    # lifetime 2 s + rtimer period 5 s
    wait_for(lambda: int(e2e.router.stats()["sessions"]) == 0, 12, interval=0.5,
             what="the lost session to expire")
    assert_idle(e2e)


@pytest.mark.parametrize("cfg", ["python_exec", "kemi"])
def test_cancel_ends_the_session_without_retry(e2e, cfg):
    for i in (1, 2):
        e2e.add_node("n%d" % i, "uas_ring.xml")
    e2e.write_config()
    if cfg == "kemi":
        e2e.start_kamailio(cfg=KAMAILIO_KEMI_CFG)
    else:
        e2e.start_kamailio()

    results = e2e.run_calls([Call("cancel%d.example.com" % i, hold_ms=500) for i in range(3)],
                            rate=10, scenario="uac_cancel.xml")
    assert [r.status for r in results] == [487] * 3
    for r in results:
        assert len(e2e.tried_nodes(r.call_id)) == 1  # a canceled call is not retried
    assert not [d for d in e2e.decisions() if d["what"] == "retry"]
    assert_idle(e2e)


def test_demo_runs_and_cleans_up(tmp_path):
    import subprocess
    import sys

    from e2e_harness import REPO, missing_requirements

    why = missing_requirements()
    if why:
        pytest.skip(why)
    # stdout is a pipe (no TTY): the whole table at intervals, not only its header
    p = subprocess.run(
        [sys.executable, str(REPO / "python" / "approute" / "demo.py"), "--repo", str(REPO),
         "--duration", "6", "--rate", "3", "--hold-min", "300", "--hold-max", "1200",
         "--print-every", "1", "--refresh", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
        env=dict(__import__("os").environ, TMPDIR=str(tmp_path)))
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out[-3000:]
    assert "result: OK" in out
    tables = out.count("live rooms (participants) per node:")
    assert tables >= 3, out[:3000]  # during the run and the final one
    assert out.count("NODE   STATE") == tables
    # the clock: calls placed across the run, not bunched at its start; none after it
    m = re.search(r"clock: --duration 6: calls ran ([\d.]+)s .*participants routed per quarter "
                  r"of 6s: (\d+), (\d+), (\d+), (\d+); after the end: (\d+)", out)
    assert m, out[-3000:]
    quarters = [int(m.group(i)) for i in range(2, 6)]
    assert sum(q > 0 for q in quarters) >= 3, quarters
    assert max(quarters) < 0.7 * sum(quarters), quarters
    assert quarters[2] + quarters[3] >= 0.2 * sum(quarters), quarters  # the second half has calls
    assert m.group(6) == "0"
    assert float(m.group(1)) < 6 + 10, out[-3000:]  # loose: an overloaded host may lag
    assert re.search(r"room moves: (none|\d+ )", out)
    # the big first room fills its node: a participant is refused with 486, no room splits
    assert re.search(r"refused 486 -> refused \(486 Busy Here\): its room's node was full", out), out[-3000:]
    assert "split rooms (participants on two nodes): none" in out
    assert not list(tmp_path.glob("approute-demo-*")), "demo left its directory behind"

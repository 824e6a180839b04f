"""Overload without retry storms, end to end: real Kamailio + SIPp on 127.0.0.1.

* a node whose probes (or INVITEs) are answered 503 with Retry-After is busy:
  skipped for new calls, never marked down, and back at once (no slow start)
  after a 200;
* a burst of 200 calls against a pool that answers 503 to all of them
  produces at most the retries the app's retry.budget allows (counted at the
  nodes), and the callers get 503 with a Retry-After;
* a node whose answers carry RFC 7339 oc=50 gets about half of the calls it
  would get otherwise.

The retry budget counts a share of the calls in flight: calls that bounce
at once are in flight only for milliseconds, so a burst against an all-503
pool is held to little more than min_per_second retries a second.

Figures are printed (pytest -s) for the record.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter

import pytest
from e2e_harness import Call, wait_for

PROBES = "probe: {interval: 1, timeout: 0.5}\n"
HEALTH = """\
health:
  probe: {down_after: 2, up_after: 1}
  slow_start: {window: 120}
"""
ROUND_ROBIN = """\
  conference:
    pool: media
    strategy: round_robin
    retry: {codes: [503, 408], max_attempts: 3}
"""


def calls_per_node(e2e, results) -> "Counter[str]":
    assert all(r.status == 200 for r in results), results
    return Counter(e2e.node_of(r.call_id) for r in results)


def test_a_node_answering_503_is_busy_not_down_and_back_at_once(e2e):
    e2e.add_node("n1", "uas_busy.xml")
    for n in ("n2", "n3"):
        e2e.add_node(n, "uas_options.xml")
    e2e.write_config(apps_yaml=ROUND_ROBIN, router_extra=HEALTH, settings_extra=PROBES)
    e2e.start_kamailio()
    wait_for(lambda: e2e.router.node("n1").busy_until is not None, 6, interval=0.1,
             what="n1's 503 probe to make it busy")
    until = e2e.router.node("n1").busy_until
    assert until == pytest.approx(time.time() + 30, abs=3)  # its Retry-After
    # probes keep being answered 503: more than down_after rounds, never down
    seen = e2e.nodes["n1"].options()
    healths = set()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        healths.add(e2e.router.node("n1").health)
        time.sleep(0.1)
    assert e2e.nodes["n1"].options() >= seen + 3
    assert healths == {"up"}
    results = e2e.run_calls([Call("b%d.example.com" % i, hold_ms=100) for i in range(8)], rate=10)
    got = calls_per_node(e2e, results)
    assert got["n1"] == 0 and e2e.nodes["n1"].call_ids() == []  # skipped, not tried
    assert not [d for d in e2e.decisions() if d["what"] == "retry"]
    e2e.wait_idle()

    answered_503 = e2e.nodes["n1"].options()
    # the node answers 200 again: busy ends at its next probe, with no slow start
    n1 = e2e.nodes["n1"]
    n1.proc.stop()
    n1.scenario = "uas_options.xml"
    n1.start()
    t0 = time.monotonic()
    wait_for(lambda: e2e.router.node("n1").busy_until is None, 5, interval=0.05,
             what="a 200 probe to end n1's busy period")
    cleared = time.monotonic() - t0
    assert e2e.router.node("n1").health == "up"
    results = e2e.run_calls([Call("c%d.example.com" % i, hold_ms=100) for i in range(9)], rate=10)
    got = calls_per_node(e2e, results)
    # round robin over three: a third each (a slow start of 120 s would give it ~5%)
    assert got["n1"] == 3, got
    print("\nbusy: n1 busy for its Retry-After (30 s), %d probes answered 503, health %s; "
          "busy cleared %.1f s after it answered 200; then %d of 9 calls" % (
              answered_503, sorted(healths), cleared, got["n1"]))
    e2e.wait_idle()


def test_an_invite_answered_503_makes_the_node_busy_without_probes(e2e):
    e2e.add_node("n1", "uas_busy.xml")
    e2e.add_node("n2", "uas_200.xml")
    e2e.write_config(apps_yaml=ROUND_ROBIN, router_extra=HEALTH)
    e2e.start_kamailio()
    results = e2e.run_calls([Call("i%d.example.com" % i, hold_ms=100) for i in range(10)],
                            rate=5, limit=1)
    assert all(r.status == 200 for r in results), results
    # the first call round robin sent to n1 bounced (503, Retry-After: 30) and
    # went to n2; after that n1 is busy: no second INVITE reaches it
    assert len(e2e.nodes["n1"].call_ids()) == 1
    n1 = e2e.router.node("n1")
    assert n1.health == "up"
    assert n1.busy_until is not None and n1.busy_until > time.time() + 20
    e2e.wait_idle()


def test_a_burst_against_a_503_pool_makes_at_most_the_budgeted_retries(e2e):
    for i in range(4):
        e2e.add_node("n%d" % i, "uas_503_plain.xml")
    apps = """\
  conference:
    pool: media
    strategy: round_robin
    retry: {codes: [503, 408], max_attempts: 3, budget: {percent: 20, min_per_second: 3}}
"""
    # busy_for 0: the nodes' 503s (without Retry-After) do not hold them back,
    # so every call may bounce: the budget alone bounds the retries
    e2e.write_config(apps_yaml=apps, router_extra="health: {busy_for: 0}\n",
                     settings_extra="budget_retry_after: 2\n")
    e2e.start_kamailio()
    burst = 200
    t0 = time.time()
    results = e2e.run_calls([Call("s%d.example.com" % i, hold_ms=100) for i in range(burst)],
                            rate=200, limit=200, timeout=90)
    t1 = time.time()
    invites = sum(len(n.call_ids()) for n in e2e.nodes.values())
    retries = invites - burst
    stats = e2e.router.stats()
    refused = stats["budget_refusals"]["conference"]
    # every second of the burst allows 20% of the calls in flight (at most the
    # burst) + 3: count the wall-clock seconds the burst touched
    seconds = math.floor(t1) - math.floor(t0) + 1
    bound = seconds * (burst * 20 // 100 + 3)
    unbudgeted = burst * 2  # max_attempts 3: two retries a call
    print("\nretry budget: %d calls, %d INVITEs at the nodes = %d retries (bound %d over %d s; "
          "%d without a budget); %d retries refused by the budget" % (
              burst, invites, retries, bound, seconds, unbudgeted, refused))
    assert all(r.status in (500, 503) for r in results), Counter(r.status for r in results)
    assert 0 < retries <= bound < unbudgeted
    assert refused > 0 and retries + refused <= unbudgeted
    # the callers whose retry the budget refused got 503 with Retry-After: 2
    log = "".join(p.read_text(errors="replace") for p in e2e.dir.glob("uac-*.log"))
    assert len(re.findall(r"status=503 .* retry_after=2\b", log)) >= refused
    e2e.wait_idle()


def test_a_node_sending_oc_50_gets_about_half_its_calls(e2e):
    e2e.add_node("n1", "uas_oc50.xml")
    e2e.add_node("n2", "uas_200.xml")
    e2e.write_config(apps_yaml=ROUND_ROBIN)
    e2e.start_kamailio()
    calls = 240
    results = e2e.run_calls([Call("o%d.example.com" % i, hold_ms=50) for i in range(calls)],
                            rate=60, limit=40, timeout=90)
    got = calls_per_node(e2e, results)
    n1 = e2e.router.node("n1")
    assert n1.overload_percent == 50
    assert n1.overload_until == pytest.approx(time.time() + 60, abs=30)
    # round robin would give n1 half (120); oc=50 sheds half of those: about
    # 60. The sheds are independent draws at 1/2 over ~120 offers (sd 5.5);
    # 30..90 is more than 5 sd each way.
    share = got["n1"] / (calls / 2)
    print("\noverload control: n1 (oc=50) took %d of %d calls, %.2f of the %d round robin "
          "would give it; n2 took %d" % (got["n1"], calls, share, calls // 2, got["n2"]))
    assert 30 <= got["n1"] <= 90, got
    assert got["n1"] + got["n2"] == calls
    e2e.wait_idle()

"""The example strategies in examples/strategies/, each through a real router."""
from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import approute
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "strategies"


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def router_with(strategy: str, nodes: str, **kw) -> approute.Router:
    text = textwrap.dedent(
        """
        nodes:
        %s
        apps:
          conference:
            pool: media
            resource: conference
            strategy: %s
          default:
            pool: media
            strategy: %s
        """) % (textwrap.indent(textwrap.dedent(nodes).strip(), "  "), strategy, strategy)
    return approute.Router.from_yaml(text, **kw)


NODES = """
- {id: n1, uri: "sip:10.0.0.1", pool: media, capacity: {conference: 20}, attrs: {region: eu, class: premium}}
- {id: n2, uri: "sip:10.0.0.2", pool: media, capacity: {conference: 20}, attrs: {region: eu, class: standard}}
- {id: n3, uri: "sip:10.0.0.3", pool: media, capacity: {conference: 20}, attrs: {region: us, class: standard}}
- {id: n4, uri: "sip:10.0.0.4", pool: media, capacity: {conference: 20}, attrs: {region: us, class: night}}
"""


def test_tenant_cap_keeps_a_tenant_together_up_to_the_cap():
    r = router_with('{name: "python:tenant_cap:TenantCap", cap: 3, hold: 600}', NODES)
    r._set_time(1_000_000)
    acme = [r.route("conference", call_id="a%d" % i, key="acme").node_id for i in range(7)]
    counts = Counter(acme)
    assert sorted(counts.values()) == [1, 3, 3]          # together, 3 per node at most
    assert acme[:3] == [acme[0]] * 3                       # filled one node first
    other = r.route("conference", call_id="o1", key="other").node_id
    assert other not in counts or counts[other] < 3        # a new tenant goes to a lightly used node
    # placements age out after `hold` seconds: acme starts over on the least loaded node
    r._set_time(1_000_000 + 601)
    used = {n.id: n.sessions["conference"] for n in r.nodes()}
    late = r.route("conference", call_id="a-late", key="acme").node_id
    assert late is not None
    assert used[late] == min(used.values())
    # no key: the fallback (least_loaded) picks
    assert r.route("conference", call_id="nokey").ok


def test_prefer_region_matches_the_callers_region():
    r = router_with('"python:prefer_region:PreferRegion"', NODES)
    eu = [r.route("conference", call_id="e%d" % i, attrs={"region": "eu"}).node_id for i in range(6)]
    us = [r.route("conference", call_id="u%d" % i, attrs={"region": "us"}).node_id for i in range(6)]
    # least loaded within region
    assert set(eu) == {"n1", "n2"} and Counter(eu) == Counter({"n1": 3, "n2": 3})
    assert set(us) == {"n3", "n4"}
    # nobody in the region: least loaded of all
    assert r.route("conference", call_id="x", attrs={"region": "ap"}).ok


def test_least_recently_used_rotates_through_idle_nodes_first():
    r = router_with('"python:lru:LeastRecentlyUsed"', NODES)
    picks = [r.route("default", call_id="c%d" % i).node_id for i in range(8)]
    assert picks == ["n1", "n2", "n3", "n4", "n1", "n2", "n3", "n4"]
    r.set_state("n2", "disabled")
    picks = [r.route("default", call_id="d%d" % i).node_id for i in range(3)]
    assert picks == ["n1", "n3", "n4"]
    r.set_state("n2", "active")
    assert r.route("default", call_id="e").node_id == "n2"  # the least recently used of all


RULES = """{name: "python:business_rules:BusinessRules", default_tier: bronze,
            tiers: {acme.com: gold, example.com: silver},
            rules: [{tier: gold, attrs: {class: premium}},
                    {tier: silver, hours: [8, 18], attrs: {class: premium}},
                    {hours: [22, 6], attrs: {class: night}},
                    {attrs: {class: standard}}]}"""


def at_hour(r, h):
    r._set_time(1767225600 + h * 3600 + 120)  # 2026-01-01 h:02 UTC


def test_business_rules_by_tier_and_time_of_day():
    r = router_with(RULES, NODES)
    at_hour(r, 10)
    assert r.route("conference", call_id="g1", key="acme.com").node_id == "n1"          # gold -> premium
    assert r.route("conference", call_id="s1", key="example.com").node_id == "n1"       # silver, office hours
    assert r.route("conference", call_id="b1", key="small.org").node_id in ("n2", "n3")  # bronze -> standard
    assert r.route("conference", call_id="t1", key="x", attrs={"tier": "gold"}).node_id == "n1"
    at_hour(r, 20)
    assert r.route("conference", call_id="s2", key="example.com").node_id in ("n2", "n3")  # silver, evening
    at_hour(r, 23)
    assert r.route("conference", call_id="b2", key="small.org").node_id == "n4"  # night (wraps midnight)
    assert r.route("conference", call_id="g2", key="acme.com").node_id == "n1"          # gold beats night


def test_business_rules_without_a_match_use_the_fallback():
    r = router_with('{name: "python:business_rules:BusinessRules", rules: [{attrs: {class: none}}]}', NODES)
    assert r.route("conference", call_id="c1").ok


def test_business_rules_reject_a_bad_table():
    with pytest.raises(approute.ConfigError, match="rules\\[0\\]"):
        router_with('{name: "python:business_rules:BusinessRules", rules: [{when: 1}]}', NODES)

"""A strategy written in Python, inside Kamailio, through the approute handler.

Kamailio imports the handler in its main process, which builds the router
from router.yaml: the app's strategy is "python:e2e_tiers:Tiers", a module
this test writes next to the config and puts on the embedded interpreter's
path. The strategy object is created before Kamailio forks, so every worker
has its own copy; each call takes the GIL only around select().
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Set

import e2e_harness
from e2e_harness import Call

STRATEGY = '''
import approute


class Tiers(approute.Strategy):
    """vip* domains go to the `vip` node; boom* domains make select() raise
    (the call falls back to round_robin); everyone else avoids the vip node."""

    def __init__(self, vip="n3"):
        super().__init__()
        self.vip = vip
        self.calls = 0

    def select(self, request, candidates):
        self.calls += 1
        key = request.key or ""
        if key.startswith("boom"):
            raise RuntimeError("boom for %s (call %d of this worker)" % (key, self.calls))
        if key.startswith("vip"):
            return self.vip if any(c.id == self.vip for c in candidates) else None
        rest = [c for c in candidates if c.id != self.vip] or candidates
        return min(rest, key=lambda c: (c.used, c.id)).id
'''

APPS = """\
  conference:
    pool: media
    strategy: {name: "python:e2e_tiers:Tiers", vip: n3, fallback: round_robin, log_interval: 0}
    resource: conference
    affinity: {grace: 60}
    retry: {codes: [503, 408], max_attempts: 3}
  default:
    pool: media
    strategy: round_robin
"""


def test_python_strategy_routes_calls_inside_kamailio(e2e, monkeypatch):
    (e2e.dir / "e2e_tiers.py").write_text(STRATEGY)
    dirs = e2e_harness.site_dirs()
    monkeypatch.setattr(e2e_harness, "site_dirs", lambda: dirs + ":" + str(e2e.dir))
    for i in range(1, 4):
        e2e.add_node("n%d" % i)
    e2e.write_config(apps_yaml=APPS)
    e2e.start_kamailio(children=4)

    calls = ([Call("vip%d.example.com" % (i % 2), user="v%d" % i, hold_ms=300) for i in range(6)]
             + [Call("d%d.example.com" % i, hold_ms=300) for i in range(6)]
             + [Call("boom.example.com", user="b%d" % i, hold_ms=300) for i in range(2)])
    results = e2e.run_calls(calls, rate=10)

    assert [r.status for r in results] == [200] * len(calls), results
    by_domain: Dict[str, Set[str]] = {}
    for r in results:
        by_domain.setdefault(r.domain, set()).add(e2e.node_of(r.call_id))
    for d, nodes in by_domain.items():
        if d.startswith("vip"):
            assert nodes == {"n3"}, (d, nodes)
        elif d.startswith("d"):
            assert nodes <= {"n1", "n2"}, (d, nodes)
    # the plain domains spread over n1 and n2 (least used first)
    assert {n for d, ns in by_domain.items() if d.startswith("d") for n in ns} == {"n1", "n2"}
    routes = [d for d in e2e.decisions() if d["what"] == "route"]
    assert len({d["pid"] for d in routes}) >= 2, routes  # several workers ran the strategy
    reasons = Counter(d["reason"] for d in routes)
    assert reasons["strategy"] >= 8 and reasons["affinity"] >= 1, reasons
    # the failing select() was logged (with its traceback) and Kamailio kept going
    log = e2e.kamailio_log.read_text(errors="replace")
    assert "boom for boom.example.com" in log and "falling back to round_robin" in log
    assert e2e.kamailio.alive()
    e2e.wait_idle()

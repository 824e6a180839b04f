"""Overload without retry storms, Python side: busy nodes (503 with
Retry-After), the retry budget and RFC 7339 overload control, through the
router's API, the Kamailio handler (fake KSR, real private router), the CLI
status, the status page and the metrics.

The Kamailio + SIPp version is tests/e2e/test_overload_e2e.py.
"""

from __future__ import annotations

import time
from typing import Any, Dict

import pytest

approute = pytest.importorskip("approute")
kam = pytest.importorskip("approute.kamailio")

from approute.cli import status_text  # noqa: E402
from approute.cli_util import node_to_dict  # noqa: E402
from approute.kamailio.sip import OverloadReport, retry_after_seconds, via_overload  # noqa: E402
from approute.metrics import metrics_text  # noqa: E402
from approute.status_page import render, snapshot  # noqa: E402
from fake_ksr import FakeKSR  # noqa: E402  (tests/python)

ROUTER: Dict[str, Any] = {
    "health": {"probe": {"down_after": 2, "up_after": 1}, "busy_for": 4},
    "nodes": [{"id": "n1", "uri": "sip:127.0.0.1:5071", "pool": "media"},
              {"id": "n2", "uri": "sip:127.0.0.1:5072", "pool": "media"}],
    "apps": {"conference": {"pool": "media", "strategy": "round_robin",
                            "retry": {"codes": [503, 408], "max_attempts": 3,
                                      "budget": {"percent": 0, "min_per_second": 1}}}},
}


def make(settings=None, **pvs):
    data = {"router": ROUTER, "shared": None, "apps": {"conference": {"key": "{from_domain}"}},
            "probe": {"interval": 1}}
    data.update(settings or {})
    ksr = FakeKSR(**pvs)
    return kam.create_handler(kam.Settings(data), ksr=ksr), ksr


# ----- header parsing (untrusted input) ---------------------------------------

@pytest.mark.parametrize("value,want", [
    ("5", 5), (" 120 ", 120), ("18000 (back after the upgrade)", 18000), ("30;duration=60", 30),
    ("99999999", 86400), ("", None), ("-1", None), ("5s", None), ("1.5", None),
    ("5 (unclosed", None), ("5\r\nX-Evil: 1", None), (None, None), ("9" * 11, None),
])
def test_retry_after_is_read_strictly(value, want):
    assert retry_after_seconds(value) == want


@pytest.mark.parametrize("via,want", [
    ('SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;oc=50;oc-validity=4000;oc-seq=1282321615.782;oc-algo="loss"',
     OverloadReport(50, 4000, 128232161578200)),
    ("SIP/2.0/UDP p.example.com;branch=z9hG4bK2;oc=20;oc-seq=7", OverloadReport(20, 500, 700000)),
    # RFC 7339 section 6: the end of overload control, oc and oc-validity 0
    ('SIP/2.0/TLS p1.example.net;branch=z9hG4bK2d4790.4;received=192.0.2.111;oc=0;oc-algo="loss";'
     "oc-validity=0;oc-seq=1282321892.439", OverloadReport(0, 0, 128232189243900)),
    ("SIP/2.0/UDP p;branch=z;OC=0;OC-VALIDITY=0;oc-seq=8.5", OverloadReport(0, 0, 850000)),
    ('SIP/2.0/UDP p;branch=z;oc=30;oc-algo="loss, rate";oc-seq=1, SIP/2.0/UDP q;oc=90', None),
    ('SIP/2.0/UDP p;branch=z;oc=30;oc-algo="rate";oc-seq=1', None),
    ("SIP/2.0/UDP p;branch=z;oc=101;oc-seq=1", None),
    ("SIP/2.0/UDP p;branch=z;oc=-5;oc-seq=1", None),
    ("SIP/2.0/UDP p;branch=z;oc;oc-seq=1", None),           # a request's bare oc: no value
    ("SIP/2.0/UDP p;branch=z;oc=50;oc-seq=1.123456", None),  # fraction of at most 5 digits
    ("SIP/2.0/UDP p;branch=z;oc=50;oc-validity=soon", None),
    ("SIP/2.0/UDP p;branch=z;oc=50;x=\"unterminated", None),
    ("SIP/2.0/UDP p;branch=z, SIP/2.0/UDP q;oc=50", None),   # only the top via-parm counts
    ("SIP/2.0/UDP p;branch=z;oc=50;oc-validity=99999999999", OverloadReport(50, 86_400_000, 0)),
    ("SIP/2.0/UDP p;branch=z;" + "x=1;" * 400 + "oc=50", None),  # oversized
    (None, None),
])
def test_via_overload_parameters_are_read_strictly(via, want):
    assert via_overload(via) == want


def test_oc_seq_orders_as_the_text_does():
    seqs = ["9.99999", "10", "10.00001", "10.1", "10.5", "11"]
    got = [via_overload("SIP/2.0/UDP p;oc=1;oc-seq=" + s).seq for s in seqs]  # type: ignore[union-attr]
    assert got == sorted(got) and len(set(got)) == len(got)


# ----- the router's API --------------------------------------------------------

def test_bad_retry_after_and_overload_arguments_are_errors_naming_them():
    h, _ = make()
    r = h.router
    with pytest.raises(approute.InvalidArgumentError, match="retry_after"):
        r.report_probe("n1", 503, 1.0, retry_after=-3)
    with pytest.raises(approute.InvalidArgumentError, match="retry_after"):
        r.report_result("n1", 503, 1.0, retry_after=float("inf"))
    with pytest.raises(approute.InvalidArgumentError, match="percent"):
        r.report_overload("n1", 150, 1000, 1)
    with pytest.raises(approute.InvalidArgumentError, match="validity_ms"):
        r.report_overload("n1", 50, -1, 1)
    with pytest.raises(TypeError):
        r.report_overload("n1", 50, 1000, -1)  # seq is unsigned
    n = r.node("n1")
    assert n.busy_until is None and n.overload_percent == 0 and n.overload_until is None


# ----- the handler ---------------------------------------------------------------

def probe_answer(h, ksr, node, code, retry_after=None):
    ksr.vars["$uac_req(evparam)"] = "%.6f|%s" % (time.time() - 0.002, node)
    ksr.vars["$uac_req(evtype)"] = "1"
    ksr.vars["$uac_req(evcode)"] = str(code)
    ksr.headers = [] if retry_after is None else [("Retry-After", retry_after)]
    assert h.on_probe_reply(None) == kam.OK


def test_a_probe_answered_503_makes_the_node_busy_not_down():
    h, ksr = make()
    for _ in range(3):
        probe_answer(h, ksr, "n1", 503, "20 (full)")
    n = h.router.node("n1")
    assert n.health == "up"
    assert n.busy_until == pytest.approx(time.time() + 20, abs=2)
    probe_answer(h, ksr, "n2", 503, "garbage")  # malformed: health.busy_for (4 s)
    assert h.router.node("n2").busy_until == pytest.approx(time.time() + 4, abs=2)
    probe_answer(h, ksr, "n1", 200)
    assert h.router.node("n1").busy_until is None
    for _ in range(2):
        probe_answer(h, ksr, "n2", 500)
    assert h.router.node("n2").health == "down"


def test_an_invite_answered_503_makes_its_node_busy_with_its_retry_after():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    node = ksr.vars["$avp(approute_node)"]
    ksr.vars["$avp(approute_replied)"] = node
    ksr.vars["$T_reply_code"] = "503"
    ksr.vars["$T_rpl($hdr(Retry-After))"] = "9"
    assert h.on_failure(None) == kam.OK  # retried on the other node
    assert ksr.vars["$avp(approute_node)"] != node
    assert h.router.node(node).busy_until == pytest.approx(time.time() + 9, abs=2)
    assert h.router.node(node).health == "up"


def test_a_reply_carrying_oc_feeds_overload_control():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    node = ksr.vars["$avp(approute_node)"]
    ksr.vars["$rs"] = 180
    ksr.headers = [("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;oc=40;oc-validity=3000;"
                           'oc-seq=100.1;oc-algo="loss"')]
    assert h.on_reply(None) == kam.OK
    n = h.router.node(node)
    assert n.overload_percent == 40
    assert n.overload_until == pytest.approx(time.time() + 3, abs=2)
    ksr.headers = [("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;oc=40;oc-seq=99")]
    assert h.on_reply(None) == kam.OK  # older oc-seq: ignored
    assert h.router.node(node).overload_until == pytest.approx(time.time() + 3, abs=2)
    # RFC 7339 section 5.4: the same oc-seq changes nothing while the period
    # runs, neither the share nor the period
    until = h.router.node(node).overload_until
    ksr.headers = [("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;oc=90;oc-validity=60000;"
                           'oc-seq=100.1;oc-algo="loss"')]
    assert h.on_reply(None) == kam.OK
    assert h.router.node(node).overload_percent == 40
    assert h.router.node(node).overload_until == until
    ksr.headers = [("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;oc=0;oc-seq=101")]
    assert h.on_reply(None) == kam.OK
    assert h.router.node(node).overload_percent == 0
    ksr.headers = [("Via", "SIP/2.0/UDP 127.0.0.1:5060;oc=999;oc-seq=102")]
    assert h.on_reply(None) == kam.OK  # malformed: ignored, never an error
    assert h.router.node(node).overload_percent == 0


def test_a_spent_retry_budget_answers_503_with_retry_after():
    h, ksr = make(settings={"budget_retry_after": 2})
    calls = ["c%d" % i for i in range(3)]
    for c in calls:
        ksr.vars["$ci"] = c
        assert h.do_app_routing(None) == kam.OK
    outcomes = []
    for c in calls:
        ksr.vars.update({"$ci": c, "$T_reply_code": "503", "$avp(approute_node)": "n1",
                         "$avp(approute_replied)": "n1"})
        ksr.reply_headers.clear()
        outcomes.append((h.on_failure(None), ksr.vars.get("$avp(approute_code)"), list(ksr.reply_headers)))
    # min_per_second 1, percent 0: the first retry goes, the others get 503 + Retry-After
    assert outcomes[0][0] == kam.OK
    for rc, code, headers in outcomes[1:]:
        assert rc == kam.NO_NODE and code == 503
        assert ("Retry-After", "2") in headers
    assert h.router.stats()["budget_refusals"]["conference"] == 2
    with pytest.raises(kam.SettingsError, match="budget_retry_after"):
        kam.Settings({"router": ROUTER, "shared": None, "budget_retry_after": 0})


# ----- operators: status, page, metrics ------------------------------------------

def test_status_page_and_metrics_show_busy_and_shedding_nodes():
    h, _ = make()
    r = h.router
    r.report_probe("n1", 503, 2.0, retry_after=60)
    r.report_overload("n2", 25, 60_000, 5)
    nodes = [node_to_dict(n) for n in r.nodes()]
    by_id = {n["id"]: n for n in nodes}
    assert by_id["n1"]["busy_until"] > time.time() + 50
    assert by_id["n2"]["overload_percent"] == 25
    text = status_text(dict(r.stats()), nodes)
    assert "up, busy until" in text and "shed 25% until" in text
    stats = dict(r.stats())
    assert stats["busy_nodes"] == 1 and stats["overloaded_nodes"] == 1
    page = render(snapshot(r, "test"))
    assert "busy until" in page and "shedding 25%" in page
    m = metrics_text(stats, nodes)
    assert 'approute_node_busy_until_seconds{node="n1"} 1' in m  # a unix time: 1.7e9 and up
    assert 'approute_node_busy_until_seconds{node="n2"} 0' in m
    assert 'approute_node_overload_percent{node="n2"} 25' in m
    assert "approute_busy_nodes 1" in m and "approute_overloaded_nodes 1" in m
    assert 'approute_retry_budget_refusals_total{app="conference"} 0' in m

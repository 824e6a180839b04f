"""approute.kamailio: PUBLISH status reports, OPTIONS probes and passive
results, against a fake KSR and a real (private) router.

The Kamailio + SIPp version of these is tests/e2e/test_status_e2e.py.
"""

from __future__ import annotations

import json
import time
from typing import Dict

import pytest

approute = pytest.importorskip("approute")
kam = pytest.importorskip("approute.kamailio")
if not hasattr(approute.Router, "apply_report"):
    pytest.skip("this approute build has no status reports", allow_module_level=True)

from fake_ksr import FakeKSR as StatusKSR  # noqa: E402  (tests/python)

SECRET = "0123456789abcdef-media"


ROUTER = {
    "status": {"allow_sources": ["127.0.0.0/8"], "keys": {"media": {"k1": SECRET}},
               "max_expires": 600},
    "health": {"probe": {"down_after": 2, "up_after": 1},
               "outlier": {"consecutive_failures": 2, "base_ejection": 30}},
    "nodes": [{"id": "n1", "uri": "sip:127.0.0.1:5071", "pool": "media"},
              {"id": "n2", "uri": "sip:127.0.0.1:5072", "pool": "media"}],
    "apps": {"conference": {"pool": "media", "strategy": "round_robin",
                            "retry": {"codes": [503, 408], "max_attempts": 3}}},
}


def make(settings=None, router=None, **pvs):
    data = {"router": router or ROUTER, "shared": None,
            "apps": {"conference": {"key": "{from_domain}"}}}
    data.update(settings or {})
    ksr = StatusKSR(**pvs)
    return kam.create_handler(kam.Settings(data), ksr=ksr), ksr


def body(node="ast5", seq=1, **extra):
    d = {"node": node, "uri": "sip:127.0.0.1:5075", "pool": "media", "state": "active",
         "weight": 10, "capacity": {"channels": 100}, "load": {"cpu": 0.2, "channels": 4},
         "seq": seq}
    d.update(extra)
    return json.dumps(d)


# Entity tag -> node, so a refresh without a body is signed for its node.
ETAG_NODES: Dict[str, str] = {}


def sign(text, *, if_match=None, expires="60", default_expires=3600):
    """What a node signs: its id, the entity tag, the Expires it sends (the
    handler's default lease when it sends none), and the body."""
    try:
        node = json.loads(text)["node"]
    except (ValueError, TypeError, KeyError):
        node = ETAG_NODES.get(if_match, "ast5")
    lease = default_expires if expires is None else int(expires) if str(expires).lstrip("-").isdigit() else 0
    return approute.sign_report(text or "", keyid="k1", secret=SECRET, node=node, etag=if_match or "",
                                expires=lease)


def publish(h, ksr, text, *, expires="60", if_match=None, auth=True, default_expires=3600,
            event="approute-status", ctype="application/json", src="127.0.0.1"):
    ksr.headers = [("Event", event)]
    if expires is not None:
        ksr.headers.append(("Expires", expires))
    if if_match:
        ksr.headers.append(("SIP-If-Match", if_match))
    if auth is True:
        auth = sign(text, if_match=if_match, expires=expires, default_expires=default_expires)
    if auth:
        ksr.headers.append(("X-Approute-Auth", auth))
    if text and ctype:
        ksr.headers.append(("Content-Type", ctype))
    ksr.vars["$rb"] = text or None
    ksr.vars["$bs"] = str(len(text or ""))  # the body size, as Kamailio's $bs
    ksr.vars["$si"] = src
    ksr.vars["$rm"] = "PUBLISH"
    assert h.on_publish(None) == kam.OK
    reply = ksr.replies[-1]
    for header in reply[2] if len(reply) > 2 and reply[2] else ():
        if str(header).startswith("SIP-ETag: ") and text:
            try:
                ETAG_NODES[str(header)[10:]] = json.loads(text)["node"]
            except (ValueError, KeyError):
                pass
    return reply


# --------------------------------------------------------------------------
# PUBLISH

def test_initial_publish_joins_and_answers_200_with_etag_and_expires():
    h, ksr = make()
    code, reason, headers = publish(h, ksr, body())
    assert (code, reason) == (200, "OK")
    hdrs = dict(headers)
    assert hdrs["Expires"] == "60" and hdrs["SIP-ETag"]
    assert ("t_newtran",) in ksr.calls  # stateful: retransmissions are absorbed
    n = h.router.node("ast5")
    assert n.uri == "sip:127.0.0.1:5075" and n.load["channels"] == 4
    assert h.router.stats()["reports_accepted"] == 1


def test_refresh_modify_remove_and_unknown_etag():
    h, ksr = make()
    etag = dict(publish(h, ksr, body())[2])["SIP-ETag"]
    code, _, headers = publish(h, ksr, "", if_match=etag)  # refresh: no body
    assert code == 200
    etag2 = dict(headers)["SIP-ETag"]
    code, _, headers = publish(h, ksr, body(seq=2, load={"channels": 40}), if_match=etag2)
    assert code == 200 and h.router.node("ast5").load["channels"] == 40
    etag3 = dict(headers)["SIP-ETag"]
    assert publish(h, ksr, "", if_match=etag)[0] == 412  # an old tag
    code, _, headers = publish(h, ksr, "", if_match=etag3, expires="0")
    assert code == 200 and dict(headers)["Expires"] == "0"
    picks = {h.router.route("conference", call_id="c-after-%d" % i).node_id for i in range(6)}
    assert "ast5" not in picks  # left: no new calls


def test_lease_is_capped_and_defaulted():
    h, ksr = make(settings={"publish": {"default_expires": 120}})
    code, _, headers = publish(h, ksr, body(), expires="99999")
    assert code == 200 and dict(headers)["Expires"] == "600"  # status.max_expires
    code, _, headers = publish(h, ksr, body("ast6"), expires=None, default_expires=120)
    assert code == 200 and dict(headers)["Expires"] == "120"


@pytest.mark.parametrize("kwargs, text, code, words", [
    ({"auth": None}, body(), 403, "X-Approute-Auth"),
    ({"auth": "keyid=k1,ts=1,sig=00"}, body(), 403, ""),
    ({}, "{not json", 400, ""),
    ({}, body(colour="blue"), 400, ""),
    ({}, body(uri="sip:203.0.113.9:5060"), 403, ""),
    ({}, body("n1", uri="sip:127.0.0.1:5071"), 403, ""),   # configured id: no takeover
])
def test_refused_reports_change_nothing(kwargs, text, code, words):
    h, ksr = make()
    before = sorted(n.id for n in h.router.nodes())
    got, reason, headers = publish(h, ksr, text, **kwargs)
    assert got == code, reason
    # the sender gets the plain phrase; the detail is in the log only
    assert reason == {400: "Bad Request", 403: "Forbidden"}[code]
    assert words in "".join(line for _, line in ksr.logs)
    assert not dict(headers).get("SIP-ETag")
    assert "\r" not in reason and "\n" not in reason and '"' not in reason
    assert sorted(n.id for n in h.router.nodes()) == before
    assert h.router.stats()["reports_refused"] == 1


def test_replayed_report_is_refused():
    h, ksr = make()
    text = body(seq=7)
    auth = sign(text)
    assert publish(h, ksr, text, auth=auth)[0] == 200
    code, reason, _ = publish(h, ksr, text, auth=auth)
    assert code == 403 and reason


def test_other_event_is_489_with_allow_events():
    h, ksr = make()
    code, reason, headers = publish(h, ksr, body(), event="presence")
    assert (code, reason) == (489, "Bad Event")
    assert ("Allow-Events", "approute-status") in headers
    assert h.router.stats()["reports_accepted"] == 0
    assert publish(h, ksr, body(), event="approute-status;id=1")[0] == 200  # params are fine


def test_not_json_is_415_and_event_check_comes_first():
    h, ksr = make()
    code, _, headers = publish(h, ksr, "load=1", ctype="text/plain")
    assert code == 415 and ("Accept", "application/json") in headers
    assert ("t_newtran",) not in ksr.calls  # refused before the transaction
    assert publish(h, ksr, body(), ctype=None)[0] == 415  # no Content-Type at all
    assert publish(h, ksr, body(), ctype="application/approute-status+json")[0] == 200


def test_malformed_expires_is_400():
    h, ksr = make()
    code, reason, _ = publish(h, ksr, body(), expires="soon")
    assert (code, reason) == (400, "Bad Request")
    assert any("Expires" in line for _, line in ksr.logs)


def test_retransmission_is_not_applied_twice():
    h, ksr = make()
    ksr.tm.newtran = -1  # tm: this request already has a transaction
    ksr.headers = [("Event", "approute-status")]
    assert h.on_publish(None) == kam.OK
    assert ksr.replies == []


def test_router_without_status_support_answers_500():
    h, ksr = make()

    class Old:
        pass
    h.router = Old()
    code, reason, _ = publish(h, ksr, body())
    assert (code, reason) == (500, "Server Internal Error")
    assert any("apply_report" in line for _, line in ksr.logs)


def test_reason_phrase_is_safe():
    assert kam.reason_phrase('bad "node": <x>\r\n100%', 400) == "bad 'node': (x) 100"
    assert kam.reason_phrase("", 403) == "Forbidden"
    assert kam.reason_phrase(None, 412) == "Conditional Request Failed"
    assert len(kam.reason_phrase("x" * 500, 400)) == 100


# --------------------------------------------------------------------------
# probes

def test_probe_round_sends_options_to_each_probed_node():
    h, ksr = make(settings={"probe": {"interval": 5, "timeout": 0.4,
                                      "from": "sip:prober@proxy.invalid"}})
    h.router.set_state("n2", "disabled")  # not probed by default
    assert h.on_probe_timer(None, "rtimer") == kam.OK
    assert len(ksr.sent) == 1
    req = ksr.sent[0]
    assert req["method"] == "OPTIONS"
    assert req["ruri"] == req["turi"] == "sip:127.0.0.1:5071"
    assert req["furi"] == "sip:prober@proxy.invalid"
    assert "X-Approute-Probe: n1\r\n" in req["hdrs"]
    assert req["evroute"] == 1
    t0, node = req["evparam"].split("|")
    assert node == "n1" and abs(float(t0) - time.time()) < 5
    assert h.on_probe_timer(None) == kam.OK  # the next round is not due yet
    assert len(ksr.sent) == 1
    h.probes.last_round -= 5
    h.on_probe_timer(None)
    assert len(ksr.sent) == 2


def test_probes_off_by_default():
    h, ksr = make()
    assert h.on_probe_timer(None) == kam.OK and ksr.sent == []


def test_probe_timeout_is_set_on_the_local_request():
    h, ksr = make(settings={"probe": {"interval": 2, "timeout": 0.75}})
    assert h.on_probe_request(None) == kam.OK
    assert ("t_set_fr", 0, 750) in ksr.calls


def test_probe_answers_and_timeouts_drive_health():
    h, ksr = make(settings={"probe": {"interval": 1}})

    def answer(node, evtype, code, ago=0.01):
        ksr.vars["$uac_req(evparam)"] = "%.6f|%s" % (time.time() - ago, node)
        ksr.vars["$uac_req(evtype)"] = str(evtype)
        ksr.vars["$uac_req(evcode)"] = str(code)
        assert h.on_probe_reply(None) == kam.OK

    answer("n1", 2, 408, ago=1.0)  # tm's local 408: no answer at all, code 0
    assert h.router.node("n1").health == "up"  # down_after: 2
    answer("n1", 2, 408, ago=1.0)
    assert h.router.node("n1").health == "down"
    answer("n1", 1, 200, ago=0.004)
    n = h.router.node("n1")
    assert n.health == "up"
    assert 1.0 <= n.latency_ewma_ms < 1000.0
    answer("ghost", 1, 200)  # a node that left meanwhile: ignored
    ksr.vars["$uac_req(evparam)"] = "not ours"
    assert h.on_probe_reply(None) == kam.OK


def test_a_local_send_failure_does_not_count_against_the_nodes():
    # uac_req_send failing (the proxy short of memory) says
    # nothing about the nodes: no probe result, health unchanged
    h, ksr = make(settings={"probe": {"interval": 1}},
                  router=dict(ROUTER, health={"probe": {"down_after": 1, "up_after": 1}}))
    ksr.uac.fail = True
    h.on_probe_timer(None)
    assert len(ksr.sent) == 2
    assert {n.id: n.health for n in h.router.nodes()} == {"n1": "up", "n2": "up"}
    assert any("failed locally" in line for _, line in ksr.logs)
    # tm's own answer without a reply (evtype 2): 408 is the node's timeout,
    # anything else (477 send failure, 500) is local
    for code, health in (("477", "up"), ("500", "up"), ("408", "down")):
        ksr.vars.update({"$uac_req(evparam)": "%.6f|n1" % time.time(),
                         "$uac_req(evtype)": "2", "$uac_req(evcode)": code})
        assert h.on_probe_reply(None) == kam.OK
        assert h.router.node("n1").health == health, code


def test_probe_settings_are_checked():
    for spec, msg in [({"interval": "often"}, "probe.interval"),
                      ({"interval": 1, "timeout": 2}, "probe.timeout"),
                      ({"states": ["gone"]}, "probe.states"),
                      ({"from": "not a uri"}, "probe.from"),
                      ({"colour": 1}, "unknown option")]:
        with pytest.raises(kam.SettingsError, match=msg):
            kam.Settings({"router": ROUTER, "shared": None, "probe": spec})
    with pytest.raises(kam.SettingsError, match="publish"):
        kam.Settings({"router": ROUTER, "shared": None, "publish": {"default_expires": -1}})


def test_example_settings_parse():
    from pathlib import Path
    s = kam.Settings.from_file(str(Path(__file__).resolve().parents[2] / "examples" / "kamailio"
                                   / "approute-kamailio.yaml"))
    assert s.probe.enabled and s.probe.timeout <= s.probe.interval


# --------------------------------------------------------------------------
# passive results

def test_timeouts_eject_a_node_and_2xx_reports_latency():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    first = ksr.vars["$avp(approute_node)"]
    assert float(ksr.vars["$avp(approute_t0)"]) == pytest.approx(time.time(), abs=5)
    ksr.tm.timeout = True
    assert h.on_failure(None) == kam.OK  # retried elsewhere; the timeout was reported
    second = ksr.vars["$avp(approute_node)"]
    assert second != first
    ksr.tm.timeout = False
    ksr.vars["$rs"] = "200"
    assert h.on_reply(None) == kam.OK
    assert h.router.node(second).latency_ewma_ms >= 0.0
    # a second timeout on the first node: consecutive_failures 2 -> ejected
    ksr2 = StatusKSR(**{"$ci": "call-2", "$fd": "other.example.com"})
    h.ksr = ksr2
    assert h.do_app_routing(None) == kam.OK
    if ksr2.vars["$avp(approute_node)"] == first:
        ksr2.tm.timeout = True
        h.on_failure(None)
        assert h.router.node(first).ejected_until is not None


def test_kemi_entry_points_take_the_extra_arguments():
    h, ksr = make(settings={"probe": {"interval": 1}})
    assert h.ksr_approute_timer(None, "rtimer") == 1  # rtimer passes its name
    assert h.ksr_approute_probe(None, "rtimer") == 1
    assert len(ksr.sent) == 2
    ksr.vars["$uac_req(evparam)"] = "%.6f|n1" % time.time()
    ksr.vars["$uac_req(evtype)"] = "1"
    ksr.vars["$uac_req(evcode)"] = "200"
    assert h.ksr_uac_event(None, "uac:reply") == 1
    ksr.vars["$rm"] = "OPTIONS"
    ksr.headers = [("X-Approute-Probe", "n1")]
    assert h.ksr_tm_event(None, "tm:local-request") == 1
    assert ("t_set_fr", 0, 1000) in ksr.calls
    ksr.calls.clear()
    ksr.headers = []  # a local OPTIONS that is not a probe: left alone
    assert h.ksr_tm_event(None, "tm:local-request") == 1
    assert not ksr.calls


def test_a_retransmitted_2xx_is_reported_once():
    h, ksr = make()
    seen = []
    real = h.router

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def report_result(self, node, code, latency):
            seen.append((node, code))
            return real.report_result(node, code, latency)
    h.router = Counting()
    assert h.do_app_routing(None) == kam.OK
    ksr.vars["$rs"] = "200"
    assert h.on_reply(None) == kam.OK
    assert h.on_reply(None) == kam.OK  # the same 200 again (the AVP is per transaction)
    assert seen == [(ksr.vars["$avp(approute_node)"], 200)]


# --------------------------------------------------------------------------
# PUBLISH refused statelessly, before anything is kept

@pytest.mark.parametrize("kwargs, code, why", [
    ({"src": "192.0.2.7"}, 403, "allow_sources"),
    ({"event": "presence"}, 489, "presence"),
    ({"size": 9000}, 413, "max_body 8192"),
    ({"ctype": "text/plain"}, 415, "text/plain"),
])
def test_publish_refused_before_the_transaction(kwargs, code, why):
    h, ksr = make()
    size = kwargs.pop("size", None)
    text = body() if size is None else body(pad="x" * size)
    ksr.vars["$bs"] = str(len(text))
    got, reason, _ = publish(h, ksr, text, **kwargs)
    assert got == code and reason == kam.DEFAULT_REASONS[code]
    assert ("t_newtran",) not in ksr.calls
    assert h.router.stats()["reports_accepted"] == 0 and h.counters["publish_%d" % code] == 1
    assert any(why in line for _, line in ksr.logs)


def test_publish_max_body_is_configurable():
    h, ksr = make(settings={"publish": {"max_body": 512}})
    text = body(pad="x" * 600)
    ksr.vars["$bs"] = str(len(text))
    assert publish(h, ksr, text)[0] == 413
    with pytest.raises(kam.SettingsError, match="max_body"):
        make(settings={"publish": {"max_body": 100000}})
    # publish.allow_sources overrides the router's status.allow_sources
    h, ksr = make(settings={"publish": {"allow_sources": ["10.0.0.0/8"]}})
    assert publish(h, ksr, body())[0] == 403 and ("t_newtran",) not in ksr.calls


def test_number_out_of_range_answers_400_and_is_counted():
    h, ksr = make()

    class Raising:
        def apply_report(self, *a, **k):
            raise approute.InvalidArgumentError("load.channels: 1e300 is out of range")
    h.router = Raising()
    code, reason, _ = publish(h, ksr, body(load={"channels": 1e300}))
    assert (code, reason) == (400, "Bad Request")
    assert h.counters["publish_400"] == 1
    assert any("load.channels" in line for _, line in ksr.logs)


def test_publish_sources_come_from_the_router_config_or_the_setting():
    assert kam.Settings({"router": ROUTER, "shared": None}).publish.allow_sources
    # attached to a running router: the sources are not known here
    attached = kam.Settings({"shared": "some-segment"})
    assert attached.publish_sources_unknown
    given = kam.Settings({"shared": "some-segment",
                          "publish": {"allow_sources": ["10.0.0.0/8"]}})
    assert not given.publish_sources_unknown
    with pytest.raises(kam.SettingsError, match="publish.allow_sources"):
        kam.Settings({"shared": None, "router": ROUTER, "publish": {"allow_sources": ["x/99"]}})
    # the handler says so once, at start
    h = kam.Handler(attached, router=None, ksr=StatusKSR())
    assert any("publish.allow_sources" in line for _, line in h.ksr.logs)


def test_refusal_details_are_logged_even_without_decision_lines():
    h, ksr = make(settings={"log_decisions": False})
    code, reason, _ = publish(h, ksr, body(), auth=None)
    assert (code, reason) == (403, "Forbidden")
    assert any("code=403" in line and "X-Approute-Auth" in line for _, line in ksr.logs)
    # a flood of refusals: one line a second, then a count of those left out
    for _ in range(5):
        publish(h, ksr, body(), src="192.0.2.7")
    lines = [line for _, line in ksr.logs if "192.0.2.7" in line]
    assert len(lines) == 1
    h.ctx._last_log["publish_403"] = 0.0  # a second later
    publish(h, ksr, body(), src="192.0.2.7")
    lines = [line for _, line in ksr.logs if "192.0.2.7" in line]
    assert len(lines) == 2 and "(4 similar line(s) left out)" in lines[-1]
    assert h.counters["publish_403"] == 6

"""approute.kamailio handler logic against a fake KSR (no Kamailio needed).

These run in a second; the Kamailio + SIPp tests are test_kamailio_e2e.py.
"""

from __future__ import annotations

from typing import Any, Dict

import pytest

approute = pytest.importorskip("approute")
kam = pytest.importorskip("approute.kamailio")

from fake_ksr import FakeKSR  # noqa: E402  (tests/python)

ROUTER: Dict[str, Any] = {
    "nodes": [
        {"id": "n1", "uri": "sip:127.0.0.1:5071", "pool": "media"},
        {"id": "n2", "uri": "sip:127.0.0.1:5072", "pool": "media"},
    ],
    "apps": {
        "conference": {"pool": "media", "strategy": "round_robin", "resource": "conference",
                       "affinity": {"grace": 60},
                       "retry": {"codes": [503, 408], "max_attempts": 3}},
    },
}


def make(settings=None, **pvs):
    data = {"router": ROUTER, "shared": None,
            "rules": [{"ruri_user": "^room-(?P<room>[0-9]+)$", "app": "conference",
                       "data": "{room}"}],
            "apps": {"conference": {"key": "{from_domain}", "exec_app": "Conference"}},
            # the fake caller ($si 127.0.0.1) may send X-Exec-App(-Data)
            "trusted_sources": ["127.0.0.1/32"]}
    data.update(settings or {})
    ksr = FakeKSR(**pvs)
    h = kam.create_handler(kam.Settings(data), ksr=ksr)
    return h, ksr


def test_routes_sets_destination_and_headers():
    h, ksr = make()
    ksr.headers = [("X-Exec-App-Data", "1000")]
    assert h.do_app_routing(None) == kam.OK
    assert ksr.dst in ("sip:127.0.0.1:5071", "sip:127.0.0.1:5072")
    assert ("X-Exec-App", "Conference") in ksr.appended
    assert ("X-Exec-App-Data", "1000") in ksr.appended
    assert ksr.vars["$avp(approute_node)"] in ("n1", "n2")


def test_same_domain_same_node_and_header_source():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    first = ksr.dst
    ksr2 = FakeKSR(**{"$ci": "call-2", "$rU": "whatever"})
    ksr2.headers = [("X-Exec-App", "Conference")]  # mapped back through exec_app
    h.ksr = ksr2
    assert h.do_app_routing(None) == kam.OK
    assert ksr2.dst == first


def test_rule_maps_ruri_user_to_app_and_data():
    h, ksr = make(**{"$rU": "room-4242"})
    assert h.do_app_routing(None) == kam.OK
    assert ("X-Exec-App-Data", "4242") in ksr.appended


def test_unknown_app_is_404_and_no_exception():
    h, ksr = make(**{"$rU": "nosuchapp"})
    assert h.do_app_routing(None) == kam.UNKNOWN_APP
    assert ksr.vars["$avp(approute_code)"] == 404


def test_no_node_is_503():
    h, ksr = make()
    for n in ("n1", "n2"):
        h.router.set_state(n, "disabled")
    assert h.do_app_routing(None) == kam.NO_NODE
    assert ksr.vars["$avp(approute_code)"] == 503


def test_failure_retries_then_gives_up_with_503():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    first = ksr.dst
    ksr.vars["$T_reply_code"] = "503"
    assert h.on_failure(None) == kam.OK
    assert ksr.dst != first
    assert ("t_on_failure", "APPROUTE_FAILURE") in ksr.calls
    assert ("t_relay", ksr.dst) in ksr.calls
    assert h.on_failure(None) == kam.NO_NODE  # both nodes tried
    assert ksr.vars["$avp(approute_code)"] == 503
    assert int(h.router.stats()["sessions"]) == 0


def test_non_retryable_code_passes_the_reply_upstream():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    ksr.vars["$T_reply_code"] = "486"
    assert h.on_failure(None) == kam.PASS
    assert int(h.router.stats()["sessions"]) == 0


def test_timeout_counts_as_408():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    ksr.tm.timeout = True
    ksr.vars["$T_reply_code"] = "408"
    assert h.on_failure(None) == kam.OK
    assert any("code=408" in s for _, s in ksr.logs)


def bye_answered(h, ksr, status="200", src=None):
    """The BYE's reply route: ``src`` (ip, port) answered ``status``."""
    ip, port = src
    ksr.vars.update({"$rs": status, "$rm": "BYE", "$si": ip, "$sp": str(port)})
    return h.on_bye_reply(None)


def node_addr(h, node_id):
    host, port = h.router.node(node_id).uri.split(":")[1:]
    return host, int(port)


def test_confirm_end_and_unknown_call_are_quiet():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    node = ksr.vars["$avp(approute_node)"]
    ksr.vars["$rs"] = "200"
    assert h.on_reply(None) == kam.OK
    ksr.vars.update({"$rm": "BYE", "$sp": "5090"})  # the caller's BYE
    assert h.on_bye(None) == kam.PASS  # wait for the node's answer
    assert int(h.router.stats()["sessions"]) == 1  # not yet: the node has not answered
    assert bye_answered(h, ksr, "200", node_addr(h, node)) == kam.OK
    assert int(h.router.stats()["sessions"]) == 0
    assert bye_answered(h, ksr, "200", node_addr(h, node)) == kam.OK  # already ended: quiet
    assert h.on_cancel(None) == kam.OK
    assert not [s for lvl, s in ksr.logs if lvl == "err"]


def test_exceptions_never_escape():
    h, ksr = make()

    class Boom:
        def route(self, *a, **k):
            raise RuntimeError("kaboom")

    h.router = Boom()
    assert h.do_app_routing(None) == kam.INTERNAL
    errs = [s for lvl, s in ksr.logs if lvl == "err"]
    assert len(errs) == 1 and "kaboom" in errs[0] and errs[0].endswith("\n")


def test_key_templates():
    look = {"from_domain": "acme", "to_user": "1000", "hdr:X-Tenant": None}.get
    assert kam.render("{from_domain}/{to_user}", look) == ("acme/1000", True)
    assert kam.render("{hdr:X-Tenant}", look) == ("", False)
    h, ksr = make({"apps": {"conference": {"key": "{hdr:X-Tenant}"}}})
    assert h.do_app_routing(None) == kam.OK
    assert any("key=-" in s for _, s in ksr.logs)  # empty key: no affinity


@pytest.mark.parametrize("bad, fragment", [
    ({"apps": {"conference": {"key": "{nope}"}}}, "unknown template field"),
    ({"rules": [{"ruri_user": "([", "app": "x"}]}, "bad regex"),
    ({"match": ["header", "telepathy"]}, "unknown source"),
    ({"headers": {"app": "Bad Header"}}, "not a valid header"),
    ({"surprise": 1}, "unknown setting"),
])
def test_settings_errors(bad, fragment):
    data = {"router": ROUTER, "shared": None}
    data.update(bad)
    with pytest.raises(kam.SettingsError, match=fragment):
        kam.Settings(data)


# --------------------------------------------------------------------------
# per-call cost: what the handler reads and writes

class SpyRouter:
    """Wraps a router; records route()'s attrs and report_result() calls."""

    def __init__(self, real):
        self.real = real
        self.attrs = []
        self.reports = []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def route(self, app, **kw):
        self.attrs.append(kw.get("attrs"))
        return self.real.route(app, **kw)

    def report_result(self, node, code, latency=0.0):
        self.reports.append((node, code))
        return self.real.report_result(node, code, latency)


def counting(ksr):
    reads = []
    get = ksr.pv.get

    def spy(name):
        reads.append(name)
        return get(name)
    ksr.pv.get = spy
    return reads


HASH_ROUTER: Dict[str, Any] = {
    "nodes": ROUTER["nodes"],
    "apps": {
        "conference": ROUTER["apps"]["conference"],
        "byfrom": {"pool": "media", "strategy": {"name": "hash", "by": "from"}},
        "bykey": {"pool": "media", "strategy": {"name": "hash", "by": "key"}},
    },
}


def test_attrs_are_read_only_for_strategies_that_use_them():
    h, ksr = make({"router": HASH_ROUTER})
    h.router = spy = SpyRouter(h.router)
    reads = counting(ksr)
    assert h.do_app_routing(None) == kam.OK  # conference: round_robin
    assert spy.attrs == [None]
    assert "$fu" not in reads and "$si" not in reads
    assert reads.count("$rU") == 1  # rules + ruri_user source: read once
    for app, want in (("byfrom", True), ("bykey", False)):
        ksr.vars["$ci"] = "call-" + app
        ksr.headers = [("X-Exec-App", app)]
        assert h.do_app_routing(None) == kam.OK
        got = spy.attrs[-1]
        if want:
            assert got["from"] == "sip:alice@acme.example.com" and got["src_ip"] == "127.0.0.1"
        else:
            assert got is None
    # attrs: always, or a router this handler did not configure: every call
    h2, ksr2 = make({"router": HASH_ROUTER, "attrs": "always"})
    h2.router = spy2 = SpyRouter(h2.router)
    assert h2.do_app_routing(None) == kam.OK
    assert spy2.attrs[0]["from"] == "sip:alice@acme.example.com"
    assert kam.strategy_reads_attrs({"strategy": "python:mod:Cls"})
    assert kam.strategy_reads_attrs({"strategy": {"name": "consistent_bounded", "by": "to"}})
    assert not kam.strategy_reads_attrs({"strategy": {"name": "consistent_bounded"}})
    assert not kam.strategy_reads_attrs({})
    with pytest.raises(kam.SettingsError, match="attrs"):
        kam.Settings({"router": ROUTER, "shared": None, "attrs": "sometimes"})


def test_existing_headers_are_replaced_without_extra_lookups():
    h, ksr = make()
    ksr.headers = [("X-Exec-App", "conference"), ("X-Exec-App-Data", "7")]
    assert h.do_app_routing(None) == kam.OK
    assert ksr.headers == []  # both removed (known present from the match)
    assert ("X-Exec-App", "Conference") in ksr.appended and ("X-Exec-App-Data", "7") in ksr.appended


def test_no_decision_lines_when_off():
    h, ksr = make({"log_decisions": False})
    assert h.do_app_routing(None) == kam.OK
    ksr.vars["$rs"] = "200"
    assert h.on_reply(None) == kam.OK
    assert h.on_bye(None) == kam.PASS
    assert bye_answered(h, ksr, "200", node_addr(h, ksr.vars["$avp(approute_node)"])) == kam.OK
    assert int(h.router.stats()["sessions"]) == 0
    assert not ksr.logs and not h.recent
    h, ksr = make({"log_decisions": False, "recent": 5})
    assert h.do_app_routing(None) == kam.OK
    assert not ksr.logs and "route app=conference" in h.recent[-1][1]


def test_report_results_off_skips_the_timing_avp():
    h, ksr = make({"report_results": False})
    h.router = spy = SpyRouter(h.router)
    assert h.do_app_routing(None) == kam.OK
    assert "$avp(approute_t0)" not in ksr.vars and ksr.vars["$avp(approute_node)"]
    ksr.vars["$rs"] = "200"
    assert h.on_reply(None) == kam.OK
    assert spy.reports == []
    with pytest.raises(kam.SettingsError, match="report_results"):
        kam.Settings({"router": ROUTER, "shared": None, "report_results": "yes"})


def test_2xx_is_reported_once_with_latency():
    h, ksr = make()
    h.router = spy = SpyRouter(h.router)
    assert h.do_app_routing(None) == kam.OK
    node = ksr.vars["$avp(approute_node)"]
    ksr.vars["$rs"] = 200  # KSR.pv.get("$rs") is an int inside Kamailio
    assert h.on_reply(None) == kam.OK
    assert h.on_reply(None) == kam.OK
    assert spy.reports == [(node, 200)]
    assert ksr.vars["$avp(approute_t0)"] == "-"


def test_an_unlisted_app_reads_attrs_as_its_default_app_does():
    for strategy, want in (("round_robin", None), ({"name": "hash", "by": "to"}, "to")):
        router = {"nodes": ROUTER["nodes"],
                  "apps": {"default": {"pool": "media", "strategy": strategy}}}
        h, ksr = make({"router": router, "rules": [], "apps": {}, "default_app": "bench"},
                      **{"$rU": "bench"})
        h.router = spy = SpyRouter(h.router)
        assert h.do_app_routing(None) == kam.OK
        got = spy.attrs[0]
        assert (got is None) if want is None else (want in got)


# --------------------------------------------------------------------------
# The caller cannot choose the application, nor end a session
# with a BYE that went elsewhere

def routed(settings=None, **pvs):
    h, ksr = make(settings, **pvs)
    rc = h.do_app_routing(None)
    return h, ksr, rc


def test_untrusted_caller_cannot_choose_the_stasis_app():
    # 192.0.2.7 is outside trusted_sources: its headers are removed, the
    # app comes from the R-URI user (a configured app) only
    h, ksr = make(**{"$si": "192.0.2.7"})
    ksr.headers = [("X-Exec-App", "SomethingElse"), ("X-Exec-App-Data", "Evil,Conference")]
    assert h.do_app_routing(None) == kam.OK
    assert ksr.headers == []  # both removed
    assert ksr.appended == [("X-Exec-App", "Conference")]  # no data from the caller


def test_trusted_source_may_name_only_configured_apps():
    h, ksr = make()  # 127.0.0.1 is trusted in make()
    ksr.headers = [("X-Exec-App", "SomethingElse")]
    assert h.do_app_routing(None) == kam.UNKNOWN_APP
    assert ksr.vars["$avp(approute_code)"] == 404
    assert ksr.vars["$avp(approute_reason)"] == "Not Found"
    assert any("SomethingElse" in line and "not a configured application" in line
               for _, line in ksr.logs)
    assert int(h.router.stats()["sessions"]) == 0


@pytest.mark.parametrize("data", ["Evil,Conference", "a b", "x|y", "1000;evil", "x" * 65])
def test_unsafe_app_data_is_refused_not_cut(data):
    h, ksr = make()
    ksr.headers = [("X-Exec-App", "Conference"), ("X-Exec-App-Data", data)]
    assert h.do_app_routing(None) == kam.BAD_REQUEST
    assert (ksr.vars["$avp(approute_code)"], ksr.vars["$avp(approute_reason)"]) == (
        400, "Bad Request")
    assert ksr.dst is None and ksr.appended == []
    assert int(h.router.stats()["sessions"]) == 0  # nothing kept
    assert any("X-Exec-App-Data" in line for _, line in ksr.logs)


def test_ruri_user_maps_only_to_configured_apps():
    h, ksr, rc = routed(**{"$rU": "SomethingElse", "$si": "192.0.2.7"})
    assert rc == kam.UNKNOWN_APP  # not routed through the router's default app
    assert int(h.router.stats()["sessions"]) == 0
    h, ksr, rc = routed(**{"$rU": "Conference", "$si": "192.0.2.7"})  # its exec_app
    assert rc == kam.OK and ksr.appended == [("X-Exec-App", "Conference")]


def test_over_long_ruri_user_is_refused_414():
    h, ksr, rc = routed(**{"$rU": "conf" + "1" * 200})
    assert rc == kam.BAD_REQUEST
    assert (ksr.vars["$avp(approute_code)"], ksr.vars["$avp(approute_reason)"]) == (
        414, "Request-URI Too Long")
    assert any("max_ruri_user 128" in line for _, line in ksr.logs)
    h, ksr, rc = routed({"max_ruri_user": 300}, **{"$rU": "conf" + "1" * 200})
    assert rc == kam.UNKNOWN_APP  # within the limit: an unknown app, no longer too long


def test_unsafe_exec_app_in_settings_is_refused():
    with pytest.raises(kam.SettingsError, match="exec_app"):
        kam.Settings({"router": ROUTER, "shared": None,
                      "apps": {"conference": {"exec_app": "Conf,Evil"}}})
    with pytest.raises(kam.SettingsError, match="trusted_sources"):
        kam.Settings({"router": ROUTER, "shared": None, "trusted_sources": ["not-a-net"]})


def test_bye_that_went_elsewhere_leaves_the_session():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    node = ksr.vars["$avp(approute_node)"]
    ksr.vars.update({"$rm": "BYE", "$sp": "5090"})
    assert h.on_bye(None) == kam.PASS
    # answered by whoever the forged R-URI pointed at (not a node)
    assert bye_answered(h, ksr, "200", ("127.0.0.1", 9)) == kam.OK
    assert int(h.router.stats()["sessions"]) == 1
    # a negative answer of the node (481: it does not know these tags): stays
    assert bye_answered(h, ksr, "481", node_addr(h, node)) == kam.OK
    assert int(h.router.stats()["sessions"]) == 1
    assert bye_answered(h, ksr, "200", node_addr(h, node)) == kam.OK
    assert int(h.router.stats()["sessions"]) == 0


def test_bye_from_the_node_ends_at_once():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    ip, port = node_addr(h, ksr.vars["$avp(approute_node)"])
    ksr.vars.update({"$rm": "BYE", "$si": ip, "$sp": str(port)})
    assert h.on_bye(None) == kam.OK
    assert int(h.router.stats()["sessions"]) == 0


def test_local_send_failure_is_not_counted_against_the_node():
    h, ksr = make()
    h.router = spy = SpyRouter(h.router)
    assert h.do_app_routing(None) == kam.OK
    node = ksr.vars["$avp(approute_node)"]
    # no reply and no timeout: tm's 477 (send failed) is the proxy's own
    ksr.vars["$T_reply_code"] = "477"
    h.on_failure(None)
    assert spy.reports == []
    assert any("local failure 477 towards %s" % node in line for _, line in ksr.logs)
    # a timeout is the node's: code 0
    ksr.tm.timeout = True
    h.on_failure(None)
    assert spy.reports == [(node, 0)]


def test_a_reply_of_the_node_makes_its_failure_count():
    h, ksr = make()
    h.router = spy = SpyRouter(h.router)
    assert h.do_app_routing(None) == kam.OK
    node = ksr.vars["$avp(approute_node)"]
    ksr.vars["$rs"] = "503"  # the reply route sees the node's 503 ...
    assert h.on_reply(None) == kam.OK
    assert ksr.vars["$avp(approute_replied)"] == node
    ksr.vars["$T_reply_code"] = "503"  # ... then the failure route
    h.on_failure(None)
    assert spy.reports == [(node, 503)]
    # the retry went to the other node, which has not answered yet: its
    # failure without a reply (and no timeout) is local
    other = ksr.vars["$avp(approute_node)"]
    assert other != node
    ksr.vars["$T_reply_code"] = "477"
    h.on_failure(None)
    assert spy.reports == [(node, 503)]


# Regression: the Kamailio fuzz harness found a Call-ID holding lone
# surrogates (what a surrogateescape decoding of bad bytes leaves) crashing
# do_app_routing with UnicodeEncodeError in the core's str conversion.
@pytest.mark.parametrize("pv,value", [
    ("$ci", "call-\udcff-1"),
    ("$fd", "acme\udfc6.example.com"),  # the key's source
    ("$rU", "room-\ud800"),
])
def test_value_that_is_not_utf8_is_refused_400_not_a_crash(pv, value):
    h, ksr = make(**{pv: value})
    assert h.do_app_routing(None) == kam.BAD_REQUEST
    assert (ksr.vars["$avp(approute_code)"], ksr.vars["$avp(approute_reason)"]) == (
        400, "Bad Request")
    assert ksr.dst is None and ksr.appended == []
    assert int(h.router.stats()["sessions"]) == 0  # nothing kept
    assert not any(lvl == "err" for lvl, _ in ksr.logs), ksr.logs
    assert any("%s is not valid UTF-8" % pv in line for _, line in ksr.logs)


def test_a_header_kamailio_cannot_decode_is_refused_400():
    h, ksr = make(**{"$rU": "room-12"})
    real_get = ksr.pv.get

    def get(name):  # app_python3 raises when the bytes are not UTF-8
        if name == "$fd":
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return real_get(name)
    ksr.pv.get = get
    assert h.do_app_routing(None) == kam.BAD_REQUEST
    assert ksr.vars["$avp(approute_code)"] == 400
    assert int(h.router.stats()["sessions"]) == 0
    assert any("$fd is not valid UTF-8" in line for _, line in ksr.logs)


def test_bye_with_a_call_id_that_is_not_utf8_is_quiet():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    node = ksr.vars["$avp(approute_node)"]
    ksr.vars["$ci"] = "call-\udcff"
    ksr.vars["$rm"] = "BYE"
    assert h.on_bye(None) == kam.PASS  # from the caller: relayed, ended on the reply
    assert bye_answered(h, ksr, src=node_addr(h, node)) == kam.BAD_REQUEST
    assert h.on_relay_error(None) == kam.BAD_REQUEST
    assert not any(lvl == "err" for lvl, _ in ksr.logs), ksr.logs
    assert int(h.router.stats()["sessions"]) == 1  # the real call is untouched

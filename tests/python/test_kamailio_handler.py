"""approute.kamailio handler logic against a fake KSR (no Kamailio needed).

These run in a second; the Kamailio + SIPp tests are test_kamailio_e2e.py.
"""

from __future__ import annotations

import pytest


approute = pytest.importorskip("approute")
kam = pytest.importorskip("approute.kamailio")


class FakePV:
    def __init__(self, ksr):
        self.ksr = ksr

    def get(self, name):
        if name.startswith("$hdr("):
            h = name[5:-1].lower()
            for k, v in self.ksr.headers:
                if k.lower() == h:
                    return v
            return None
        return self.ksr.vars.get(name)

    def sets(self, name, value):
        self.ksr.vars[name] = str(value)

    def seti(self, name, value):
        self.ksr.vars[name] = int(value)


class FakeHdr:
    def __init__(self, ksr):
        self.ksr = ksr

    def is_present(self, name):
        return 1 if any(k.lower() == name.lower() for k, _ in self.ksr.headers) else -1

    def remove(self, name):
        self.ksr.headers = [(k, v) for k, v in self.ksr.headers if k.lower() != name.lower()]
        return 1

    def append(self, text):
        assert text.endswith("\r\n")
        k, v = text[:-2].split(":", 1)
        self.ksr.appended.append((k, v.strip()))
        return 1


class FakeTM:
    def __init__(self, ksr):
        self.ksr = ksr
        self.canceled = False
        self.timeout = False

    def t_is_canceled(self):
        return 1 if self.canceled else -1

    def t_branch_timeout(self):
        return 1 if self.timeout else -1

    def t_on_failure(self, name):
        self.ksr.calls.append(("t_on_failure", name))
        return 1

    def t_relay(self):
        self.ksr.calls.append(("t_relay", self.ksr.dst))
        return 1

    def t_reply(self, code, reason):
        self.ksr.calls.append(("t_reply", code, reason))
        return 1


class FakeKSR:
    def __init__(self, **pvs):
        self.vars = {"$ci": "call-1", "$fU": "alice", "$fd": "acme.example.com",
                     "$fu": "sip:alice@acme.example.com", "$tU": "conference",
                     "$td": "service.example.com", "$tu": "sip:conference@service.example.com",
                     "$rU": "conference", "$rd": "service.example.com",
                     "$ru": "sip:conference@service.example.com", "$si": "127.0.0.1",
                     "$rm": "INVITE"}
        self.vars.update(pvs)
        self.headers = []
        self.appended = []
        self.calls = []
        self.logs = []
        self.dst = None
        self.pv = FakePV(self)
        self.hdr = FakeHdr(self)
        self.tm = FakeTM(self)

    def setdsturi(self, uri):
        self.dst = uri
        return 1

    def seturi(self, uri):
        self.vars["$ru"] = uri
        return 1

    def err(self, s):
        self.logs.append(("err", s))

    def warn(self, s):
        self.logs.append(("warn", s))

    def info(self, s):
        self.logs.append(("info", s))

    def dbg(self, s):
        self.logs.append(("dbg", s))


ROUTER = {
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
            "apps": {"conference": {"key": "{from_domain}", "exec_app": "Conference"}}}
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


def test_confirm_end_and_unknown_call_are_quiet():
    h, ksr = make()
    assert h.do_app_routing(None) == kam.OK
    ksr.vars["$rs"] = "200"
    assert h.on_reply(None) == kam.OK
    assert h.on_bye(None) == kam.OK
    assert int(h.router.stats()["sessions"]) == 0
    assert h.on_bye(None) == kam.OK  # already ended: logged, not raised
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

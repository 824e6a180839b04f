"""The Kamailio handler for conference rooms: the ``prefer`` template beside
``key``, and how a strict key's refusal is answered (486 / 480 with
Retry-After, never 503, detail in the log only). Fake KSR as in
test_kamailio_handler.py; the real Kamailio runs in tests/e2e/test_rooms_e2e.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from test_kamailio_handler import ROUTER, kam, make

ROOMS = {"rules": [{"ruri_user": "^conf-(?P<room>[0-9]+)$", "app": "conference", "data": "{room}"}],
         "apps": {"conference": {"key": "{app_data}", "prefer": "{from_domain}", "exec_app": "Conference"}}}


class StubRouter:
    """Answers route() / retry() with the decision a test sets, records the
    arguments; everything else is the real router's."""

    def __init__(self, real, decision):
        self.real, self.decision, self.calls = real, decision, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def route(self, app, **kw):
        self.calls.append(("route", app, kw))
        return self.decision

    def retry(self, call_id, code=503):
        self.calls.append(("retry", call_id, code))
        return self.decision


def refusal(reason, detail="room 2001 lives on n1, which is full (2/2 conference)"):
    return SimpleNamespace(ok=False, reason=reason, detail=detail, node_id=None, uri=None,
                           app="conference", attempt=1)


def test_prefer_is_rendered_and_passed_beside_the_key():
    h, ksr = make(ROOMS, **{"$rU": "conf-2001"})
    spy = StubRouter(h.router, SimpleNamespace(ok=True, reason="strategy", detail="", node_id="n1",
                                               uri="sip:127.0.0.1:5071", app="conference", attempt=1))
    h.router = spy
    assert h.do_app_routing(None) == kam.OK
    (_, app, kw), = spy.calls
    assert app == "conference" and kw["key"] == "2001" and kw["prefer"] == "acme.example.com"
    # without a key there is nothing to prefer for
    h, ksr = make(dict(ROOMS, apps={"conference": {"prefer": "{from_domain}"}}), **{"$rU": "conf-2001"})
    h.router = spy = StubRouter(h.router, spy.decision)
    assert h.do_app_routing(None) == kam.OK
    assert "prefer" not in spy.calls[0][2]


@pytest.mark.parametrize("reason, code, phrase", [
    ("key_full", 486, "Busy Here"),
    ("key_down", 480, "Temporarily Unavailable"),
    ("key_draining", 480, "Temporarily Unavailable"),
    ("key_disabled", 480, "Temporarily Unavailable"),
    ("key_tried", 480, "Temporarily Unavailable"),
])
def test_a_strict_refusal_is_486_or_480_with_retry_after(reason, code, phrase):
    h, ksr = make(ROOMS, **{"$rU": "conf-2001"})
    h.router = StubRouter(h.router, refusal(reason))
    assert h.do_app_routing(None) == kam.NO_NODE
    assert (ksr.vars["$avp(approute_code)"], ksr.vars["$avp(approute_reason)"]) == (code, phrase)
    assert ksr.reply_headers == [("Retry-After", "30")]
    assert ksr.dst is None
    # the caller hears the phrase; the log has the reason, the key and the node
    line = [t for _, t in ksr.logs if "refused" in t and reason in t]
    assert line and "key=2001" in line[0] and "lives on n1" in line[0]


def test_no_node_stays_503_without_retry_after():
    h, ksr = make(ROOMS, **{"$rU": "conf-2001"})
    h.router = StubRouter(h.router, refusal("no_node", "no candidate in pool media"))
    assert h.do_app_routing(None) == kam.NO_NODE
    assert ksr.vars["$avp(approute_code)"] == 503 and ksr.reply_headers == []


def test_refusal_log_lines_are_rate_limited():
    h, ksr = make(ROOMS, **{"$rU": "conf-2001"})
    h.router = StubRouter(h.router, refusal("key_full"))
    for i in range(20):
        ksr.vars["$ci"] = "call-%d" % i
        assert h.do_app_routing(None) == kam.NO_NODE
    assert len([t for _, t in ksr.logs if "refused call_id" in t]) == 1  # decision notes aside


def test_retry_after_setting():
    h, ksr = make(dict(ROOMS, retry_after=0), **{"$rU": "conf-2001"})
    h.router = StubRouter(h.router, refusal("key_full"))
    assert h.do_app_routing(None) == kam.NO_NODE
    assert ksr.vars["$avp(approute_code)"] == 486 and ksr.reply_headers == []
    for bad in (-1, 1.5, "30", True, 100000):
        with pytest.raises(kam.SettingsError, match="retry_after"):
            make(dict(ROOMS, retry_after=bad))


def test_prefer_template_is_checked():
    with pytest.raises(kam.SettingsError, match="apps.conference"):
        make(dict(ROOMS, apps={"conference": {"key": "{app_data}", "prefer": "{nonsense}"}}))


@pytest.mark.parametrize("node_code, reason, code", [
    ("503", "key_full", 486), ("503", "key_tried", 486),   # the room's node said it is full
    ("408", "key_tried", 480), ("408", "key_down", 480),   # it did not answer
])
def test_failure_route_does_not_move_a_strict_key(node_code, reason, code):
    """The room's node bounced the call; retry() refuses to move the key:
    486 (or 480 when the node did not answer) to the caller, no relay to
    another node."""
    h, ksr = make(ROOMS, **{"$rU": "conf-2001"})
    assert h.do_app_routing(None) == kam.OK
    h.router = StubRouter(h.router, refusal(reason))
    ksr.vars["$T_reply_code"] = node_code
    if node_code == "408":
        ksr.tm.timeout = True
    assert h.on_failure(None) == kam.NO_NODE
    assert ksr.vars["$avp(approute_code)"] == code
    assert ksr.reply_headers == [("Retry-After", "30")]
    assert not [c for c in ksr.calls if c[0] == "t_relay"]


def test_kemi_failure_route_sends_the_strict_code():
    h, ksr = make(ROOMS, **{"$rU": "conf-2001"})
    assert h.do_app_routing(None) == kam.OK
    h.router = StubRouter(h.router, refusal("key_full"))
    ksr.vars["$T_reply_code"] = "503"
    assert h.ksr_approute_failure(None) == 1
    assert ("t_reply", 486, "Busy Here") in ksr.calls


def test_example_settings_key_rooms_and_prefer_domains():
    from pathlib import Path

    import yaml
    repo = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((repo / "examples" / "kamailio" / "approute-kamailio.yaml").read_text())
    conf = data["apps"]["conference"]
    assert conf["key"] == "{app_data}" and conf["prefer"] == "{from_domain}"
    router = yaml.safe_load((repo / "examples" / "kamailio" / "router.yaml").read_text())
    aff = router["apps"]["conference"]["affinity"]
    assert aff["strict"] is True and 0 < aff["headroom"] < 1
    kam.Settings(dict(data, router=ROUTER, shared=None))  # they load

"""Router.explain() from Python, `approute explain`, log_decisions: json and
the status page's /explain (the reasons themselves: tests/cpp/explain_test.cc)."""

from __future__ import annotations

import io
import json
import os
import uuid
from typing import Any, Dict, Iterator

import pytest

approute = pytest.importorskip("approute")
kam = pytest.importorskip("approute.kamailio")

from approute import cli, status_page  # noqa: E402
from approute.explain import explain_text, short_trace  # noqa: E402
from fake_ksr import FakeKSR  # noqa: E402  (tests/python)

YAML = """\
nodes:
  - {id: a, uri: "sip:10.0.0.1:5060", pool: media, capacity: {conference: 2}}
  - {id: b, uri: "sip:10.0.0.2:5060", pool: media, capacity: {conference: 2}}
  - {id: c, uri: "sip:10.0.0.3:5060", pool: media, capacity: {conference: 2}}
apps:
  conference:
    pool: media
    resource: conference
    strategy: least_loaded
    affinity: {grace: 60, strict: true, headroom: 0.5}
"""


@pytest.fixture
def shared() -> Iterator[Any]:
    name = "approute-explain-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    r = approute.Router.from_yaml(YAML, shared=name)
    yield name, r
    del r
    approute.Router.unlink(name)


def picture(r: Any) -> Any:
    return (sorted((s.call_id, s.node_id, s.key) for s in r.sessions()),
            sorted((a.key, a.node_id, a.sessions) for a in r.affinities()),
            sorted((n.id, tuple(sorted(n.sessions.items())), n.routed_total) for n in r.nodes()),
            json.dumps(r.stats().decisions, sort_keys=True) if hasattr(r.stats(), "decisions") else "")


def test_explain_is_a_dry_run_and_names_every_node() -> None:
    r = approute.Router.from_yaml(YAML)
    r.route("conference", call_id="c1", key="room1")
    r.set_state("c", "disabled")
    before = picture(r)
    for _ in range(5):
        t = r.explain("conference", key="room2", exclude=["b"])
    assert picture(r) == before
    by = {n["id"]: n for n in t["nodes"]}
    assert by["c"]["exclusion"] == "disabled" and not by["c"]["candidate"]
    assert by["b"]["exclusion"] == "excluded"
    # a holds room1's call: 1 of 2, a new key only below 1 (headroom 0.5)
    assert by["a"]["exclusion"] == "headroom" and by["a"]["candidate"]
    assert t["decision"]["ok"] is False and t["decision"]["reason"] == "no_node"
    assert t["affinity"]["outcome"] == "new_key"
    assert set(approute.exclusion_names()) >= {"disabled", "excluded", "headroom", "full", "tried"}
    json.dumps(t)  # plain data


def test_explain_text_and_short_trace() -> None:
    r = approute.Router.from_yaml(YAML)
    d = r.route("conference", call_id="c1", key="room1")
    t = r.explain("conference", key="room1")
    text = explain_text(t)
    assert "NODE" in text and "EXCLUSION" in text
    assert "decision: %s" % d.node_id in text and "reason affinity" in text
    assert "key 'room1' lives on %s" % d.node_id in text
    s = short_trace(t)
    assert s["affinity"] == "join" and s["app"] == "conference"


def test_cli_explain_table_json_and_call_id(shared: Any) -> None:
    name, r = shared
    r.route("conference", call_id="c1", key="room1")
    r.route("conference", call_id="c2", key="room1")  # its node is full now
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["explain", "--shared", name, "--app", "conference", "--key", "room1"], out, err) == 0, \
        err.getvalue()
    text = out.getvalue()
    assert "refused, reason key_full" in text
    assert "full: conference 2/2" in text
    out = io.StringIO()
    assert cli.main(["explain", "--shared", name, "--app", "conference", "--key", "room9", "--json"],
                    out, err) == 0
    t = json.loads(out.getvalue())
    assert t["decision"]["ok"] and t["affinity"]["outcome"] == "new_key"
    out = io.StringIO()
    assert cli.main(["explain", "c1", "--shared", name], out, err) == 0
    assert "session 'c1'" in out.getvalue()
    # errors: an unknown app, a call id with --key, no app
    err = io.StringIO()
    assert cli.main(["explain", "--shared", name, "--app", "nope"], io.StringIO(), err) == 1
    assert "unknown app" in err.getvalue()
    assert cli.main(["explain", "c1", "--shared", name, "--key", "x"], io.StringIO(), io.StringIO()) == 2
    assert cli.main(["explain", "--shared", name], io.StringIO(), io.StringIO()) == 2
    assert cli.main(["explain", "nope", "--shared", name], io.StringIO(), io.StringIO()) == 1


def test_status_page_explain_escapes_everything(shared: Any) -> None:
    name, r = shared
    nasty = "<script>alert(1)</script>"
    page = status_page.explain_page(r, name, {"app": "conference", "key": nasty, "prefer": "&x"})
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "decision:" in page and "<table" in page
    assert "<form" in status_page.explain_page(r, name, {})
    from approute.metrics import BadRequest
    with pytest.raises(BadRequest, match="unknown app"):
        status_page.explain_page(r, name, {"app": "nope"})


def test_log_decisions_json_carries_the_short_trace() -> None:
    router = {"nodes": [{"id": "n1", "uri": "sip:127.0.0.1:5071", "pool": "media"},
                        {"id": "n2", "uri": "sip:127.0.0.1:5072", "pool": "media"}],
              "apps": {"conference": {"pool": "media", "strategy": "round_robin",
                                      "resource": "conference", "affinity": {"grace": 60}}}}
    data: Dict[str, Any] = {
        "router": router, "shared": None, "log_decisions": "json",
        "rules": [{"ruri_user": "^room-(?P<room>[0-9]+)$", "app": "conference", "data": "{room}"}],
        "apps": {"conference": {"key": "{from_domain}"}}, "trusted_sources": ["127.0.0.1/32"]}
    ksr = FakeKSR()
    h = kam.create_handler(kam.Settings(data), ksr=ksr)
    assert h.do_app_routing(None) == kam.OK
    lines = [json.loads(t.split("approute: ", 1)[1]) for lvl, t in ksr.logs
             if lvl == "info" and t.startswith("approute: {")]
    assert lines, ksr.logs
    rec = lines[-1]
    assert rec["event"] == "route" and rec["ok"] is True and rec["node"] in ("n1", "n2")
    assert rec["call_id"] and rec["trace"]["app"] == "conference"
    assert rec["trace"]["affinity"] == "new_key"
    assert rec["trace"]["picks"][-1] == [rec["node"], "taken"]
    with pytest.raises(kam.SettingsError):
        kam.Settings(dict(data, log_decisions="yaml"))


def test_explain_over_http_from_approute_metrics(shared: Any) -> None:
    import urllib.error
    import urllib.parse
    import urllib.request

    from metrics_server import start_server, stop_server  # tests/python

    name, r = shared
    r.route("conference", call_id="c1", key="room1")
    proc, addr = start_server(name)
    try:
        q = urllib.parse.urlencode({"app": "conference", "key": "room1\"><b>x"})
        with urllib.request.urlopen("http://%s/explain?%s" % (addr, q), timeout=10) as resp:
            assert resp.status == 200
            assert "script-src" not in resp.headers.get("Content-Type", "")
            page = resp.read().decode()
        assert "<b>x" not in page and "&lt;b&gt;x" in page
        assert "decision:" in page
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen("http://%s/explain?app=nope" % addr, timeout=10)
        assert e.value.code == 400
        with urllib.request.urlopen("http://%s/" % addr, timeout=10) as resp:
            assert 'href="/explain"' in resp.read().decode()
    finally:
        stop_server(proc)

"""Call-IDs and keys longer than the 127-byte slot (docs/state.md, "Long call
ids and keys"): routed, found by the full value and by the listed stored form,
through the Python API, the CLI and the Kamailio handler."""
from __future__ import annotations

import os
import uuid

import pytest

approute = pytest.importorskip("approute")
kam = pytest.importorskip("approute.kamailio")

from fake_ksr import FakeKSR  # noqa: E402  (tests/python)

CONF = """
nodes:
  - {id: a, uri: "sip:127.0.0.1:5071", pool: media}
  - {id: b, uri: "sip:127.0.0.1:5072", pool: media}
apps:
  conference:
    pool: media
    strategy: round_robin
    affinity: {grace: 60}
    retry: {codes: [503], max_attempts: 3}
"""

LONG = "sbc-" + "9f8e7d6c5b4a" * 24 + "@edge.example.com"  # 309 bytes


def test_long_call_id_and_key_route_retry_and_end() -> None:
    r = approute.Router.from_yaml(CONF)
    key = "tenant-" + "t" * 200 + "/alice"
    d = r.route("conference", call_id=LONG, key=key)
    assert d.ok and d.reason == "strategy"
    assert r.route("conference", call_id=LONG, key=key).reason == "session"
    (s,) = r.sessions()
    assert len(s.call_id.encode()) == 127 and "~xxh3:" in s.call_id
    assert s.call_id.startswith(LONG[:60])
    assert len(s.key.encode()) == 127 and s.key.startswith("tenant-ttt")
    # another call with the same long key follows it; a different tail does not share the claim
    assert r.route("conference", call_id="c2", key=key).reason == "affinity"
    assert r.route("conference", call_id="c3", key=key[:-5] + "bobby").reason == "strategy"
    moved = r.retry(LONG, code=503)
    assert moved.ok and moved.node_id != d.node_id
    r.confirm(LONG)
    r.end(LONG)
    with pytest.raises(approute.NotFoundError):
        r.end(LONG)
    assert int(r.stats()["sessions"]) == 2


def test_a_utf8_value_is_listed_as_text() -> None:
    r = approute.Router.from_yaml(CONF)
    call = "é" * 200  # 400 bytes: the prefix must not cut a character
    r.route("conference", call_id=call, key="ü" * 100)
    (s,) = r.sessions()
    assert s.call_id.startswith("é" * 40) and "~xxh3:" in s.call_id
    assert s.key.startswith("ü" * 40)
    r.end(call)


def test_absurd_length_is_refused_with_the_limit() -> None:
    r = approute.Router.from_yaml(CONF)
    with pytest.raises(approute.InvalidArgumentError, match="65536 bytes long, at most 65535"):
        r.route("conference", call_id="x" * 65536)
    with pytest.raises(approute.InvalidArgumentError, match="key is 70000 bytes long"):
        r.route("conference", call_id="c", key="k" * 70000)
    assert int(r.stats()["sessions"]) == 0


def test_cli_end_takes_the_full_value_or_the_listed_form(capsys: pytest.CaptureFixture[str]) -> None:
    from approute import cli

    name = "approute-long-%d-%s" % (os.getpid(), uuid.uuid4().hex[:6])
    r = approute.Router.from_yaml(CONF, shared=name)
    try:
        r.route("conference", call_id=LONG, key="k")
        r.route("conference", call_id=LONG + "-2", key="k")
        assert cli.main(["end", LONG, "--shared", name]) == 0
        listed = [s.call_id for s in r.sessions()]
        assert len(listed) == 1
        assert cli.main(["end", listed[0], "--shared", name]) == 0
        assert r.sessions() == []
    finally:
        del r
        approute.Router.unlink(name)


def test_kamailio_handler_routes_and_ends_a_long_call_id() -> None:
    import yaml

    data = {"router": yaml.safe_load(CONF), "shared": None,
            "rules": [{"ruri_user": "^room-(?P<room>[0-9]+)$", "app": "conference", "data": "{room}"}],
            "apps": {"conference": {"key": "{hdr:X-Tenant}/{from_user}"}}}
    ksr = FakeKSR(**{"$ci": LONG, "$rU": "room-1000"})
    ksr.headers = [("X-Tenant", "tenant-" + "x" * 150)]
    h = kam.create_handler(kam.Settings(data), ksr=ksr)
    assert h.do_app_routing(None) == kam.OK, ksr.logs
    node = ksr.vars["$avp(approute_node)"]
    (s,) = h.router.sessions()
    assert "~xxh3:" in s.call_id and "~xxh3:" in s.key
    ksr.vars.update({"$rm": "BYE", "$sp": "5090"})
    assert h.on_bye(None) == kam.PASS
    host, port = h.router.node(node).uri.split(":")[1:]
    ksr.vars.update({"$rs": "200", "$si": host, "$sp": port})
    assert h.on_bye_reply(None) == kam.OK
    assert int(h.router.stats()["sessions"]) == 0

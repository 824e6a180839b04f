"""Status reports, probes and passive results through the Python API."""
from __future__ import annotations

import json
import time
from typing import Dict

import approute
import pytest

SECRET = "0123456789abcdef-media"
CONF = f"""
status:
  allow_sources: ["127.0.0.0/8"]
  keys: {{media: {{k1: "{SECRET}"}}}}
health:
  probe: {{down_after: 2, up_after: 1}}
  outlier: {{consecutive_failures: 2, base_ejection: 30}}
apps:
  default: {{pool: media, strategy: round_robin}}
"""


def report(node: str, seq: int, **extra) -> str:
    return json.dumps({"node": node, "uri": "sip:127.0.0.1:5071", "pool": "media", "seq": seq, **extra})


# Entity tag -> node, so a refresh without a body is signed for its node.
ETAG_NODES: Dict[str, str] = {}


def publish(router: approute.Router, body: str, *, expires: int = 60, if_match=None, secret=SECRET,
            source="127.0.0.1") -> approute.ReportResult:
    try:
        node = json.loads(body)["node"]
    except ValueError:
        node = ETAG_NODES.get(if_match, "ast5")
    auth = approute.sign_report(body, keyid="k1", secret=secret, node=node, etag=if_match or "",
                                expires=expires)
    res = router.apply_report(body, expires=expires, source=source, auth=auth, if_match=if_match)
    if res.code == 200 and res.etag:
        ETAG_NODES[res.etag] = res.node_id
    return res


def test_join_refresh_and_leave() -> None:
    r = approute.Router.from_yaml(CONF)
    res = publish(r, report("ast5", 1, load={"cpu": 0.4, "channels": 12}, quality={"mos": 4.3}))
    assert (res.code, res.reason, res.node_id, res.expires) == (200, "OK", "ast5", 60)
    n = r.node("ast5")
    assert n.origin == "report" and n.load == {"cpu": 0.4, "channels": 12.0} and n.quality == {"mos": 4.3}
    assert n.lease_expires == pytest.approx(time.time() + 60, abs=5)
    assert r.route("x", call_id="c1").node_id == "ast5"
    refreshed = publish(r, "", if_match=res.etag)
    assert refreshed.code == 200 and refreshed.etag != res.etag
    assert publish(r, "", if_match=res.etag).code == 412
    assert publish(r, "", expires=0, if_match=refreshed.etag).code == 200
    assert not r.route("x", call_id="c2").ok, "a node that left takes no new calls"
    r.end("c1")
    r.sweep()
    with pytest.raises(approute.NotFoundError):
        r.node("ast5")
    assert r.stats()["reports_accepted"] == 3


@pytest.mark.parametrize(
    "body, kwargs, code, why",
    [
        (report("a", 1), {"source": "192.0.2.1"}, 403, "source"),
        (report("a", 1), {"secret": "another-secret-entirely"}, 403, "signature"),
        ("{bad json", {}, 400, "malformed"),
        (report("a", 1, colour="blue"), {}, 400, "malformed"),
        (json.dumps({"node": "a", "uri": "sip:203.0.113.9", "pool": "media", "seq": 1}), {}, 403, "uri"),
    ],
)
def test_refused_reports_change_nothing(body, kwargs, code, why) -> None:
    r = approute.Router.from_yaml(CONF)
    res = publish(r, body, **kwargs)
    assert res.code == code and res.reason and not res.etag
    assert r.nodes() == []
    assert r.stats()["reports_refused_by"][why] == 1


def test_unsigned_and_replayed() -> None:
    r = approute.Router.from_yaml(CONF)
    body = report("a", 5)
    assert r.apply_report(body, expires=60, source="127.0.0.1").reason == "missing X-Approute-Auth"
    auth = approute.sign_report(body, keyid="k1", secret=SECRET, expires=60)
    assert r.apply_report(body, expires=60, source="127.0.0.1", auth=auth).code == 200
    replay = r.apply_report(body, expires=60, source="127.0.0.1", auth=auth)
    assert replay.code == 403 and "seq 5" in replay.reason
    old = approute.sign_report(report("a", 6), keyid="k1", secret=SECRET, expires=60,
                               ts=int(time.time()) - 600)
    assert r.apply_report(report("a", 6), expires=60, source="127.0.0.1", auth=old).code == 403


def test_probes_and_outliers() -> None:
    r = approute.Router.from_yaml(CONF + "nodes:\n  - {id: n1, uri: 'sip:10.0.0.1', pool: media}\n"
                                         "  - {id: n2, uri: 'sip:10.0.0.2', pool: media}\n")
    r.report_probe("n1", 0)
    assert r.node("n1").health == "up"
    r.report_probe("n1", 0)
    assert r.node("n1").health == "down"
    r.report_probe("n1", 200, rtt_ms=4.5)
    assert r.node("n1").health == "up"
    assert r.node("n1").latency_ewma_ms == pytest.approx(4.5)
    r.report_result("n2", 408, latency_ms=0)
    r.report_result("n2", 500)
    assert r.node("n2").ejected_until == pytest.approx(time.time() + 30, abs=5)
    assert all(r.route("x", call_id=f"c{i}").node_id == "n1" for i in range(4))
    with pytest.raises(approute.InvalidArgumentError):
        r.report_probe("n1", 1000)
    with pytest.raises(approute.NotFoundError):
        r.report_result("ghost", 200)


def test_a_leave_by_report_drains_like_a_deadline_of_now() -> None:
    """Keys of a node that left go elsewhere at once; their claims keep no grace time."""
    conf = CONF.replace("apps:\n  default: {pool: media, strategy: round_robin}",
                        "apps:\n  default: {pool: media, strategy: round_robin, affinity: {grace: 300}}")
    r = approute.Router.from_yaml(conf)
    first = publish(r, report("ast5", 1))
    second = json.dumps({"node": "ast6", "uri": "sip:127.0.0.1:5072", "pool": "media", "seq": 1})
    assert publish(r, second).code == 200
    r.route("x", call_id="held", key="k1")          # round robin: k1 on ast5, live
    r.route("x", call_id="other", key="k2")         # k2 on ast6
    r.route("x", call_id="idle", key="k3")          # k3 on ast5 ...
    r.end("idle")                                   # ... in its grace time
    assert {a.key: a.node_id for a in r.affinities()} == {"k1": "ast5", "k2": "ast6", "k3": "ast5"}
    assert publish(r, "", expires=0, if_match=first.etag).code == 200
    assert [a.key for a in r.affinities(node="ast5")] == ["k1"], "idle claims are forgotten on a leave"
    d = r.route("x", call_id="next", key="k1")
    assert d.node_id == "ast6", "a live key of the leaving node moves at once"
    r.end("held")
    assert r.affinities(node="ast5") == []

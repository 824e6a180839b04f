"""The status page `approute metrics --listen` serves at /: rendering (escaping,
marks, bars), over HTTP, and loaded in a headless Chromium (Debian's `chromium`)
from a running router: the nodes show, nothing is logged as an error, the page
reloads itself with the new state. Without Chromium the browser tests skip, or
fail where APPROUTE_E2E_REQUIRED=1 (CI).

APPROUTE_STATUS_SCREENSHOT=PATH also writes the browser test's screenshot to PATH
(docs/status-page.png is made that way)."""
from __future__ import annotations

import html.parser
import os
import re
import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import approute
import pytest
from approute import status_page
from headless_chromium import Chromium, find_chromium
from metrics_server import start_server, stop_server
from promql_names import required_binary

EVIL = "<img src=x onerror=alert(1)>&\"'</td>"

ROUTER_YAML = """
state: {max_nodes: 16, max_sessions: 256, max_affinities: 256}
nodes:
  - {id: ast1, uri: "sip:10.0.0.1:5060", pool: media, capacity: {conference: 10}}
  - {id: ast2, uri: "sip:10.0.0.2:5060", pool: media, capacity: {conference: 10}}
  - {id: ast3, uri: "sip:10.0.0.3:5060;transport=tcp", pool: media, capacity: {conference: 10}}
  - {id: ast4, uri: "sip:10.0.0.4:5060", pool: media, capacity: {conference: 10}}
  - {id: q1, uri: "sip:10.0.1.1:5060", pool: queues}
  - {id: q2, uri: "sip:10.0.1.2:5060", pool: queues}
apps:
  conference: {pool: media, resource: conference, strategy: least_loaded, affinity: {grace: 300}}
  queue: {pool: queues, strategy: round_robin}
"""
MEDIA = ("ast1", "ast2", "ast3", "ast4")


class Tags(html.parser.HTMLParser):
    """Every start tag of a page, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: List[str] = []
        self.text: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Tags:
    t = Tags()
    t.feed(page)
    t.close()
    return t


def node(**kw: object) -> Dict[str, object]:
    d: Dict[str, object] = {"id": "n", "uri": "sip:10.0.0.9:5060", "pool": "p", "state": "active",
                            "health": "up", "sessions": {}, "capacity": {}, "load": {},
                            "routed_total": 0, "ejected_until": None, "busy_until": None}
    d.update(kw)
    return d


# --------------------------------------------------------------------------
# rendering

def test_everything_from_the_state_is_escaped() -> None:
    snap = status_page.Snapshot(
        shared=EVIL, taken=1000.0, stats={"sessions": EVIL},
        nodes=[node(id=EVIL, uri="sip:" + EVIL, pool=EVIL, state=EVIL, health=EVIL,
                    sessions={EVIL: 1}, capacity={EVIL: 2}, load={EVIL: 0.5})],
        keys=[{"app": EVIL, "key": EVIL, "node_id": EVIL, "sessions": 1, "grace_left": None}],
        keys_total=1, cluster={"mode": "cluster", "name": EVIL, "proxy": EVIL, "proxies": [EVIL]},
        version=EVIL)
    page = status_page.render(snap)
    tags = parse(page)
    assert "img" not in tags.tags and "script" not in tags.tags
    assert "<img" not in page and "</td>\"" not in page
    text = "".join(tags.text)
    assert text.count(EVIL) >= 10  # shown, as text, wherever it was put


def test_marks_bars_and_pool_summary() -> None:
    now = 1000.0
    conf10 = {"conference": 10}
    snap = status_page.Snapshot(
        shared="seg", taken=now, stats={"sessions": 20, "affinities": 3, "nodes": 4},
        nodes=[node(id="a", pool="media", sessions={"conference": 9}, capacity=conf10),
               node(id="b", pool="media", state="draining", sessions={"conference": 5}, capacity=conf10),
               node(id="c", pool="media", health="down", capacity=conf10, ejected_until=now + 30,
                    busy_until=now + 12),
               node(id="d", pool="other", sessions={"calls": 7})])
    page = status_page.render(snap)
    rows = dict(re.findall(r'<tr class="node" data-node="(\w+)">(.*?)</tr>', page))
    assert set(rows) == {"a", "b", "c", "d"}
    assert 'class="fill warn" style="width:90.0%"' in rows["a"] and "9/10" in rows["a"]
    assert "state-draining" in rows["b"] and 'class="fill ok" style="width:50.0%"' in rows["b"]
    assert "health-down" in rows["c"]
    assert "busy until 00:16:52" in rows["c"] and "ejected until 00:17:10" in rows["c"]
    assert "no limit" in rows["d"] and "busy" not in rows["a"]
    # pool media: 14 sessions on capacity-bearing nodes over the capacity of a (the
    # only node active and up): past it, drawn full
    media = page.split('data-pool="media"')[1].split("</section>")[0]
    summary = media.split('<div class="summary"')[1].split("<table")[0]
    assert "14/10" in summary and "fill full" in summary
    assert 'http-equiv="refresh" content="5"' in page
    assert '<p class="cluster local">' in page  # no cluster: section
    snap.cluster = {"mode": "degraded", "name": "prod", "proxy": "kam1", "proxies": ["kam1", "kam2"],
                    "degraded_placements": 3}
    cluster = re.search(r'<p class="cluster (\w+)">(.*?)</p>', status_page.render(snap))
    assert cluster is not None and cluster.group(1) == "degraded"
    # the degraded state first, then the figures
    first, second = cluster.group(2).split("<br>")
    assert first.startswith("DEGRADED: Redis is out (")
    assert second.startswith("cluster: degraded   deployment: prod   proxy: kam1   proxies: kam1,kam2")


# --------------------------------------------------------------------------
# a running router

@pytest.fixture
def router() -> Iterator[Tuple[approute.Router, str]]:
    """Pool media: ast1 with room-a (7 of 10), ast2 full with room-b, ast3 draining with
    a key a SIP header could carry, ast4 down; pool queues: q1 suspect, q2 up."""
    shared = "approute-page-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    r = approute.Router.from_yaml(ROUTER_YAML, shared=shared)

    def calls(key: str, n: int, on: str) -> None:
        for i in range(n):
            d = r.route("conference", call_id="%s-%d" % (key, i), key=key,
                        exclude=[m for m in MEDIA if m != on])
            assert d.ok and d.node_id == on, (key, d.reason, d.detail)

    calls("room-a@example.com", 7, "ast1")
    calls("room-b@example.org", 10, "ast2")
    calls(EVIL, 3, "ast3")
    calls("sales@example.net", 1, "ast1")
    r.end("sales@example.net-0")  # its key stays for its grace time, with no session
    for i in range(5):
        assert r.route("queue", call_id="q-%d" % i).ok
    r.report_load("ast1", cpu=0.42, channels=14)
    r.report_load("ast2", cpu=0.91, channels=20)
    r.drain("ast3")
    r.set_health("ast4", "down")
    r.set_health("q1", "suspect")
    try:
        yield r, shared
    finally:
        approute.Router.unlink(shared)


def test_page_over_http(router: Tuple[approute.Router, str]) -> None:
    r, shared = router
    proc, addr = start_server(shared)
    try:
        with urllib.request.urlopen("http://%s/" % addr, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            assert "script-src" not in resp.headers["Content-Security-Policy"]
            assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
            page = resp.read().decode()
        for n in r.nodes():
            assert 'data-node="%s"' % n.id in page
        assert "room-b@example.org" in page and "<img" not in page
        req = urllib.request.Request("http://%s/" % addr, method="HEAD")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200 and resp.read() == b""
        with urllib.request.urlopen("http://%s/metrics" % addr, timeout=10) as resp:
            assert b"approute_node_sessions" in resp.read()
        approute.Router.unlink(shared)  # the router is gone: the page says so, the server stays
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen("http://%s/" % addr, timeout=10)
        assert e.value.code == 503 and b"cannot read the router" in e.value.read()
    finally:
        stop_server(proc)


# --------------------------------------------------------------------------
# headless Chromium

@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    binary = find_chromium() or required_binary("chromium", "the status page's browser test")
    profile = tmp_path / "chromium"
    profile.mkdir()
    c = Chromium(binary, profile)
    try:
        c.open_tab()
        yield c
    finally:
        c.close()


def test_the_harness_sees_console_errors(chromium: Chromium) -> None:
    """The browser checks can fail: a page with a script error and a console.error is caught."""
    chromium.load("data:text/html,<p>x</p><script>nosuch()</script><script>console.error('boom')</script>")
    problems = chromium.problems()
    assert any("nosuch" in p for p in problems) and any("boom" in p for p in problems), problems


def test_page_in_headless_chromium(router: Tuple[approute.Router, str], chromium: Chromium,
                                   tmp_path: Path) -> None:
    r, shared = router
    proc, addr = start_server(shared)
    try:
        chromium.load("http://%s/" % addr)
        shown = chromium.evaluate("[...document.querySelectorAll('tr.node')].map(r => r.dataset.node)")
        assert sorted(shown) == sorted(n.id for n in r.nodes())

        def row(node_id: str) -> str:
            text: str = chromium.evaluate("document.querySelector('tr.node[data-node=\"%s\"]').innerText"
                                          % node_id)
            return text

        assert "draining" in row("ast3") and "down" in row("ast4") and "suspect" in row("q1")
        assert "10/10" in row("ast2") and "cpu=0.91" in row("ast2")
        # bars: room-a's node 7 of 10, room-b's full; colour by share
        fills = chromium.evaluate("[...document.querySelectorAll('tr.node .fill')]"
                                  ".map(f => f.className + ' ' + f.style.width)")
        assert "fill ok 70%" in fills and "fill full 100%" in fills
        # the pool: 20 sessions (7 + 10 + 3) over the capacity of its active, up nodes (ast1, ast2)
        assert "20/20" in chromium.evaluate(
            "document.querySelector('section[data-pool=\"media\"] .summary').innerText")
        # the top keys, most sessions first; the hostile key is shown as text, not markup
        keys = chromium.evaluate("[...document.querySelectorAll('tr.key td.keyname')]"
                                 ".map(td => td.textContent)")
        assert keys == ["room-b@example.org", "room-a@example.com", EVIL, "sales@example.net"]
        assert chromium.evaluate("document.querySelectorAll('script, img, iframe').length") == 0
        assert chromium.evaluate("document.querySelector('.cluster').textContent").startswith("local")
        shot = tmp_path / "status-page.png"
        chromium.screenshot(shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("APPROUTE_STATUS_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["APPROUTE_STATUS_SCREENSHOT"])

        # the page reloads itself (meta refresh) and shows the router as it is now
        r.add_node("ast5", "sip:10.0.0.5:5060", pool="media", capacity={"conference": 10})
        mark = len(chromium.events)
        chromium.wait_event("Page.loadEventFired", timeout=status_page.REFRESH_SECONDS + 20, after=mark)
        shown = chromium.evaluate("[...document.querySelectorAll('tr.node')].map(r => r.dataset.node)")
        assert "ast5" in shown
        assert chromium.problems() == []
    finally:
        stop_server(proc)

"""approute.agent against a fake proxy on a loopback UDP socket.

The fake proxy parses each PUBLISH, records it, and answers as the test
scripts it (200 with an entity tag, 412, silence, a stray response ...).
No Kamailio, no router: the signer is injected.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

agent_mod = pytest.importorskip("approute.agent")
from approute.agent import (  # noqa: E402
    Agent,
    AgentConfig,
    AgentError,
    CpuSampler,
    build_publish,
    memory_usage,
    parse_channel_output,
    parse_response,
    read_channels,
    sign_report_py,
)

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------
# a fake proxy

class Request:
    def __init__(self, data: bytes):
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.raw = data
        self.start = lines[0]
        self.method, self.uri, self.version = self.start.split(" ", 2)
        self.headers: Dict[str, str] = {}
        self.order: List[str] = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
            self.order.append(k.strip())
        self.body = body.decode()

    def h(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    def v(self, name: str) -> str:
        """A header that must be there."""
        value = self.h(name)
        assert value is not None, "no %s header" % name
        return value

    @property
    def branch(self) -> str:
        return self.v("via").split("branch=", 1)[1].split(";", 1)[0]

    @property
    def cseq(self) -> int:
        return int(self.v("cseq").split()[0])

    def report(self) -> Dict[str, Any]:
        data: Dict[str, Any] = json.loads(self.body)
        return data


def response(req: Request, code: int, reason: str, *extra: str, branch: Optional[str] = None) -> bytes:
    via = req.v("via") if branch is None else req.v("via").replace(req.branch, branch)
    lines = ["SIP/2.0 %d %s" % (code, reason), "Via: " + via, "From: " + req.v("from"),
             "To: %s;tag=proxy1" % req.h("to"), "Call-ID: " + req.v("call-id"),
             "CSeq: " + req.v("cseq")] + list(extra) + ["Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class FakeProxy:
    """Answers each datagram with what ``handler(req, n)`` returns (a list of
    datagrams; [] for silence); n counts datagrams from 0."""

    def __init__(self, handler: Optional[Callable[[Request, int], List[bytes]]] = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.handler = handler or self.ok
        self.requests: List[Request] = []
        self.etags = 0
        self._stop = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def ok(self, req: Request, n: int) -> List[bytes]:
        self.etags += 1
        exp = req.h("expires")
        return [response(req, 200, "OK", "SIP-ETag: et%d" % self.etags, "Expires: %s" % exp)]

    def _loop(self) -> None:
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            req = Request(data)
            n = len(self.requests)
            self.requests.append(req)
            for out in self.handler(req, n):
                self.sock.sendto(out, addr)

    def wait(self, count: int, timeout: float = 5.0) -> List[Request]:
        end = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < end, "only %d of %d requests" % (len(self.requests), count)
            time.sleep(0.01)
        return self.requests

    def close(self) -> None:
        self._stop = True
        self.t.join(2)
        self.sock.close()


@pytest.fixture
def proxy():
    made = []

    def make(handler=None):
        p = FakeProxy(handler)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


@pytest.fixture
def fake_proc(tmp_path):
    d = tmp_path / "proc"
    d.mkdir()
    (d / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 100 0 100 800 0 0 0 0 0 0\n")
    (d / "meminfo").write_text("MemTotal:       1000 kB\nMemFree:         100 kB\n"
                               "MemAvailable:    250 kB\n")
    return d


class Signer:
    def __init__(self):
        self.calls = []
        self.bound = []  # (node, etag, expires) each signature covered

    def __call__(self, body, *, keyid, secret, node=None, etag="", expires=3600, ts=None):
        self.calls.append((body, keyid, secret))
        self.bound.append((node, etag, expires))
        return "keyid=%s,ts=1,sig=fake%d" % (keyid, len(self.calls))


def config(port: int, tmp_path: Path, **over) -> AgentConfig:
    data = {"node": "ast5", "uri": "sip:127.0.0.5:5060", "pool": "media", "weight": 10,
            "capacity": {"channels": 500}, "proxy": "127.0.0.1:%d" % port,
            "bind": "127.0.0.1:0", "keyid": "k1", "secret": "s3cret", "interval": 0.2,
            "expires": 5, "t1": 0.05, "transaction_timeout": 0.6,
            "backoff": {"initial": 0.1, "max": 0.4}, "channels": {"source": "none"},
            "proc": str(tmp_path / "proc")}
    data.update(over)
    return AgentConfig(data, str(tmp_path))


class Figures:
    """A collect() whose figures the test changes."""

    def __init__(self):
        self.load = {"cpu": 0.5, "channels": 3}

    def __call__(self):
        return {"node": "ast5", "uri": "sip:127.0.0.5:5060", "pool": "media",
                "state": "active", "load": dict(self.load)}


def make_agent(port, tmp_path, **over):
    signer = Signer()
    figures = Figures()
    a = Agent(config(port, tmp_path, **over), sign=signer, collect=figures,
              rng=random.Random(7))
    return a, signer, figures


# --------------------------------------------------------------------------
# messages

def test_build_publish_is_a_well_formed_request():
    body = '{"node":"n\u00e9"}'
    data = build_publish(request_uri="sip:ast5@10.0.0.1:5060", via=("10.0.0.5", 40000),
                         branch="z9hG4bKabc", aor="sip:ast5@10.0.0.1", from_tag="t1",
                         call_id="c1@10.0.0.5", cseq=7, expires=60, body=body, etag="e9",
                         auth="keyid=k1,ts=5,sig=00")
    req = Request(data)
    assert req.start == "PUBLISH sip:ast5@10.0.0.1:5060 SIP/2.0"
    assert req.h("via") == "SIP/2.0/UDP 10.0.0.5:40000;branch=z9hG4bKabc;rport"
    assert req.h("from") == "<sip:ast5@10.0.0.1>;tag=t1"
    assert req.h("to") == "<sip:ast5@10.0.0.1>"
    assert req.h("cseq") == "7 PUBLISH"
    assert req.h("event") == "approute-status"
    assert req.h("expires") == "60"
    assert req.h("sip-if-match") == "e9"
    assert req.h("x-approute-auth") == "keyid=k1,ts=5,sig=00"
    assert req.h("content-type") == "application/json"
    assert req.h("max-forwards") == "70"
    assert int(req.v("content-length")) == len(body.encode("utf-8"))  # bytes, not chars
    assert req.body == body
    assert b"\r\n\r\n" in data and b"\n\n" not in data.replace(b"\r\n", b"")
    # refresh / remove: no body, no Content-Type, no If-Match without an etag
    data = build_publish(request_uri="sip:a@b", via=("::1", 5), branch="z9hG4bKx", aor="sip:a@b",
                         from_tag="t", call_id="c", cseq=1, expires=0, body=None, etag=None,
                         auth=None)
    req = Request(data)
    assert req.h("content-type") is None and req.h("sip-if-match") is None
    assert req.h("content-length") == "0" and req.body == ""
    assert req.v("via").startswith("SIP/2.0/UDP [::1]:5;")


def test_parse_response_reads_status_etag_expires_and_checks_the_branch():
    raw = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4:5;branch=z9hG4bKabc;rport=5\r\n"
           b"SIP-ETag: 5f2a\r\nExpires: 30\r\nContent-Length: 0\r\n\r\n")
    r = parse_response(raw, "z9hG4bKabc")
    assert r is not None
    assert (r.code, r.reason, r.etag, r.expires) == (200, "OK", "5f2a", 30)
    assert parse_response(raw, "z9hG4bKother") is None
    r = parse_response(b"SIP/2.0 403 bad signature\r\nVia: x;branch=b\r\n\r\n", "b")
    assert r is not None
    assert (r.code, r.reason, r.etag, r.expires) == (403, "bad signature", None, None)
    assert parse_response(b"PUBLISH sip:x SIP/2.0\r\n\r\n") is None
    assert parse_response(b"\x00\xffgarbage") is None


def test_signature_format_and_value():
    v = sign_report_py('{"node":"a"}', keyid="k1", secret="s3cret", ts=1700000000, expires=60)
    want = hmac.new(b"s3cret", b'1700000000\na\n\n60\n{"node":"a"}', hashlib.sha256).hexdigest()
    assert v == "keyid=k1,ts=1700000000,sig=" + want
    # A refresh: no body, the entity tag and the node are what is signed.
    r = sign_report_py("", keyid="k1", secret="s3cret", ts=1700000000, node="a", etag="e1", expires=60)
    want = hmac.new(b"s3cret", b"1700000000\na\ne1\n60\n", hashlib.sha256).hexdigest()
    assert r == "keyid=k1,ts=1700000000,sig=" + want
    for node, etag, expires in (("b", "e1", 60), ("a", "e2", 60), ("a", "e1", 0)):
        assert r != sign_report_py("", keyid="k1", secret="s3cret", ts=1700000000, node=node, etag=etag,
                                   expires=expires)
    now = int(time.time())
    ts = int(sign_report_py("", keyid="k", secret="s", node="a").split(",")[1][3:])
    assert abs(ts - now) <= 2


def test_python_signature_matches_the_core():
    approute = pytest.importorskip("approute")
    core = getattr(approute, "sign_report", None)
    if core is None:
        pytest.skip("this approute build has no sign_report")
    for body, node, etag, expires in (("", "ast5", "e1", 60), ('{"node":"ast5","seq":1}', None, "", 3600),
                                      ("caf\u00e9", "n", "", 0)):
        kw: Dict[str, Any] = dict(keyid="k1", secret="s3cret", node=node, etag=etag, expires=expires,
                                  ts=1700000000)
        assert core(body, **kw) == sign_report_py(body, **kw)


# --------------------------------------------------------------------------
# metrics

def test_channel_output_parsing():
    out = "12 active channels\n5 active calls\n300 calls processed\n"
    assert parse_channel_output(out) == {"channels": 12.0, "calls": 5.0}
    assert parse_channel_output("1 active channel\n1 active call\n") == {"channels": 1.0,
                                                                         "calls": 1.0}
    assert parse_channel_output(" 42\n") == {"channels": 42.0}
    assert parse_channel_output('{"channels": 7, "conference": 2, "x": "no"}') == {
        "channels": 7.0, "conference": 2.0}
    for bad in ("", "Unable to connect to remote asterisk", "{not json", '{"a": "b"}'):
        with pytest.raises(AgentError):
            parse_channel_output(bad)


def test_cpu_and_memory_from_proc(fake_proc):
    cpu = CpuSampler(str(fake_proc))
    assert cpu.sample() is None  # no time passed
    # +300 busy (user 200, system 100), +100 idle, +100 iowait: 300 / 500
    (fake_proc / "stat").write_text("cpu  300 0 200 900 100 0 0 0 0 0\n")
    assert cpu.sample() == pytest.approx(0.6)
    (fake_proc / "stat").write_text("cpu  300 0 200 902 100 0 0 0 0 0\n")
    assert cpu.sample() is None  # 2 ticks: too short, keeps the older sample
    (fake_proc / "stat").write_text("cpu  300 0 200 920 100 0 0 0 0 0\n")
    assert cpu.sample() == pytest.approx(0.0)
    assert memory_usage(str(fake_proc)) == pytest.approx(0.75)
    assert memory_usage(str(fake_proc / "nope")) is None
    assert CpuSampler(str(fake_proc / "nope")).sample() is None


def test_real_proc_figures_are_fractions():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc")
    cpu = CpuSampler()
    time.sleep(0.2)
    v = cpu.sample()
    assert v is None or 0.0 <= v <= 1.0
    mem = memory_usage()
    assert mem is not None and 0.0 < mem < 1.0


def test_channel_sources_command_and_file(tmp_path):
    cfg = config(5060, tmp_path, channels={
        "source": "command", "command": [sys.executable, "-c", "print('9 active channels')"]})
    assert read_channels(cfg.channels) == {"channels": 9.0}
    cfg = config(5060, tmp_path, channels={"source": "command", "command": "false"})
    with pytest.raises(AgentError, match="exit code"):
        read_channels(cfg.channels)
    (tmp_path / "ch.txt").write_text("4\n")
    cfg = config(5060, tmp_path, channels={"source": "file", "file": "ch.txt"})
    assert read_channels(cfg.channels) == {"channels": 4.0}
    cfg = config(5060, tmp_path, channels={"source": "asterisk"})
    assert cfg.channels.command == ["asterisk", "-rx", "core show channels count"]


def test_channel_source_ami(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    seen = []

    def serve():
        c, _ = srv.accept()
        f = c.makefile("rb")
        c.sendall(b"Asterisk Call Manager/7.0.3\r\n")
        for _ in range(3):
            block = {}
            while True:
                line = f.readline().decode().rstrip("\r\n")
                if not line:
                    break
                k, _, v = line.partition(":")
                block[k.strip()] = v.strip()
            seen.append(block)
            aid = block.get("ActionID", "")
            if block["Action"] == "Login":
                c.sendall(b"Event: FullyBooted\r\nStatus: ok\r\n\r\n")  # noise
                c.sendall(("Response: Success\r\nActionID: %s\r\nMessage: Authentication "
                           "accepted\r\n\r\n" % aid).encode())
            elif block["Action"] == "CoreStatus":
                c.sendall(("Response: Success\r\nActionID: %s\r\nCoreStartupDate: 2026-01-01\r\n"
                           "CoreCurrentCalls: 17\r\n\r\n" % aid).encode())
            else:
                c.sendall(("Response: Goodbye\r\nActionID: %s\r\n\r\n" % aid).encode())
                break
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cfg = config(5060, tmp_path, channels={
        "source": "ami", "ami": {"host": "127.0.0.1", "port": port, "username": "u",
                                 "secret": "p"}})
    assert read_channels(cfg.channels) == {"channels": 17.0}
    t.join(2)
    srv.close()
    assert seen[0]["Action"] == "Login" and seen[0]["Username"] == "u" and seen[0]["Secret"] == "p"
    assert seen[1]["Action"] == "CoreStatus"


def test_collector_builds_the_design_report(tmp_path, fake_proc):
    (tmp_path / "ch.txt").write_text("8 active channels\n2 active calls\n")
    (tmp_path / "load.json").write_text('{"conference": 3}')
    (tmp_path / "q.json").write_text('{"mos": 4.2, "rtt_ms_p95": 35}')
    cfg = config(5060, tmp_path, channels={"source": "file", "file": "ch.txt"},
                 load_file="load.json", quality_file="q.json", state="draining")
    collect = agent_mod.Collector(cfg)
    (fake_proc / "stat").write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")
    r = collect()
    assert r == {"node": "ast5", "uri": "sip:127.0.0.5:5060", "pool": "media",
                 "state": "draining", "weight": 10, "capacity": {"channels": 500},
                 "load": {"cpu": 0.5, "mem": 0.75, "channels": 8, "calls": 2, "conference": 3},
                 "quality": {"mos": 4.2, "rtt_ms_p95": 35}}
    (tmp_path / "ch.txt").write_text("garbage")
    r = collect()  # a broken source leaves its figures out, the report still goes
    assert "channels" not in r["load"] and r["load"]["conference"] == 3


def test_state_file_drains_from_the_node(tmp_path, fake_proc):
    cfg = config(5060, tmp_path, state_file="state")
    collect = agent_mod.Collector(cfg)
    assert "state" not in collect()  # no file, no configured state: the proxy's admin state stands
    (tmp_path / "state").write_text("draining\n")
    assert collect()["state"] == "draining"
    (tmp_path / "state").write_text("gone")
    assert "state" not in collect()  # nonsense: ignored (and logged)


def test_config_errors(tmp_path):
    ok = {"node": "a", "uri": "sip:1.2.3.4", "proxy": "1.2.3.5", "keyid": "k", "secret": "s"}
    assert AgentConfig(dict(ok)).proxy == ("1.2.3.5", 5060)
    assert AgentConfig(dict(ok)).bind == ("0.0.0.0", 0)
    v6 = AgentConfig(dict(ok, proxy="[2001:db8::1]:5070"))
    assert v6.proxy == ("2001:db8::1", 5070) and v6.bind == ("::", 0)
    assert v6.publish_uri == "sip:a@[2001:db8::1]:5070"
    changes: List[Any] = [({"node": None}, "node: required"),
                          ({"secret_file": "x"}, "exactly one"),
                          ({"secret": None}, "exactly one"),
                          ({"uri": "http://x"}, "not a SIP URI"),
                          ({"interval": 60, "expires": 30}, "longer than interval"),
                          ({"proxy": "a:b:c:d"}, "host"),
                          ({"state": "gone"}, "state"),
                          ({"channels": {"source": "smoke"}}, "channels.source"),
                          ({"channels": {"source": "command"}}, "channels.command"),
                          ({"colour": 1}, "unknown setting")]
    for change, msg in changes:
        data: Dict[str, Any] = dict(ok)
        data.update(change)
        data = {k: v for k, v in data.items() if v is not None}
        with pytest.raises(AgentError, match=msg):
            AgentConfig(data)
    (tmp_path / "key").write_text("from-file\n")
    data = dict(ok, secret_file="key")
    del data["secret"]
    assert AgentConfig(data, str(tmp_path)).secret == "from-file"


def test_example_agent_config_is_valid(tmp_path):
    import yaml
    data = yaml.safe_load((REPO / "examples" / "agent" / "agent.yaml").read_text())
    (tmp_path / "agent.key").write_text("x")
    data["secret_file"] = str(tmp_path / "agent.key")
    cfg = AgentConfig(data, str(tmp_path))
    assert cfg.channels.source == "asterisk" and cfg.expires > cfg.interval


# --------------------------------------------------------------------------
# the protocol, against the fake proxy

def test_initial_then_modify_then_refresh(proxy, tmp_path, fake_proc):
    p = proxy()
    a, signer, figures = make_agent(p.port, tmp_path)
    try:
        assert a.step() == pytest.approx(0.2)
        first = p.requests[-1]
        assert first.method == "PUBLISH" and first.h("sip-if-match") is None
        assert first.h("expires") == "5" and first.h("event") == "approute-status"
        r = first.report()
        assert r["node"] == "ast5" and r["load"] == {"cpu": 0.5, "channels": 3}
        assert first.h("x-approute-auth") == "keyid=k1,ts=1,sig=fake1"
        assert signer.calls[0] == (first.body, "k1", "s3cret")  # the body is what is signed
        assert a.etag == "et1"

        figures.load["channels"] = 9  # changed figures: a modify (If-Match + body)
        a.step()
        second = p.requests[-1]
        assert second.h("sip-if-match") == "et1"
        assert second.report()["load"]["channels"] == 9
        assert second.report()["seq"] > r["seq"]

        a.step()  # nothing changed: a refresh, no body
        third = p.requests[-1]
        assert third.h("sip-if-match") == "et2" and third.body == ""
        assert third.h("content-type") is None
        assert signer.calls[-1][0] == ""

        # one dialog-less "session": same Call-ID and From tag, CSeq grows, new branches
        reqs = p.requests
        assert len({q.h("call-id") for q in reqs}) == 1
        assert len({q.h("from") for q in reqs}) == 1
        assert [q.cseq for q in reqs] == [1, 2, 3]
        assert len({q.branch for q in reqs}) == 3
        assert all(q.branch.startswith("z9hG4bK") for q in reqs)
    finally:
        a.close()


def test_412_resends_a_full_initial_publish_at_once(proxy, tmp_path, fake_proc):
    def handler(req, n):
        if n == 1:
            return [response(req, 412, "Conditional Request Failed")]
        return p.ok(req, n)
    p = proxy(handler)
    a, _, _ = make_agent(p.port, tmp_path)
    try:
        a.step()
        assert a.step() == 0.0  # 412: no waiting
        assert a.etag is None
        a.step()
        reqs = p.requests
        assert reqs[1].h("sip-if-match") == "et1"
        assert reqs[2].h("sip-if-match") is None and reqs[2].report()["node"] == "ast5"
        assert a.etag == "et2"
    finally:
        a.close()


def test_repeated_412_backs_off(proxy, tmp_path, fake_proc):
    p: FakeProxy
    p = proxy(lambda req, n: [response(req, 412, "Conditional Request Failed")] if n
              else p.ok(req, n))
    a, _, _ = make_agent(p.port, tmp_path)
    try:
        a.step()
        assert a.step() == 0.0
        assert a.step() > 0.0  # a second 412 in a row: back off
    finally:
        a.close()


def test_lost_datagrams_are_retransmitted(proxy, tmp_path, fake_proc):
    p: FakeProxy
    p = proxy(lambda req, n: [] if n < 2 else p.ok(req, n))  # drop two copies
    a, _, _ = make_agent(p.port, tmp_path)
    try:
        t0 = time.monotonic()
        a.step()
        assert a.etag == "et1"
        reqs = p.requests
        assert len(reqs) == 3
        assert reqs[0].raw == reqs[1].raw == reqs[2].raw  # retransmissions are identical
        assert time.monotonic() - t0 >= 0.05 + 0.1 - 0.02  # T1, then 2*T1
    finally:
        a.close()


def test_stray_and_provisional_responses_are_ignored(proxy, tmp_path, fake_proc):
    def handler(req, n):
        return [response(req, 200, "OK", "SIP-ETag: wrong", branch="z9hG4bKnotours"),
                response(req, 100, "Trying"),
                b"garbage",
                response(req, 200, "OK", "SIP-ETag: right", "Expires: 5")]
    p = proxy(handler)
    a, _, _ = make_agent(p.port, tmp_path)
    try:
        a.step()
        assert a.etag == "right"
    finally:
        a.close()


def test_no_answer_backs_off_exponentially_with_a_cap(proxy, tmp_path, fake_proc):
    p: FakeProxy
    p = proxy(lambda req, n: [])
    a, _, _ = make_agent(p.port, tmp_path, transaction_timeout=0.15)
    try:
        delays = [a.step() for _ in range(5)]
        assert a.failures == 5 and a.etag is None
        # initial 0.1 doubling, capped at 0.4, times a jitter in [0.5, 1]
        for d, base in zip(delays, [0.1, 0.2, 0.4, 0.4, 0.4]):
            assert base * 0.5 <= d <= base, delays
        # each failed report is a new transaction (new CSeq), signed again
        cseqs = sorted({q.cseq for q in p.requests})
        assert cseqs == [1, 2, 3, 4, 5]
    finally:
        a.close()


def test_no_proxy_at_all_is_not_fatal(tmp_path, fake_proc):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens: ICMP port unreachable
    a, _, _ = make_agent(port, tmp_path, transaction_timeout=0.2)
    try:
        assert a.step() > 0 and a.failures == 1
    finally:
        a.close()


def test_refused_report_is_retried_with_backoff(proxy, tmp_path, fake_proc, caplog):
    p: FakeProxy
    p = proxy(lambda req, n: [response(req, 403, "bad signature")] if n == 0 else p.ok(req, n))
    a, _, _ = make_agent(p.port, tmp_path)
    try:
        with caplog.at_level("ERROR", logger="approute.agent"):
            assert a.step() > 0
        assert "403 bad signature" in caplog.text
        assert a.etag is None and a.failures == 1
        a.step()
        assert a.etag == "et1" and a.failures == 0
        assert p.requests[1].h("sip-if-match") is None
    finally:
        a.close()


def test_granted_lease_shortens_the_refresh_interval(proxy, tmp_path, fake_proc):
    p: FakeProxy
    p = proxy(lambda req, n: [response(req, 200, "OK", "SIP-ETag: e", "Expires: 1")])
    a, _, _ = make_agent(p.port, tmp_path, interval=3, expires=10)
    try:
        assert a.step() == pytest.approx(0.8)  # 80% of the granted 1 s, not 3 s
    finally:
        a.close()


def test_expired_lease_starts_over_with_an_initial_publish(proxy, tmp_path, fake_proc):
    p = proxy()
    a, _, _ = make_agent(p.port, tmp_path)
    try:
        a.step()
        a.lease_until = a.clock() - 1  # e.g. the proxy was unreachable for too long
        a.step()
        assert p.requests[1].h("sip-if-match") is None and p.requests[1].body
    finally:
        a.close()


def test_leave_sends_expires_zero_with_the_etag(proxy, tmp_path, fake_proc):
    p = proxy()
    a, signer, _ = make_agent(p.port, tmp_path)
    try:
        assert a.leave() is None and not p.requests  # never joined: nothing to remove
        a.step()
        r = a.leave()
        assert r.code == 200 and a.etag is None
        last = p.requests[-1]
        assert last.h("expires") == "0" and last.h("sip-if-match") == "et1"
        assert last.body == "" and last.h("x-approute-auth")
        assert signer.calls[-1][0] == ""
    finally:
        a.close()


def test_run_until_stop_then_leave(proxy, tmp_path, fake_proc):
    p = proxy()
    a, _, _ = make_agent(p.port, tmp_path, interval=0.1)
    t = threading.Thread(target=a.run)
    t.start()
    p.wait(3)
    a.stop()
    t.join(3)
    assert not t.is_alive()
    reqs = p.wait(4)
    assert reqs[-1].h("expires") == "0"
    assert all(q.h("expires") == "5" for q in reqs[:-1])


def test_agent_process_leaves_on_sigterm(proxy, tmp_path):
    """The real command line: `python -m approute.cli agent`, SIGTERM, exit 0."""
    p = proxy()
    (tmp_path / "ch.txt").write_text("6 active channels\n")
    (tmp_path / "agent.yaml").write_text(json.dumps({
        "node": "ast9", "uri": "sip:127.0.0.9:5060", "pool": "media",
        "proxy": "127.0.0.1:%d" % p.port, "bind": "127.0.0.1:0", "keyid": "k1",
        "secret": "s3cret", "interval": 0.2, "expires": 5,
        "channels": {"source": "file", "file": "ch.txt"}}))
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "approute.cli", "agent", "--config",
                             str(tmp_path / "agent.yaml")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        p.wait(2, timeout=10)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    reqs = p.requests
    assert reqs[0].report()["load"]["channels"] == 6
    assert reqs[-1].h("expires") == "0" and reqs[-1].h("sip-if-match")
    auth = reqs[0].h("x-approute-auth")
    ts = auth.split(",")[1][3:]
    signed = "%s\n%s\n\n%s\n%s" % (ts, "ast9", reqs[0].h("expires"), reqs[0].body)
    want = hmac.new(b"s3cret", signed.encode(), hashlib.sha256)
    assert auth == "keyid=k1,ts=%s,sig=%s" % (ts, want.hexdigest())


def test_once_and_print_modes(proxy, tmp_path, capsys):
    from approute import cli
    p = proxy()
    (tmp_path / "agent.yaml").write_text(json.dumps({
        "node": "ast9", "uri": "sip:127.0.0.9:5060", "proxy": "127.0.0.1:%d" % p.port,
        "bind": "127.0.0.1:0", "keyid": "k1", "secret": "s3cret"}))
    assert cli.main(["agent", "--config", str(tmp_path / "agent.yaml"), "--once"]) == 0
    assert "200 OK" in capsys.readouterr().out
    assert len(p.requests) == 1 and p.requests[0].h("sip-if-match") is None
    assert cli.main(["agent", "--config", str(tmp_path / "agent.yaml"), "--print"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["node"] == "ast9" and "mem" in report["load"]
    assert cli.main(["agent", "--config", str(tmp_path / "missing.yaml")]) == 1

"""Node status end to end: real Kamailio + SIPp on 127.0.0.1.

* nodes join by PUBLISH (event package approute-status) and then take calls;
* a node reporting high load takes fewer calls (least_loaded over the
  reported channel counts), and a node reporting near-full usage takes only
  the calls left to its capacity;
* a lease that is not refreshed takes the node out;
* unsigned, forged, replayed, malformed and otherwise refused reports are
  answered 4xx and change nothing;
* OPTIONS probes sent by Kamailio (rtimer + uac) mark a dead node down and
  bring it back when it returns;
* the node agent (`approute agent`) joins, reports, refreshes and leaves.

The PUBLISH requests are built with approute.agent's message builder and
signed with approute.sign_report, exactly as the agent does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Dict, Optional, Tuple

import approute
import pytest
from e2e_harness import KAMAILIO_KEMI_CFG, LOCAL, STATUS_KEYID, STATUS_SECRET, Call, status_config, wait_for

if approute is not None:  # else the e2e fixture skips (or fails in CI) each test
    if not hasattr(approute.Router, "apply_report"):
        pytest.skip("this approute build has no status reports", allow_module_level=True)
    from approute.agent import build_publish, parse_response

STATUS = status_config()

# least_loaded over the "channels" resource: a node's reported channel count
# counts when it is above the calls the router placed there itself
LOAD_AWARE = """\
  conference:
    pool: media
    strategy: least_loaded
    resource: channels
    retry: {codes: [503, 408], max_attempts: 3}
  default:
    pool: media
    strategy: round_robin
    retry: {codes: [503, 408], max_attempts: 3}
"""

# utilization (gRPC WRR / ORCA style): weight / reported cpu; blackout 0 so
# that a fresh report counts at once
UTILIZATION = """\
  conference:
    pool: media
    strategy: {name: utilization, metric: cpu, blackout: 0}
    retry: {codes: [503, 408], max_attempts: 3}
  default:
    pool: media
    strategy: round_robin
    retry: {codes: [503, 408], max_attempts: 3}
"""

ROUND_ROBIN = """\
  conference:
    pool: media
    strategy: round_robin
    retry: {codes: [503, 408], max_attempts: 3}
  default:
    pool: media
    strategy: round_robin
    retry: {codes: [503, 408], max_attempts: 3}
"""

PROBES = "probe: {interval: 1, timeout: 0.5}\n"


class Publisher:
    """Sends PUBLISH requests for one node from a UDP socket of its own."""

    def __init__(self, e2e, node_id: str, uri: Optional[str] = None, src: str = LOCAL,
                 keyid: str = STATUS_KEYID, secret: str = STATUS_SECRET):
        self.e2e = e2e
        self.node = node_id
        self.uri = uri or e2e.nodes[node_id].uri
        self.keyid, self.secret = keyid, secret
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((src, 0))
        self.sock.settimeout(3.0)
        self.local = self.sock.getsockname()
        self.call_id = uuid.uuid4().hex
        self.tag = uuid.uuid4().hex[:10]
        self.cseq = 0
        self.seq = int(time.time() * 1000)
        self.etag: Optional[str] = None

    def close(self) -> None:
        self.sock.close()

    def body(self, **fields) -> str:
        self.seq += 1
        d = {"node": self.node, "uri": self.uri, "pool": "media", "state": "active",
             "weight": 1, "capacity": {"channels": 100}, "load": {"channels": 0},
             "seq": self.seq}
        d.update(fields)
        return json.dumps(d)

    def message(self, body: Optional[str], *, expires: int = 60, etag: Optional[str] = "",
                auth="sign", event: str = "approute-status", secret: Optional[str] = None,
                ctype: Optional[str] = None) -> Tuple[bytes, str]:
        if_match = self.etag if etag == "" else etag
        if auth == "sign":
            auth = approute.sign_report(body or "", keyid=self.keyid, secret=secret or self.secret,
                                        node=self.node, etag=if_match or "", expires=expires)
        self.cseq += 1
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        data = build_publish(
            request_uri="sip:%s@%s:%d" % (self.node, LOCAL, self.e2e.port), via=self.local,
            branch=branch, aor="sip:%s@%s" % (self.node, LOCAL), from_tag=self.tag,
            call_id=self.call_id, cseq=self.cseq, expires=expires, body=body,
            etag=if_match, auth=auth)
        if event != "approute-status":
            data = data.replace(b"Event: approute-status", ("Event: " + event).encode())
        if ctype is not None:
            data = data.replace(b"Content-Type: application/json",
                                ("Content-Type: " + ctype).encode())
        return data, branch

    def exchange(self, data: bytes, branch: str):
        self.sock.sendto(data, (LOCAL, self.e2e.port))
        end = time.monotonic() + 3
        while time.monotonic() < end:
            try:
                packet, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                break
            r = parse_response(packet, branch)
            if r is not None and r.code >= 200:
                return r
        raise AssertionError("no final answer to PUBLISH")

    def send(self, body: Optional[str], **kw):
        data, branch = self.message(body, **kw)
        r = self.exchange(data, branch)
        if r.code == 200 and r.etag and kw.get("expires", 60) != 0:
            self.etag = r.etag
        self.last = (data, branch)
        return r

    def join(self, expires: int = 60, **fields):
        r = self.send(self.body(**fields), expires=expires, etag=None)
        assert r.code == 200, r
        return r


def publishers(e2e, ids=None) -> Dict[str, Publisher]:
    pubs = {i: Publisher(e2e, i) for i in (ids or e2e.nodes)}

    def close_all() -> None:
        for p in pubs.values():
            p.close()
    e2e.request.addfinalizer(close_all)
    return pubs


def node_ids(e2e):
    return sorted(n.id for n in e2e.router.nodes())


def start(e2e, cfg: str, children: int = 4):
    if cfg == "kemi":
        e2e.start_kamailio(cfg=KAMAILIO_KEMI_CFG, children=children)
    else:
        e2e.start_kamailio(children=children)


def calls_per_node(e2e, results) -> Counter[str]:
    assert all(r.status == 200 for r in results), results
    return Counter(e2e.node_of(r.call_id) for r in results)


# --------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", ["python_exec", "kemi"])
def test_nodes_join_by_publish_then_take_calls(e2e, cfg):
    for i in (1, 2, 3):
        e2e.add_node("n%d" % i)
    e2e.write_config(apps_yaml=ROUND_ROBIN, configured=[], router_extra=STATUS)
    start(e2e, cfg)

    assert node_ids(e2e) == []
    (r,) = e2e.run_calls([Call("early.example.com")])
    assert r.status == 503  # nobody there yet

    pubs = publishers(e2e)
    for p in pubs.values():
        res = p.join(load={"channels": 1, "cpu": 0.1})
        assert res.etag and res.expires == 60
    assert node_ids(e2e) == ["n1", "n2", "n3"]
    for n in e2e.router.nodes():
        assert n.origin == "report" and n.lease_expires > time.time() + 50
        assert n.uri == e2e.nodes[n.id].uri and n.load["channels"] == 1
    assert e2e.router.stats()["reports_accepted"] == 3

    results = e2e.run_calls([Call("j%d.example.com" % i, hold_ms=200) for i in range(6)],
                            rate=10)
    per_node = calls_per_node(e2e, results)
    assert set(per_node) == {"n1", "n2", "n3"}, per_node  # round robin over the joined
    e2e.wait_idle()


@pytest.mark.parametrize("strategy", ["least_loaded", "utilization"])
def test_high_load_node_gets_fewer_calls(e2e, strategy):
    for i in (1, 2, 3):
        e2e.add_node("n%d" % i)
    apps = LOAD_AWARE if strategy == "least_loaded" else UTILIZATION
    e2e.write_config(apps_yaml=apps, configured=[], router_extra=STATUS)
    e2e.start_kamailio()
    pubs = publishers(e2e)
    # n1 is busy: 10 of 100 channels left, cpu 0.9
    pubs["n1"].join(load={"channels": 90, "cpu": 0.9})
    pubs["n2"].join(load={"channels": 5, "cpu": 0.1})
    pubs["n3"].join(load={"channels": 5, "cpu": 0.1})

    results = e2e.run_calls([Call("h%d.example.com" % i, hold_ms=2500) for i in range(12)],
                            rate=20)
    per_node = calls_per_node(e2e, results)
    # least_loaded: n1 only once the others have 90 calls each; utilization:
    # weights 1/0.9 against 1/0.1, about 1 call in 19 for n1
    assert per_node["n1"] <= (0 if strategy == "least_loaded" else 1), per_node
    assert per_node["n2"] >= 4 and per_node["n3"] >= 4, per_node
    e2e.wait_idle()

    # the figures turn: n1 is idle now, the others are almost full (modify)
    assert pubs["n1"].send(pubs["n1"].body(load={"channels": 0, "cpu": 0.05})).code == 200
    assert pubs["n2"].send(pubs["n2"].body(load={"channels": 95, "cpu": 0.95})).code == 200
    assert pubs["n3"].send(pubs["n3"].body(load={"channels": 95, "cpu": 0.95})).code == 200
    assert e2e.router.node("n1").load["channels"] == 0
    results = e2e.run_calls([Call("t%d.example.com" % i, hold_ms=300) for i in range(6)],
                            rate=10)
    per_node = calls_per_node(e2e, results)
    assert per_node["n1"] >= (6 if strategy == "least_loaded" else 4), per_node
    e2e.wait_idle()


def test_a_node_reporting_near_full_usage_gets_only_the_remaining_calls(e2e):
    # capacity 100 channels each; n1 runs 96 of its own, n2 reports itself full
    for i in (1, 2):
        e2e.add_node("n%d" % i)
    e2e.write_config(apps_yaml=LOAD_AWARE, configured=[], router_extra=STATUS)
    e2e.start_kamailio()
    pubs = publishers(e2e)
    pubs["n1"].join(load={"channels": 96})
    pubs["n2"].join(load={"channels": 100})

    # 10 calls up at once: only 4 fit, all on n1; the rest get no node
    results = e2e.run_calls([Call("u%d.example.com" % i, hold_ms=4000) for i in range(10)],
                            rate=20)
    answered = [r for r in results if r.status == 200]
    assert len(answered) == 4, results
    assert all(r.status >= 500 for r in results if r.status != 200), results
    assert Counter(e2e.node_of(r.call_id) for r in answered) == Counter({"n1": 4})
    assert len(e2e.nodes["n1"].invites()) == 4, "n1 received only the calls it had room for"
    assert e2e.nodes["n2"].invites() == []
    e2e.wait_idle()

    # its next report says its own calls ended: room for them again
    assert pubs["n1"].send(pubs["n1"].body(load={"channels": 90})).code == 200
    results = e2e.run_calls([Call("v%d.example.com" % i, hold_ms=3000) for i in range(14)],
                            rate=20)
    assert sum(1 for r in results if r.status == 200) == 10, results
    e2e.wait_idle()


def test_lease_expiry_takes_a_node_out(e2e):
    for i in (1, 2):
        e2e.add_node("n%d" % i)
    e2e.write_config(apps_yaml=ROUND_ROBIN, configured=[], router_extra=STATUS)
    e2e.start_kamailio()
    pubs = publishers(e2e)
    assert pubs["n1"].join(expires=2).expires == 2  # a short lease, never refreshed
    pubs["n2"].join(expires=600)
    results = e2e.run_calls([Call("l%d.example.com" % i, hold_ms=100) for i in range(4)],
                            rate=10)
    assert calls_per_node(e2e, results)["n1"] >= 1

    wait_for(lambda: time.time() > e2e.router.node("n1").lease_expires + 0.2, 5,
             what="n1's lease to run out")
    results = e2e.run_calls([Call("m%d.example.com" % i, hold_ms=100) for i in range(4)],
                            rate=10)
    assert calls_per_node(e2e, results) == Counter({"n2": 4})
    # without sessions the node goes at the next sweep (rtimer, every 5 s)
    wait_for(lambda: node_ids(e2e) == ["n2"], 12, interval=0.5, what="n1 to be removed")
    # its old entity tag is gone: a refresh is 412, a new initial report joins again
    assert pubs["n1"].send(None).code == 412
    pubs["n1"].join()
    assert node_ids(e2e) == ["n1", "n2"]
    e2e.wait_idle()


def test_refused_reports_change_nothing(e2e):
    for i in (1, 2):
        e2e.add_node("n%d" % i)
    e2e.write_config(apps_yaml=ROUND_ROBIN, configured=["n2"], router_extra=STATUS)
    e2e.start_kamailio()
    p = publishers(e2e, ["n1"])["n1"]
    joined = p.join(load={"channels": 5})
    accepted_data, accepted_branch = p.last

    def snapshot():
        return sorted((n.id, n.uri, n.state, tuple(sorted(n.load.items())))
                      for n in e2e.router.nodes())

    before = snapshot()
    # a UDP retransmission of the accepted request is answered again by tm
    # (same 200, same entity tag), not applied again nor refused as a replay
    again = p.exchange(accepted_data, accepted_branch)
    assert again.code == 200 and again.etag == joined.etag
    assert e2e.router.stats()["reports_accepted"] == 1
    refused = []

    plain = {400: "Bad Request", 403: "Forbidden", 412: "Conditional Request Failed",
             415: "Unsupported Media Type", 489: "Bad Event"}

    def refuse(code, response, why):
        assert response.code == code, (why, response)
        # the sender learns no key ids, pools, clock or window: the detail is logged
        assert response.reason == plain[code], (why, response)
        assert response.etag is None, why
        assert snapshot() == before, why
        refused.append(why)

    busy = {"channels": 99}
    refuse(403, p.send(p.body(load=busy), auth=None), "unsigned")
    refuse(403, p.send(p.body(load=busy), secret="not-the-pool-secret"), "forged")
    refuse(403, p.send(p.body(load=busy), auth="keyid=k1,ts=%d,sig=%s"
                       % (time.time(), "00" * 32)), "bad signature")
    # replay: the accepted request again, as a new transaction (new branch)
    replay = accepted_data.replace(accepted_branch.encode(), b"z9hG4bKreplay1")
    refuse(403, p.exchange(replay, "z9hG4bKreplay1"), "replayed")
    refuse(400, p.send("{not json"), "malformed json")
    refuse(400, p.send(p.body(load="lots")), "malformed load")
    refuse(403, p.send(p.body(uri="sip:192.0.2.10:5060")), "uri outside allowed networks")
    # n2 is a configured node: a report cannot take its id over
    other = Publisher(e2e, "n2", uri="sip:127.0.0.1:5999")
    try:
        refuse(403, other.send(other.body(), etag=None), "takeover of a configured id")
    finally:
        other.close()
    assert e2e.router.stats()["reports_refused"] == len(refused)
    # a source outside status.allow_sources (127.0.0.1/32 only): refused by
    # the handler statelessly, before the core (or a transaction) sees it
    outsider = Publisher(e2e, "n1", src="127.0.0.2")
    try:
        r = outsider.send(outsider.body(), etag=None)
        refuse(403, r, "source not allowed")
        assert r.reason == "Forbidden", r
    finally:
        outsider.close()
    assert e2e.router.stats()["reports_refused"] == len(refused) - 1
    refuse(412, p.send(None, etag="no-such-etag"), "unknown entity tag")
    refuse(489, p.send(p.body(), event="presence"), "another event package")
    refuse(415, p.send(p.body(), ctype="text/plain"), "not JSON")

    assert e2e.router.stats()["reports_accepted"] == 1
    log = e2e.kamailio_log.read_text(errors="replace")
    assert "publish node=" in log and "reason=" in log  # the detail went to the log
    # the node still works
    assert p.send(p.body(load={"channels": 7})).code == 200
    assert e2e.router.node("n1").load["channels"] == 7


@pytest.mark.parametrize("cfg", ["python_exec", "kemi"])
def test_options_probes_mark_a_dead_node_down_and_back_up(e2e, cfg):
    for i in (1, 2, 3):
        e2e.add_node("n%d" % i, "uas_options.xml")
    e2e.fr_timer = 1000
    e2e.write_config(apps_yaml=ROUND_ROBIN, router_extra=STATUS, settings_extra=PROBES)
    start(e2e, cfg)

    wait_for(lambda: all(n.options() >= 2 for n in e2e.nodes.values()), 6,
             what="probes at every node")
    assert {n.health for n in e2e.router.nodes()} == {"up"}
    assert 0 < e2e.router.node("n2").latency_ewma_ms < 500

    victim = e2e.nodes["n1"]
    victim.proc.kill()
    t0 = time.monotonic()
    # down_after 2: two rounds 1 s apart, each waiting timeout 0.5 s
    wait_for(lambda: e2e.router.node("n1").health == "down", 8, interval=0.1,
             what="the dead node to be marked down")
    assert time.monotonic() - t0 < 5.5  # about 2 x 1 s + 0.5 s
    # calls now avoid it without first timing out on it
    results = e2e.run_calls([Call("p%d.example.com" % i, hold_ms=100) for i in range(6)],
                            rate=10)
    assert "n1" not in calls_per_node(e2e, results)
    assert not [d for d in e2e.decisions() if d["what"] == "retry"]

    victim.start()  # same port: the node returns
    wait_for(lambda: e2e.router.node("n1").health == "up", 6, interval=0.1,
             what="the node to be marked up again")
    results = e2e.run_calls([Call("q%d.example.com" % i, hold_ms=100) for i in range(6)],
                            rate=10)
    assert calls_per_node(e2e, results)["n1"] >= 1
    e2e.wait_idle()


def calls_on(e2e, prefix: str, count: int = 4) -> "Counter[str]":
    """Runs `count` short calls (domains PREFIXi.example.com) and waits for
    them to end; returns how many each node took."""
    results = e2e.run_calls([Call("%s%d.example.com" % (prefix, i), hold_ms=100)
                             for i in range(count)], rate=10)
    e2e.wait_idle()
    return calls_per_node(e2e, results)


@contextlib.contextmanager
def running_agent(e2e, tmp_path, **settings):
    """`approute agent` (the real command) for node n1, reporting to this
    Kamailio every 0.5 s with a 3 s lease; its log in tmp_path/agent.log.
    Killed on the way out if the test did not stop it."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(json.dumps(dict({
        "node": "n1", "uri": e2e.nodes["n1"].uri, "pool": "media", "weight": 1,
        "proxy": "%s:%d" % (LOCAL, e2e.port), "bind": "%s:0" % LOCAL, "keyid": STATUS_KEYID,
        "secret": STATUS_SECRET, "interval": 0.5, "expires": 3}, **settings)))
    log = open(tmp_path / "agent.log", "wb")
    agent = subprocess.Popen([sys.executable, "-m", "approute.cli", "agent", "--config",
                              str(cfg), "--log-level", "debug"],
                             stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                             start_new_session=True)
    try:
        yield agent
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        log.close()


def test_agent_joins_reports_refreshes_and_leaves(e2e, tmp_path):
    e2e.add_node("n1")
    e2e.add_node("n2")
    e2e.write_config(apps_yaml=ROUND_ROBIN, configured=["n2"], router_extra=STATUS)
    e2e.start_kamailio()

    channels = tmp_path / "channels.txt"
    channels.write_text("3 active channels\n2 active calls\n")
    quality = tmp_path / "quality.json"
    quality.write_text('{"mos": 4.3, "rtt_ms_p95": 35}')
    with running_agent(e2e, tmp_path, capacity={"channels": 100},
                       channels={"source": "file", "file": str(channels)},
                       quality_file=str(quality)) as agent:
        wait_for(lambda: "n1" in node_ids(e2e), 5, what="the agent's node to join")
        n = e2e.router.node("n1")
        assert n.origin == "report" and n.load["channels"] == 3 and n.quality["mos"] == 4.3
        assert "cpu" not in n.load or 0.0 <= n.load["cpu"] <= 1.0
        channels.write_text("8 active channels\n")
        wait_for(lambda: e2e.router.node("n1").load["channels"] == 8, 5,
                 what="the new channel count")
        # the lease is 3 s: the agent keeps it alive well past that
        time.sleep(4)
        assert e2e.router.node("n1").lease_expires > time.time()
        assert calls_on(e2e, "a")["n1"] >= 1

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
    # Expires: 0 -- the node takes no new calls at once and goes at the next sweep
    results = e2e.run_calls([Call("b%d.example.com" % i, hold_ms=100) for i in range(3)],
                            rate=10)
    assert calls_per_node(e2e, results) == Counter({"n2": 3})
    wait_for(lambda: node_ids(e2e) == ["n2"], 12, interval=0.5, what="n1 to be removed")
    text = (tmp_path / "agent.log").read_text()
    assert "left: lease removed" in text, text[-2000:]


def test_cli_status_shows_reported_nodes(e2e, capsys):
    from approute import cli

    e2e.add_node("n1")
    e2e.write_config(apps_yaml=ROUND_ROBIN, configured=[], router_extra=STATUS)
    e2e.start_kamailio()
    publishers(e2e)["n1"].join(expires=120, load={"channels": 4}, quality={"mos": 4.1})
    assert cli.main(["status", "--shared", e2e.shared, "--json"]) == 0
    (node,) = json.loads(capsys.readouterr().out)["nodes"]
    assert node["id"] == "n1" and node["origin"] == "report"
    assert node["lease_expires"] > time.time() + 100
    assert node["quality"] == {"mos": 4.1} and node["load"]["channels"] == 4


def test_agent_reports_its_node_down_while_asterisk_is_unreachable(e2e, tmp_path):
    """`source: asterisk` whose `asterisk -rx` cannot reach Asterisk (exit
    1, as with no control socket): the agent's node joins through Kamailio
    but reported down, takes no calls, keeps its lease; once the command
    answers again the next report brings it back and it takes calls."""
    e2e.add_node("n1")
    e2e.add_node("n2")
    e2e.write_config(apps_yaml=ROUND_ROBIN, configured=["n2"], router_extra=STATUS)
    e2e.start_kamailio()

    up = tmp_path / "asterisk-up"
    fake = tmp_path / "fake-asterisk"
    fake.write_text(
        "import os, sys\n"
        "if not os.path.exists(%r):\n"
        "    sys.stderr.write('Unable to connect to remote asterisk\\n')\n"
        "    sys.exit(1)\n"
        "print('1 active channels')\n" % str(up))
    command = [sys.executable, str(fake), "-rx", "core show channels count"]
    with running_agent(e2e, tmp_path, channels={"source": "asterisk", "command": command}) as agent:
        wait_for(lambda: "n1" in node_ids(e2e), 5, what="the agent's node to join")
        n = e2e.router.node("n1")
        assert n.health == "down" and n.reported_down and n.origin == "report"
        time.sleep(4)  # past the 3 s lease: the reports keep it a member, still down
        assert e2e.router.node("n1").lease_expires > time.time()
        assert e2e.router.node("n1").reported_down
        assert calls_on(e2e, "d") == Counter({"n2": 4})

        up.write_text("")  # Asterisk answers again
        wait_for(lambda: not e2e.router.node("n1").reported_down, 5,
                 what="the node to be reported up")
        assert e2e.router.node("n1").health == "up" and e2e.router.node("n1").load["channels"] == 1
        assert calls_on(e2e, "u")["n1"] >= 1
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
    text = (tmp_path / "agent.log").read_text()
    assert "cannot reach Asterisk" in text and "answers again" in text, text[-2000:]


# a conference leg takes a seat and a channel: the app names both resources
TWO_RESOURCES = """\
  conference:
    pool: media
    strategy: least_loaded
    resource: [conference, channels]
    retry: {codes: [503, 408], max_attempts: 3}
  default:
    pool: media
    strategy: round_robin
"""


def test_an_app_of_two_resources_never_passes_either_capacity(e2e):
    # n1: seats to spare, 3 channels of which it runs 1 of its own; n2: 2 seats
    for i in (1, 2):
        e2e.add_node("n%d" % i)
    e2e.write_config(apps_yaml=TWO_RESOURCES, configured=[], router_extra=STATUS)
    e2e.start_kamailio()
    pubs = publishers(e2e)
    pubs["n1"].join(capacity={"conference": 10, "channels": 3}, load={"channels": 1})
    pubs["n2"].join(capacity={"conference": 2, "channels": 10}, load={})

    # 10 calls up at once: n1 has room for 2 (channels), n2 for 2 (seats)
    results = e2e.run_calls([Call("m%d.example.com" % i, hold_ms=4000) for i in range(10)],
                            rate=20)
    answered = [r for r in results if r.status == 200]
    on = Counter(e2e.node_of(r.call_id) for r in answered)
    assert on == Counter({"n1": 2, "n2": 2}), (on, results)
    assert all(r.status >= 500 for r in results if r.status != 200), results
    assert len(e2e.nodes["n1"].invites()) == 2 and len(e2e.nodes["n2"].invites()) == 2
    e2e.wait_idle()
    for n in ("n1", "n2"):
        s = e2e.router.node(n).sessions
        assert s.get("conference", 0) == s.get("channels", 0) == 0, (n, s)

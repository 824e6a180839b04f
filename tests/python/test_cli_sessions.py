"""`approute sessions` and `approute end` against a real shared segment."""
from __future__ import annotations

import io
import json
import os
import textwrap
import uuid
from typing import List, Tuple

import pytest

approute = pytest.importorskip("approute")
from approute import cli, cli_util  # noqa: E402

CONF = textwrap.dedent(
    """
    nodes:
      - {id: ast1, uri: "sip:10.0.0.1:5060", pool: media, capacity: {conference: 10}}
      - {id: ast2, uri: "sip:10.0.0.2:5060", pool: media, capacity: {conference: 10}}
    apps:
      conference:
        pool: media
        strategy: round_robin
        resource: conference
        affinity: {grace: 60}
      queue:
        pool: media
        strategy: round_robin
    """
)

#: Router.sessions() comes with the core's session listing; without it the
#: listing tests cannot run (the `end` tests can).
needs_sessions = pytest.mark.skipif(not hasattr(approute.Router, "sessions"),
                                    reason="this approute build has no Router.sessions()")


@pytest.fixture
def segment():
    name = "approute-pytest-cli-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    router = approute.Router.from_yaml(CONF, shared=name)
    yield name, router
    approute.Router.unlink(name)


def run(*argv: str) -> Tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(list(argv), out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def place(router, n: int, app: str = "conference") -> List[str]:
    ids = []
    for i in range(n):
        cid = "cli-%s-%d" % (app, i)
        d = router.route(app, call_id=cid, key="tenant%d.example.com" % i)
        assert d.ok
        ids.append(cid)
    return ids


def test_end_frees_the_session_and_unknown_is_an_error(segment):
    name, router = segment
    (cid,) = place(router, 1)
    assert router.stats()["sessions"] == 1
    rc, out, err = run("end", cid, "--shared", name)
    assert (rc, out, err) == (0, "%s: ended\n" % cid, "")
    assert router.stats()["sessions"] == 0
    rc, out, err = run("end", cid, "--shared", name)
    assert rc == cli.EXIT_ERROR and out == ""
    assert "approute end: error: NotFoundError" in err and cid in err
    rc, _, err = run("end", "  ", "--shared", name)
    assert rc == cli.EXIT_USAGE and "CALL-ID must not be empty" in err


def test_end_needs_a_segment(monkeypatch):
    monkeypatch.delenv("APPROUTE_SHARED", raising=False)
    rc, _, err = run("end", "x")
    assert rc == cli.EXIT_USAGE and "--shared NAME is required" in err


@needs_sessions
def test_sessions_lists_and_filters(segment):
    name, router = segment
    conf = place(router, 3)
    queue = place(router, 1, app="queue")
    rc, out, err = run("sessions", "--shared", name, "--json")
    assert rc == 0 and err == ""
    listed = json.loads(out)["sessions"]
    assert sorted(s["call_id"] for s in listed) == sorted(conf + queue)
    by_id = {s["call_id"]: s for s in listed}
    s0 = by_id[conf[0]]
    assert s0["app"] == "conference" and s0["key"] == "tenant0.example.com"
    assert s0["node_id"] in ("ast1", "ast2") and s0["age"] >= 0 and s0["confirmed"] is False
    # by node and by app
    node = s0["node_id"]
    rc, out, _ = run("sessions", "--shared", name, "--node", node, "--json")
    assert {s["node_id"] for s in json.loads(out)["sessions"]} == {node}
    rc, out, _ = run("sessions", "--shared", name, "--app", "queue", "--json")
    assert [s["call_id"] for s in json.loads(out)["sessions"]] == queue
    rc, out, _ = run("sessions", "--shared", name, "--limit", "2", "--json")
    assert len(json.loads(out)["sessions"]) == 2
    # the table
    rc, out, _ = run("sessions", "--shared", name)
    assert rc == 0 and out.splitlines()[0].split()[:5] == ["CALL-ID", "APP", "NODE", "KEY", "AGE"]
    assert conf[0] in out and "tenant0.example.com" in out
    # ended: gone from the list
    assert run("end", conf[0], "--shared", name)[0] == 0
    rc, out, _ = run("sessions", "--shared", name, "--json")
    assert conf[0] not in [s["call_id"] for s in json.loads(out)["sessions"]]


@needs_sessions
def test_sessions_refuses_bad_filters(segment):
    name, _ = segment
    rc, _, err = run("sessions", "--shared", name, "--node", "nope")
    assert rc == cli.EXIT_ERROR and "nope" in err
    rc, _, err = run("sessions", "--shared", name, "--limit", "0")
    assert rc == cli.EXIT_USAGE and "--limit must be at least 1" in err


def test_sessions_without_core_support_says_so(segment, monkeypatch):
    name, _ = segment

    class NoSessions:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, attr):
            if attr == "sessions":
                raise AttributeError(attr)
            return getattr(self.real, attr)
    real_attach = cli_util.attach
    monkeypatch.setattr(cli_util, "attach", lambda n: NoSessions(real_attach(n)))
    rc, out, err = run("sessions", "--shared", name)
    assert rc == cli.EXIT_ERROR and out == ""
    assert "cannot list sessions" in err


# --------------------------------------------------------------------------
# end --node / --app / --older-than: many sessions whose BYE went around the proxy

def place_at(router, when: float, app: str, ids: List[str], key: str) -> None:
    router._set_time(when)
    try:
        for cid in ids:
            assert router.route(app, call_id=cid, key=key).ok
    finally:
        router._clear_time()


@needs_sessions
def test_end_by_filters_lists_first_and_ends_only_with_yes(segment):
    import time
    name, router = segment
    now = time.time()
    place_at(router, now - 3600, "conference", ["old1", "old2"], "old.example.com")
    place_at(router, now, "conference", ["new1"], "new.example.com")
    place_at(router, now - 3600, "queue", ["q-old"], "")
    # Without --yes: the matching sessions are listed, nothing changes, exit 1.
    rc, out, err = run("end", "--shared", name, "--app", "conference", "--older-than", "600")
    assert rc == cli.EXIT_ERROR
    assert "old1" in out and "old2" in out and "new1" not in out and "q-old" not in out
    assert "2 session(s) of app conference, older than 600s would be ended" in err
    assert "add --yes" in err
    assert router.stats()["sessions"] == 4
    # With --yes: those two end, the count is printed, the rest stay.
    rc, out, err = run("end", "--shared", name, "--app", "conference", "--older-than", "600",
                       "--yes")
    assert (rc, err) == (0, "")
    assert out == "2 session(s) of app conference, older than 600s ended\n"
    left = sorted(si.call_id for si in router.sessions())
    assert left == ["new1", "q-old"]
    # By node: every session on it, whatever its app.
    node = router.sessions(app="queue")[0].node_id
    on_node = sorted(si.call_id for si in router.sessions(node=node))
    rc, out, err = run("end", "--shared", name, "--node", node, "--yes")
    assert rc == 0 and out.startswith("%d session(s) on node %s ended" % (len(on_node), node))
    assert router.sessions(node=node) == []
    # Nothing matches: a count of 0, still exit 1 without --yes.
    rc, out, err = run("end", "--shared", name, "--older-than", "86400")
    assert rc == cli.EXIT_ERROR and out == "" and "0 session(s) older than 86400s" in err


def test_end_filters_usage_errors(segment):
    name, _ = segment
    rc, _, err = run("end", "--shared", name)
    assert rc == cli.EXIT_USAGE and "--node, --app or --older-than" in err
    rc, _, err = run("end", "c1", "--shared", name, "--node", "ast1")
    assert rc == cli.EXIT_USAGE and "not both" in err
    rc, _, err = run("end", "--shared", name, "--older-than", "-5")
    assert rc == cli.EXIT_USAGE
    rc, _, err = run("end", "--shared", name, "--node", "nope", "--yes")
    assert rc == cli.EXIT_ERROR and "nope" in err


# --------------------------------------------------------------------------
# drain --wait: a deadline that passes with sessions left is said, and fails

def test_drain_wait_says_what_is_left_when_the_deadline_passes(segment):
    name, router = segment
    place(router, 3)
    node = router.sessions()[0].node_id
    n = len(router.sessions(node=node))
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    out = io.StringIO()
    rc = cli.drain(router, node, 3.0, True, 1.0, out, sleep=sleep, clock=lambda: now[0])
    lines = out.getvalue().splitlines()
    assert rc == cli.EXIT_ERROR
    assert lines[0] == "%s: draining, deadline 3s" % node
    assert lines[-1].startswith("%s: deadline of 3s passed with %d session(s)" % (node, n))
    assert "approute end --node %s" % node in lines[-1]
    assert now[0] == 3.0  # it waited until the deadline, not beyond


# --------------------------------------------------------------------------
# status: the busiest keys, not only their number

def test_status_shows_the_top_keys(segment):
    name, router = segment
    for i in range(3):
        assert router.route("conference", call_id="big-%d" % i, key="big.example.com").ok
    place(router, 12)  # twelve keys with one session each
    rc, out, err = run("status", "--shared", name)
    assert rc == 0 and err == ""
    assert "top 10 of 13 keys by sessions (approute keys lists them all):" in out
    table = out.split("top 10 of 13 keys", 1)[1].splitlines()
    assert table[1].split()[:2] == ["APP", "KEY"]
    assert table[3].split()[:2] == ["conference", "big.example.com"]
    assert table[3].split()[3] == "3"
    assert len(table) == 3 + 10
    rc, out, _ = run("status", "--shared", name, "--top", "0")
    assert rc == 0 and "keys by sessions" not in out
    rc, out, _ = run("status", "--shared", name, "--json", "--top", "2")
    keys = json.loads(out)["top_keys"]
    assert [k["key"] for k in keys] == ["big.example.com", "tenant0.example.com"]
    rc, _, err = run("status", "--shared", name, "--top", "-1")
    assert rc == cli.EXIT_USAGE


def test_status_lists_no_keys_past_the_scan_limit_unless_asked(segment, monkeypatch):
    name, router = segment
    place(router, 6)
    monkeypatch.setattr(cli, "TOP_KEYS_SCAN_LIMIT", 5)  # finding the busiest reads every key
    rc, out, _ = run("status", "--shared", name)
    assert rc == 0 and "affinities: 6" in out and "keys by sessions" not in out
    rc, out, _ = run("status", "--shared", name, "--top", "3")
    assert rc == 0 and "top 3 of 6 keys by sessions" in out


def test_status_and_unlink_name_a_missing_segment_alike(monkeypatch):
    missing = "approute-pytest-missing-%s" % uuid.uuid4().hex[:8]
    rc1, _, err1 = run("status", "--shared", missing)
    rc2, _, err2 = run("unlink", missing)
    assert rc1 == rc2 == cli.EXIT_ERROR
    said = "no shared segment named '%s'" % missing
    assert said in err1 and said in err2, (err1, err2)

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

"""The Python surface of approute: the contract of docs/design.md ("Public contract")."""
from __future__ import annotations

import os
import textwrap
import uuid

import approute
import pytest

CONF = textwrap.dedent(
    """
    nodes:
      - {id: ast1, uri: "sip:10.0.0.1:5060", pool: media, weight: 10, capacity: {conference: 2}}
      - {id: ast2, uri: "sip:10.0.0.2:5060", pool: media, weight: 10, capacity: {conference: 2}}
      - {id: ast3, uri: "sip:10.0.0.3:5060", pool: media, weight: 10, capacity: {conference: 2}}
    apps:
      conference:
        pool: media
        strategy: least_loaded
        resource: conference
        affinity: {grace: 300}
        retry: {codes: [503, 486], max_attempts: 3}
      default:
        pool: media
        strategy: round_robin
    """
)


@pytest.fixture
def router() -> approute.Router:
    return approute.Router.from_yaml(CONF)


@pytest.fixture
def segment():
    name = f"approute-pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    approute.Router.unlink(name)


def test_route_affinity_and_decision_fields(router: approute.Router) -> None:
    d1 = router.route("conference", call_id="c1", key="example.com")
    assert d1.ok and bool(d1)
    assert d1.node_id in {"ast1", "ast2", "ast3"}
    assert d1.uri == router.node(d1.node_id).uri
    assert d1.reason == "strategy"
    assert d1.attempt == 1
    assert d1.app == "conference"
    d2 = router.route("conference", call_id="c2", key="example.com")
    assert (d2.node_id, d2.reason) == (d1.node_id, "affinity")
    assert router.node(d1.node_id).sessions["conference"] == 2
    assert "Decision(ok=True" in repr(d2)


def test_retry_excludes_tried_nodes_and_stops(router: approute.Router) -> None:
    d = router.route("conference", call_id="c1", key="k")
    seen = {d.node_id}
    for attempt in (2, 3):
        d = router.retry("c1", code=503)
        assert d.ok and d.reason == "retry" and d.attempt == attempt
        assert d.node_id not in seen
        seen.add(d.node_id)
    d = router.retry("c1", code=503)
    assert not d.ok and d.node_id is None and d.uri is None
    assert d.reason == "no_node" and "max_attempts" in d.detail
    assert router.stats()["sessions"] == 0


def test_retry_with_a_code_that_is_not_a_retry_code(router: approute.Router) -> None:
    router.route("conference", call_id="c1", key="k")
    d = router.retry("c1", code=200)
    assert not d.ok and d.reason == "not_retryable"
    assert "code 200 is not a retry code" in d.detail
    assert router.stats()["sessions"] == 0


def test_end_confirm_and_counts(router: approute.Router) -> None:
    d = router.route("conference", call_id="c1", key="k")
    router.confirm("c1")
    router.end("c1")
    assert all(sum(n.sessions.values()) == 0 for n in router.nodes())
    with pytest.raises(approute.NotFoundError, match='no session for call_id "c1"'):
        router.end("c1")
    with pytest.raises(LookupError):
        router.confirm("c1")
    # The affinity survives the session for its grace time.
    assert router.stats()["affinities"] == 1
    assert router.route("conference", call_id="c2", key="k").node_id == d.node_id


def test_grace_and_lifetime_with_the_test_clock() -> None:
    conf = CONF.replace("affinity: {grace: 300}", "affinity: {grace: 10}\n    session: {lifetime: 60}")
    r = approute.Router.from_yaml(conf)
    r._set_time(1_000_000)
    r.route("conference", call_id="lost", key="k")
    r._set_time(1_000_061)
    assert r.sweep() == 1
    assert r.stats()["sessions"] == 0
    assert r.stats()["expired_sessions"] == 1
    r._set_time(1_000_072)
    r.sweep()
    assert r.stats()["affinities"] == 0


def test_node_registry(router: approute.Router) -> None:
    router.add_node("ast9", "sip:10.0.0.9:5060", pool="media", weight=5,
                    capacity={"conference": 7}, attrs={"region": "eu"}, priority=2)
    n = router.node("ast9")
    assert (n.id, n.uri, n.pool, n.weight, n.priority) == ("ast9", "sip:10.0.0.9:5060", "media", 5, 2)
    assert n.capacity == {"conference": 7}
    assert n.attrs == {"region": "eu"}
    assert (n.state, n.health) == ("active", "up")
    router.set_state("ast9", "draining")
    router.set_health("ast9", "suspect")
    n = router.node("ast9")
    assert (n.state, n.health) == ("draining", "suspect")
    router.report_load("ast9", cpu=0.42, channels=120)
    n = router.node("ast9")
    assert n.load == {"cpu": 0.42, "channels": 120.0}
    assert n.load_updated is not None
    router.remove_node("ast9")
    with pytest.raises(approute.NotFoundError):
        router.node("ast9")
    assert [n.id for n in router.nodes()] == ["ast1", "ast2", "ast3"]


def test_disabled_and_draining(router: approute.Router) -> None:
    d = router.route("conference", call_id="c1", key="held")
    assert d.node_id is not None
    router.set_state(d.node_id, "draining")
    assert router.route("conference", call_id="c2", key="held").node_id == d.node_id
    assert router.route("conference", call_id="c3", key="fresh").node_id != d.node_id
    router.set_state(d.node_id, "disabled")
    d4 = router.route("conference", call_id="c4", key="held")
    assert not d4.ok or d4.node_id != d.node_id


@pytest.mark.parametrize(
    "call, exc, text",
    [
        (lambda r: r.route("conference", call_id=""), approute.InvalidArgumentError, "call_id is empty"),
        (lambda r: r.route("conference", call_id="x" * 65536), approute.InvalidArgumentError,
         "65536 bytes long, at most 65535 "),
        (lambda r: r.retry("c", code=503), approute.NotFoundError, "no session"),
        (lambda r: r.retry("c", code=42), approute.InvalidArgumentError, "not a SIP status code"),
        (lambda r: r.add_node("ast1", "sip:10.0.0.9"), approute.AlreadyExistsError,
         'node "ast1" already exists'),
        (lambda r: r.add_node("bad id", "sip:10.0.0.9"), approute.InvalidArgumentError, 'node id "bad id"'),
        (lambda r: r.add_node("x", "http://example.com"), approute.InvalidArgumentError, "malformed SIP URI"),
        (lambda r: r.add_node("x", "sip:10.0.0.9", weight=-1), approute.InvalidArgumentError, "weight"),
        (lambda r: r.set_state("ast1", "sleepy"), approute.InvalidArgumentError,
         'unknown admin state "sleepy"'),
        (lambda r: r.set_health("ast1", "meh"), approute.InvalidArgumentError, 'unknown health "meh"'),
        (lambda r: r.set_state("ghost", "draining"), approute.NotFoundError, 'no node "ghost"'),
        (lambda r: r.report_load("ast1", cpu="high"), approute.InvalidArgumentError, "cpu must be a number"),
        (lambda r: r.report_load("ast1", cpu=float("inf")), approute.InvalidArgumentError, "finite"),
        (lambda r: r.remove_node("ghost"), approute.NotFoundError, "ghost"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(router, call, exc, text) -> None:
    before = [(n.id, n.state, n.health, n.load, n.sessions) for n in router.nodes()]
    with pytest.raises(exc, match=text) as info:
        call(router)
    assert isinstance(info.value, approute.Error)
    assert [(n.id, n.state, n.health, n.load, n.sessions) for n in router.nodes()] == before
    assert router.stats()["sessions"] == 0


def test_unknown_app_uses_default_or_fails() -> None:
    r = approute.Router.from_yaml(CONF)
    assert r.route("queue", call_id="q1").app == "default"
    r2 = approute.Router.from_yaml(CONF.split("  default:")[0])
    with pytest.raises(approute.NotFoundError, match='unknown app "queue"'):
        r2.route("queue", call_id="q1")


def test_config_errors_name_file_line_and_key(tmp_path) -> None:
    bad = tmp_path / "router.yaml"
    bad.write_text("nodes:\n  - {id: a, uri: \"sip:10.0.0.1\"}\n"
                   "apps:\n  conference:\n    strategy: fastest\n")
    with pytest.raises(approute.ConfigError) as info:
        approute.Router.from_file(str(bad))
    msg = str(info.value)
    assert f"{bad}:5:15: apps.conference.strategy: unknown strategy \"fastest\"" in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(approute.ConfigError, match="duplicate node id"):
        approute.validate_config("nodes:\n  - {id: a, uri: 'sip:h'}\n  - {id: a, uri: 'sip:h'}\n")
    with pytest.raises(approute.NotFoundError):
        approute.Router.from_file(str(tmp_path / "missing.yaml"))


def test_reload_keeps_sessions_and_rejects_bad_config(router: approute.Router) -> None:
    d = router.route("conference", call_id="c1", key="k")
    assert d.node_id is not None
    keep = [line for line in CONF.splitlines() if "ast3" not in line or d.node_id == "ast3"]
    router.reload("\n".join(keep))
    assert router.node(d.node_id).sessions["conference"] == 1
    with pytest.raises(approute.ConfigError):
        router.reload("apps: {x: {strategy: nope}}")
    assert router.node(d.node_id).sessions["conference"] == 1


def test_shared_segment_attach_and_unlink(segment: str) -> None:
    a = approute.Router.from_yaml(CONF, shared=segment)
    assert a.shared == segment
    d = a.route("conference", call_id="c1", key="k")
    assert d.node_id is not None
    b = approute.Router.attach(segment)
    assert b.node(d.node_id).sessions["conference"] == 1
    assert b.route("conference", call_id="c2", key="k").node_id == d.node_id
    b.end("c1")
    b.end("c2")
    assert a.stats()["sessions"] == 0
    assert approute.Router.unlink(segment) is True
    assert approute.Router.unlink(segment) is False
    with pytest.raises(approute.NotFoundError, match="no shared segment"):
        approute.Router.attach(segment)


def test_shared_capacity_mismatch(segment: str) -> None:
    approute.Router.from_yaml(CONF, shared=segment)
    with pytest.raises(approute.FailedPreconditionError, match="max_sessions"):
        approute.Router.from_yaml("state: {max_sessions: 10}\n" + CONF, shared=segment)
    with pytest.raises(approute.InvalidArgumentError, match="segment name"):
        approute.Router.attach("a/b")


def test_strategies_listed() -> None:
    names = approute.strategies()
    for s in ("round_robin", "weighted_round_robin", "random", "weighted_random",
              "priority", "hash", "least_loaded", "p2c"):
        assert s in names


def test_strategy_request_attrs_says_what_each_strategy_reads() -> None:
    for name in ("round_robin", "least_loaded", "p2c", "latency"):
        assert approute.strategy_request_attrs(name) == [], name
    assert approute.strategy_request_attrs("hash") == []  # by call_id
    assert approute.strategy_request_attrs("hash", {"by": "from"}) == ["from"]
    assert approute.strategy_request_attrs("hash", {"by": "attr:tenant"}) == ["tenant"]
    assert approute.strategy_request_attrs("consistent_bounded", {"by": "to"}) == ["to"]
    assert approute.strategy_request_attrs("python:pkg.mod:Cls") == ["*"]
    with pytest.raises(approute.InvalidArgumentError, match="fastest"):
        approute.strategy_request_attrs("fastest")
    with pytest.raises(approute.InvalidArgumentError, match="by"):
        approute.strategy_request_attrs("hash", {"by": "nothing"})


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"call_id": 5}, "call_id must be str, not int"),
        ({}, "missing required keyword argument 'call_id'"),
        ({"call_id": "c", "key": 3}, "key must be str, not int"),
        ({"call_id": "c", "exclude": "ast1"}, "not a str"),
        ({"call_id": "c", "exclude": [1]}, "each node id in exclude must be str, not int"),
        ({"call_id": "c", "exclude": 5}, "exclude must be a collection of node ids, not int"),
        ({"call_id": "c", "attrs": {"from": 5}}, r"attrs\['from'\] must be str, not int"),
        ({"call_id": "c", "attrs": ["from"]}, "attrs must be a dict of str to str, not list"),
        ({"call_id": "c", "colour": "blue"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_route_argument_types_are_checked(router: approute.Router, kwargs, text) -> None:
    with pytest.raises(TypeError, match=text):
        router.route("conference", **kwargs)
    assert router.stats()["sessions"] == 0

"""Strategies written in Python: approute.Strategy, python: names, fallback."""
from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import uuid

import approute
import pytest

CONF = textwrap.dedent(
    """
    nodes:
      - {id: a, uri: "sip:10.0.0.1:5060", pool: media, capacity: {conference: 2}, attrs: {region: eu}}
      - {id: b, uri: "sip:10.0.0.2:5060", pool: media, capacity: {conference: 2}, attrs: {region: us}}
      - {id: c, uri: "sip:10.0.0.3:5060", pool: media, capacity: {conference: 2}}
      - {id: z, uri: "sip:10.0.0.9:5060", pool: other}
    apps:
      conference:
        pool: media
        resource: conference
        strategy: STRATEGY
        retry: {codes: [503], max_attempts: 3}
    """
)

MODULE = textwrap.dedent(
    """
    import approute

    class Last(approute.Strategy):
        fallback = "priority"

        def __init__(self, tag="x", n=0, table=None):
            super().__init__()
            self.tag, self.n, self.table = tag, n, table
            self.seen = []

        def select(self, request, candidates):
            self.seen.append((request.call_id, request.attempt, [c.id for c in candidates]))
            return sorted(c.id for c in candidates)[-1]

    class NotAStrategy:
        def __init__(self, **kw):
            pass

    class Raises(approute.Strategy):
        def select(self, request, candidates):
            raise KeyError("no such tenant")
    """
)


def conf(strategy: str) -> str:
    return CONF.replace("STRATEGY", strategy)


@pytest.fixture
def strat_module(tmp_path, monkeypatch):
    name = "strat_%s" % uuid.uuid4().hex[:8]
    (tmp_path / (name + ".py")).write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


class Recorder(approute.Strategy):
    """Picks the candidate named by `answer(request, candidates)`; records what it saw."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.calls = []
        self.extra = ""

    def select(self, request, candidates):
        self.calls.append((request, list(candidates)))
        return self.answer(request, candidates)


def test_select_sees_request_and_candidates_and_decides():
    rec = Recorder(lambda r, cs: "b")
    router = approute.Router.from_yaml(conf("mine"), strategies={"mine": rec})
    router._set_time(1_800_000_000.5)
    router.report_load("b", cpu=0.25)
    d = router.route("conference", call_id="c1", key="acme", attrs={"region": "us"})
    assert (d.ok, d.node_id, d.reason) == (True, "b", "strategy")
    req, cands = rec.calls[-1]
    assert (req.app, req.resource, req.call_id, req.key, req.attempt) == (
        "conference", "conference", "c1", "acme", 1)
    assert req.attrs == {"region": "us"}
    assert req.now == pytest.approx(1_800_000_000.5)
    assert [c.id for c in cands] == ["a", "b", "c"]  # pool media only
    a, b = cands[0], cands[1]
    assert (a.uri, a.pool, a.state, a.health, a.weight, a.priority) == (
        "sip:10.0.0.1:5060", "media", "active", "up", 1, 0)
    assert a.attrs == {"region": "eu"} and a.capacity == {"conference": 2}
    assert (a.used, a.limit, a.free, a.resource) == (0, 2, 2, "conference")
    assert b.load == {"cpu": 0.25} and b.load_updated == pytest.approx(1_800_000_000.5)
    assert set(a.sessions) >= {"conference", "calls"}
    # the views are copies: safe to keep after select() returned
    assert cands[0].id == "a" and "Candidate(id='a'" in repr(cands[0])


def test_python_strategy_from_retry_sees_only_untried_nodes():
    rec = Recorder(lambda r, cs: cs[0].id)
    router = approute.Router.from_yaml(conf("mine"), strategies={"mine": rec})
    d1 = router.route("conference", call_id="c1")
    d2 = router.retry("c1", code=503)
    d3 = router.retry("c1", code=503)
    assert [d1.node_id, d2.node_id, d3.node_id] == ["a", "b", "c"]
    assert [d.reason for d in (d2, d3)] == ["retry", "retry"]
    assert [r.attempt for r, _ in rec.calls] == [1, 2, 3]
    assert [[c.id for c in cs] for _, cs in rec.calls] == [["a", "b", "c"], ["b", "c"], ["c"]]
    assert router.node("c").sessions["conference"] == 1


def test_state_is_kept_across_calls_and_config_params_reach_the_constructor(strat_module):
    text = conf('{name: "python:%s:Last", tag: t1, n: 5, table: {gold: [a, b]}}' % strat_module)
    router = approute.Router.from_yaml(text)
    for i in range(4):
        d = router.route("conference", call_id="c%d" % i)
        assert d.ok
    # Last picks the highest id among candidates; c fills up (capacity 2), then b
    assert [router.node(n).sessions["conference"] for n in "abc"] == [0, 2, 2]
    obj = sys.modules[strat_module]
    # the one instance the router holds kept its state: find it through gc
    inst = [o for o in gc.get_objects() if isinstance(o, obj.Last)]
    assert len(inst) == 1
    assert (inst[0].tag, inst[0].n, inst[0].table) == ("t1", 5, {"gold": ["a", "b"]})
    assert [s[0] for s in inst[0].seen] == ["c0", "c1", "c2", "c3"]


def test_instance_survives_while_the_router_holds_it():
    rec = Recorder(lambda r, cs: cs[-1].id)
    rec.extra = "kept"
    router = approute.Router.from_yaml(conf("mine"), strategies={"mine": rec})
    ref = rec
    del rec
    gc.collect()
    assert router.route("conference", call_id="c1").node_id == "c"
    assert ref.extra == "kept" and len(ref.calls) == 1


@pytest.mark.parametrize("answer, why", [
    (lambda r, cs: 42, "expected a node id"),
    (lambda r, cs: "nope", "not a candidate"),
    (lambda r, cs: "z", "not a candidate"),        # a node, but of another pool
    (lambda r, cs: b"a", "expected a node id"),
])
def test_bad_return_values_fall_back_and_are_logged(answer, why, caplog):
    rec = Recorder(answer)
    router = approute.Router.from_yaml(conf("mine"), strategies={"mine": rec})
    with caplog.at_level(logging.ERROR, logger="approute"):
        ds = [router.route("conference", call_id="c%d" % i) for i in range(3)]
    assert all(d.ok and d.reason == "strategy" for d in ds)
    assert [d.node_id for d in ds] == ["a", "b", "c"]  # the fallback: round_robin
    msgs = [r.getMessage() for r in caplog.records if r.name == "approute"]
    assert len(msgs) == 1, msgs  # once per interval, not once per call
    assert why in msgs[0] and "falling back to round_robin" in msgs[0]


def test_none_means_the_fallback_picks_without_an_error(caplog):
    rec = Recorder(lambda r, cs: None)
    router = approute.Router.from_yaml(conf("mine"), strategies={"mine": rec})
    with caplog.at_level(logging.ERROR, logger="approute"):
        assert router.route("conference", call_id="c1").node_id == "a"
    assert not [r for r in caplog.records if r.name == "approute"]


def test_exception_falls_back_to_the_configured_builtin_with_traceback(strat_module, caplog):
    text = conf('{name: "python:%s:Raises", fallback: priority, log_interval: 0}' % strat_module)
    router = approute.Router.from_yaml(text)
    with caplog.at_level(logging.ERROR, logger="approute"):
        ds = [router.route("conference", call_id="c%d" % i) for i in range(3)]
    assert [d.node_id for d in ds] == ["a", "a", "b"]  # priority: first in order until full
    msgs = [r.getMessage() for r in caplog.records if r.name == "approute"]
    assert len(msgs) == 3  # log_interval: 0 logs every error
    assert "Traceback" in msgs[0] and "KeyError" in msgs[0] and "no such tenant" in msgs[0]
    assert "falling back to priority" in msgs[0]


def test_class_attribute_fallback_is_used():
    class Declines(approute.Strategy):
        fallback = "priority"

        def select(self, request, candidates):
            return None

    router = approute.Router.from_yaml(conf("mine"), strategies={"mine": Declines()})
    assert [router.route("conference", call_id="c%d" % i).node_id for i in range(3)] == ["a", "a", "b"]


def test_config_errors_name_the_strategy(strat_module):
    with pytest.raises(approute.ConfigError, match=r"apps.conference.strategy.*python:strat_"):
        approute.Router.from_yaml(conf('"python:%s:NotAStrategy"' % strat_module))
    with pytest.raises(approute.ConfigError, match="No module named"):
        approute.Router.from_yaml(conf('"python:no_such_module_xyz:Cls"'))
    with pytest.raises(approute.ConfigError, match="has no attribute"):
        approute.Router.from_yaml(conf('"python:%s:Missing"' % strat_module))
    with pytest.raises(approute.ConfigError, match="must look like python:package.module:ClassName"):
        approute.Router.from_yaml(conf('"python:bad name"'))
    with pytest.raises(approute.ConfigError, match="unknown strategy"):
        approute.Router.from_yaml(conf("mine"))  # not registered
    with pytest.raises(approute.ConfigError, match="fallback"):
        approute.Router.from_yaml(conf('{name: "python:%s:Last", fallback: nope}' % strat_module))
    with pytest.raises(approute.ConfigError, match="TypeError"):
        approute.Router.from_yaml(conf('{name: "python:%s:Last", bogus: 1}' % strat_module))


def test_validate_config_checks_python_names_by_syntax_only():
    approute.validate_config(conf('{name: "python:some.pkg.mod:Cls", cap: 5, rules: [{a: 1}]}'))
    with pytest.raises(approute.ConfigError, match="python:package.module:ClassName"):
        approute.validate_config(conf('"python:mod"'))


def test_register_strategy_then_reload():
    router = approute.Router.from_yaml(conf("round_robin"))
    rec = Recorder(lambda r, cs: "c")
    router.register_strategy("mine", rec, fallback="least_loaded")
    router.reload(conf("mine"))
    assert router.route("conference", call_id="c1").node_id == "c"
    with pytest.raises(KeyError):
        router.register_strategy("mine", Recorder(lambda r, cs: None))
    with pytest.raises(ValueError, match="built-in"):
        router.register_strategy("round_robin", Recorder(lambda r, cs: None))
    with pytest.raises(TypeError):
        router.register_strategy("other", object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fallback"):
        router.register_strategy("other", Recorder(lambda r, cs: None), fallback="nope")


def test_subclass_without_select_falls_back(caplog):
    class Empty(approute.Strategy):
        pass

    router = approute.Router.from_yaml(conf("mine"), strategies={"mine": Empty()})
    with caplog.at_level(logging.ERROR, logger="approute"):
        assert router.route("conference", call_id="c1").ok
    assert any("select" in r.getMessage() for r in caplog.records)


def test_threads_route_through_a_python_strategy_and_exit_cleanly():
    rec = Recorder(lambda r, cs: min(cs, key=lambda c: c.used).id)
    router = approute.Router.from_yaml(conf("mine").replace("{conference: 2}", "{conference: 100}"),
                                       strategies={"mine": rec})
    errors = []

    def work(t):
        try:
            for i in range(50):
                d = router.route("conference", call_id="t%d-%d" % (t, i))  # noqa: F821  (del below)
                assert d.ok
                router.end("t%d-%d" % (t, i))  # noqa: F821
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(rec.calls) == 200
    del router  # thread caches of exited threads are gone; the strategy goes with the GIL
    gc.collect()


def test_attached_process_imports_the_python_strategy(strat_module, tmp_path):
    name = "approute-pytest-py-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    router = approute.Router.from_yaml(conf('"python:%s:Last"' % strat_module), shared=name)
    try:
        script = textwrap.dedent(
            """
            import sys, approute
            sys.path.insert(0, %r)
            r = approute.Router.attach(%r)
            d = r.route("conference", call_id="child-1")
            print(d.node_id, d.reason, type(sys.modules[%r].Last).__name__)
            """ % (str(tmp_path), name, strat_module))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[:2] == ["c", "strategy"]
        assert router.node("c").sessions["conference"] == 1  # one state
    finally:
        del router
        approute.Router.unlink(name)


def test_retry_answer_naming_a_tried_node_falls_back(caplog):
    rec = Recorder(lambda r, cs: "a")  # always the first node, even once it was tried
    router = approute.Router.from_yaml(conf("mine"), strategies={"mine": rec})
    assert router.route("conference", call_id="c1").node_id == "a"
    with caplog.at_level(logging.ERROR, logger="approute"):
        d = router.retry("c1", code=503)
    assert d.ok and d.node_id in ("b", "c") and d.reason == "retry"
    assert any('"a", which is not a candidate' in r.getMessage() for r in caplog.records)

"""The ``approute`` command line: version, validate warnings, reload, keys, nodes, unlink,
metrics (text, textfile, HTTP), and a closed pipe."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import approute
import pytest
from approute import cli, cli_util, metrics
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

CONF = """
state: {max_nodes: 16, max_sessions: 256, max_affinities: 256}
nodes:
  - {id: a, uri: "sip:127.0.0.1:5071", pool: media, capacity: {conference: 5}}
  - {id: b, uri: "sip:127.0.0.1:5072", pool: media, capacity: {conference: 5}}
apps:
  conference: {pool: media, resource: conference, strategy: round_robin, affinity: {grace: 60}}
  default: {pool: media, strategy: round_robin}
status:
  allow_sources: ["127.0.0.0/8"]
  keys: {media: {k1: "0123456789abcdef-media"}}
"""


@pytest.fixture
def segment():
    name = f"approute-cli-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    approute.Router.unlink(name)


def run(*argv: str) -> Tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str, name: str = "router.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def cli_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("APPROUTE_SHARED", None)
    return env


# --------------------------------------------------------------------------
# --version, python -m approute

def test_version_from_python_m_and_the_script() -> None:
    p = subprocess.run([sys.executable, "-m", "approute", "--version"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "approute %s" % approute.__version__
    script = Path(sys.executable).parent / "approute"
    if script.exists():
        q = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
        assert (q.returncode, q.stdout) == (0, p.stdout)


def test_python_m_without_a_command_is_a_usage_error() -> None:
    p = subprocess.run([sys.executable, "-m", "approute"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "usage: approute" in p.stderr and "COMMAND" in p.stderr


# --------------------------------------------------------------------------
# validate: warnings and the new errors

def test_validate_clean_config_has_no_warning(tmp_path) -> None:
    rc, out, err = run("validate", "--strict", write(tmp_path, CONF))
    assert (rc, err) == (0, "")
    assert out.endswith("ok (2 nodes)\n")


@pytest.mark.parametrize("change, where, path, words", [
    # an app whose pool has no node: every call fails with no_node
    ("  queue: {pool: mdia}\n", "router.yaml:8:", "apps.queue.pool", 'no node is in pool "mdia"'),
    # the default pool has no node either (no pool: given)
    ("  ivr: {strategy: random}\n", "router.yaml:8:3", "apps.ivr.pool", 'no node is in pool "default"'),
    # a resource no node of the pool has a capacity for: a typo leaves the app unlimited
    ("  queue: {pool: media, resource: conferences}\n", "router.yaml:8:", "apps.queue.resource",
     'resource "conferences"'),
    # the same for one resource of several: the item is named and located
    ("  queue: {pool: media, resource: [conference, chanels]}\n", "router.yaml:8:", "apps.queue.resource[1]",
     'resource "chanels"'),
])
def test_validate_warns_and_strict_fails(tmp_path, change, where, path, words) -> None:
    text = CONF.replace("  default:", change + "  default:")
    f = write(tmp_path, text)
    rc, out, err = run("validate", f)
    assert rc == 0 and "ok (2 nodes, 1 warning)" in out
    line = err.strip()
    assert line.startswith(f.replace("router.yaml", "") + where) and ": warning: " + path + ": " in line, err
    assert words in line
    rc, out, err = run("validate", "--strict", f)
    assert rc == 1 and out == ""
    assert words in err and "1 warning (--strict)" in err


def test_placeholder_secret_warns_and_the_example_config_says_so(tmp_path) -> None:
    f = write(tmp_path, CONF.replace("0123456789abcdef-media", "CHANGE-ME-before-production"))
    rc, out, err = run("validate", f)
    assert rc == 0
    assert re.search(r"router\.yaml:11:\d+: warning: status\.keys\.media\.k1: .*placeholder", err), err
    rc, _, err = run("validate", str(ROOT / "examples/kamailio/router.yaml"))
    assert rc == 0 and "status.keys.media.k1" in err and err.count("warning:") == 1, err


def test_no_warning_where_the_config_is_deliberate(tmp_path) -> None:
    # A pool filled by status reports only (it has a key set), and the default resource
    # "calls" without any capacity: both are normal.
    text = CONF.replace('keys: {media: {k1: "0123456789abcdef-media"}}',
                        'keys: {media: {k1: "0123456789abcdef-media"}, dyn: {k2: "another-secret-16chars"}}')
    text = text.replace("  default:",
                        "  queue: {pool: dyn}\n  calls: {pool: media, resource: calls}\n  default:")
    rc, out, err = run("validate", "--strict", write(tmp_path, text))
    assert (rc, err) == (0, "")


def test_validate_duplicate_key_and_empty_file_are_errors(tmp_path) -> None:
    f = write(tmp_path, "apps:\n  conference: {pool: media}\n  conference: {pool: other}\n")
    rc, out, err = run("validate", f)
    assert rc == 1 and out == ""
    assert err.startswith(f + ":3:3: error: apps.conference: duplicate key"), err
    for text in ("", "\n", "# nothing yet\n", "---\n"):
        f = write(tmp_path, text, "empty.yaml")
        rc, out, err = run("validate", f)
        assert rc == 1 and out == "", text
        assert err == f + ": error: the configuration is empty (no YAML document); write {} for a router " \
                          "with nothing configured\n", err


def test_validate_reports_every_error_in_one_run(tmp_path) -> None:
    text = CONF.replace('pool: media, capacity: {conference: 5}}\n  - {id: b',
                        'pool: media, capacity: {conference: 5}, colour: red}\n  - {id: b')
    text = text.replace("strategy: round_robin, affinity", "strategy: fastest, affinity")
    text = text.replace('allow_sources: ["127.0.0.0/8"]', 'allow_sources: ["127.0.0.0/99"]')
    assert text.count("colour") == text.count("fastest") == text.count("/99") == 1
    f = write(tmp_path, text)
    rc, out, err = run("validate", f)
    assert rc == 1 and out == ""
    lines = err.splitlines()
    assert len(lines) == 3, err
    # In the order of the file, each with its line and column.
    assert re.match(re.escape(f) + r":4:\d+: error: nodes\[0\]\.colour: unknown key", lines[0]), err
    assert re.match(re.escape(f) + r":7:\d+: error: apps\.conference\.strategy: ", lines[1]), err
    assert "fastest" in lines[1]
    assert re.match(re.escape(f) + r":10:\d+: error: status\.allow_sources\[0\]: ", lines[2]), err


# --------------------------------------------------------------------------
# reload

def test_reload_applies_to_every_attached_process(tmp_path, segment) -> None:
    approute.Router.from_yaml(CONF, shared=segment)
    worker = approute.Router.attach(segment)  # stands for a Kamailio worker attached before
    assert not worker.route("conference", call_id="c0", key="k").node_id == "c"
    worker.end("c0")
    new = CONF.replace("  default:", "  ivr: {pool: extra}\n  default:")
    new = new.replace("nodes:\n", 'nodes:\n  - {id: c, uri: "sip:127.0.0.1:5073", pool: extra}\n')
    rc, out, err = run("reload", write(tmp_path, new), "--shared", segment)
    assert rc == 0, err
    assert out == "%s: reloaded %s (3 nodes)\n" % (segment, tmp_path / "router.yaml")
    d = worker.route("ivr", call_id="c1")  # an app the worker never saw configured
    assert (d.ok, d.node_id) == (True, "c")


@pytest.mark.parametrize("bad, words", [
    ("apps:\n  default: {strategy: fastest}\n", 'unknown strategy "fastest"'),
    ("nodes: []\nnodes: []\n", "duplicate key"),
    ("", "the configuration is empty"),
    ("state: {max_nodes: 99}\n" + CONF.replace("state: {max_nodes: 16, ", "state: {"), ""),
])
def test_reload_of_a_bad_config_changes_nothing(tmp_path, segment, bad, words) -> None:
    r = approute.Router.from_yaml(CONF, shared=segment)
    rc, out, err = run("reload", write(tmp_path, bad), "--shared", segment)
    assert rc == 1 and out == "", err
    assert words in err and "error" in err
    assert sorted(n.id for n in approute.Router.attach(segment).nodes()) == ["a", "b"]
    assert r.route("conference", call_id="x", key="k").ok


def test_reload_needs_a_segment(tmp_path) -> None:
    f = write(tmp_path, CONF)
    env_free = {k: v for k, v in os.environ.items() if k != "APPROUTE_SHARED"}
    old = os.environ.copy()
    os.environ.clear()
    os.environ.update(env_free)
    try:
        rc, out, err = run("reload", f)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert rc == 2 and "--shared NAME is required" in err
    rc, out, err = run("reload", f, "--shared", "approute-cli-absent-%s" % uuid.uuid4().hex[:8])
    assert rc == 1 and "error" in err


# --------------------------------------------------------------------------
# add-node, remove-node, unlink

def test_add_and_remove_node(segment) -> None:
    approute.Router.from_yaml(CONF, shared=segment)
    rc, out, err = run("add-node", "c", "sip:127.0.0.1:5073", "--shared", segment, "--pool", "media",
                       "--weight", "7", "--capacity", "conference=3,calls=9", "--attr", "region=eu")
    assert rc == 0, err
    n = approute.Router.attach(segment).node("c")
    assert (n.pool, n.weight, n.capacity, n.attrs) == ("media", 7, {"conference": 3, "calls": 9},
                                                       {"region": "eu"})
    rc, out, err = run("remove-node", "c", "--shared", segment)
    assert rc == 0 and out == "c: removed\n"
    with pytest.raises(approute.NotFoundError):
        approute.Router.attach(segment).node("c")


@pytest.mark.parametrize("argv, rc, words", [
    (["d", "sip:127.0.0.1:5074", "--capacity", "conference"], 2, "expected RESOURCE=N"),
    (["d", "sip:127.0.0.1:5074", "--capacity", "conference=lots"], 2, "not a whole number"),
    (["d", "sip:127.0.0.1:5074", "--capacity", "conference=-1"], 2, ">= 0"),
    (["d", "sip:127.0.0.1:5074", "--attr", "=eu"], 2, "expected NAME=VALUE"),
    (["d d", "sip:127.0.0.1:5074"], 1, 'node id "d d" is invalid'),
    (["d", "http://127.0.0.1"], 1, "uri"),
    (["a", "sip:127.0.0.1:5074"], 1, "AlreadyExistsError"),
    (["d", "sip:127.0.0.1:5074", "--weight", "many"], 2, ""),
])
def test_add_node_bad_input_changes_nothing(segment, argv, rc, words) -> None:
    approute.Router.from_yaml(CONF, shared=segment)
    got, out, err = run("add-node", *argv, "--shared", segment)
    assert got == rc and words in err, err
    nodes = approute.Router.attach(segment).nodes()
    assert sorted(n.id for n in nodes) == ["a", "b"]
    assert approute.Router.attach(segment).node("a").uri == "sip:127.0.0.1:5071"


def test_remove_unknown_node(segment) -> None:
    approute.Router.from_yaml(CONF, shared=segment)
    rc, _, err = run("remove-node", "zz", "--shared", segment)
    assert rc == 1 and 'no node "zz"' in err


def test_unlink(segment) -> None:
    approute.Router.from_yaml(CONF, shared=segment)
    assert os.path.exists("/dev/shm/" + segment)
    rc, out, err = run("unlink", segment)
    assert rc == 0 and out.startswith(segment + ": unlinked")
    assert not os.path.exists("/dev/shm/" + segment)
    with pytest.raises(approute.Error):
        approute.Router.attach(segment)
    rc, out, err = run("unlink", segment)
    assert rc == 1 and "no shared segment named" in err


# --------------------------------------------------------------------------
# keys (Router.affinities comes with the core; skipped on a core without it)

class _Affinity:
    def __init__(self, app: str, key: str, node_id, sessions: int, grace_left) -> None:
        self.app, self.key, self.node_id = app, key, node_id
        self.sessions, self.grace_left = sessions, grace_left


class _FakeRouter:
    """Stands for the attached router: records what keys asked for."""

    def __init__(self) -> None:
        self.calls: List[Dict[str, Any]] = []

    def node(self, id: str):
        if id != "ast1":
            raise approute.NotFoundError('no node "%s"' % id)

    def affinities(self, *, app=None, node=None, limit=None):
        self.calls.append({"app": app, "node": node, "limit": limit})
        return [_Affinity("conference", "example.com", "ast1", 2, None),
                _Affinity("conference", "example.org", None, 0, 12.34)]


def test_keys_output_and_arguments_passed(monkeypatch) -> None:
    fake = _FakeRouter()
    monkeypatch.setattr(cli_util, "attach", lambda name: fake)
    rc, out, err = run("keys", "--shared", "x", "--app", "conference", "--node", "ast1", "--limit", "5")
    assert rc == 0, err
    assert fake.calls == [{"app": "conference", "node": "ast1", "limit": 5}]
    lines = [ln.split() for ln in out.splitlines()]
    assert lines[0] == ["APP", "KEY", "NODE", "SESSIONS", "GRACE_LEFT"]
    assert lines[2:] == [["conference", "example.com", "ast1", "2", "-"],
                         ["conference", "example.org", "-", "0", "12.3s"]]
    rc, out, _ = run("keys", "--shared", "x", "--json")
    assert rc == 0 and fake.calls[-1] == {"app": None, "node": None, "limit": None}
    assert json.loads(out)["affinities"][1] == {"app": "conference", "key": "example.org", "node_id": None,
                                                "sessions": 0, "grace_left": 12.34}
    rc, _, err = run("keys", "--shared", "x", "--node", "zz")
    assert rc == 1 and 'no node "zz"' in err and len(fake.calls) == 2
    monkeypatch.setattr(cli_util, "attach", lambda name: object())
    rc, _, err = run("keys", "--shared", "x")
    assert rc == 1 and "no Router.affinities()" in err


needs_affinities = pytest.mark.skipif(not hasattr(approute.Router, "affinities"),
                                      reason="this core has no Router.affinities() yet")


@needs_affinities
def test_keys_table_filters_and_json(segment) -> None:
    r = approute.Router.from_yaml(CONF, shared=segment)
    d1 = r.route("conference", call_id="c1", key="one.example")
    d2 = r.route("conference", call_id="c2", key="two.example")
    r.route("conference", call_id="c3", key="one.example")
    r.end("c2")  # two.example: no session left, in its grace time
    rc, out, err = run("keys", "--shared", segment, "--json")
    assert rc == 0, err
    rows = {row["key"]: row for row in json.loads(out)["affinities"]}
    assert rows["one.example"]["node_id"] == d1.node_id and rows["one.example"]["sessions"] == 2
    assert rows["one.example"]["grace_left"] is None
    assert rows["two.example"]["sessions"] == 0 and 0 < rows["two.example"]["grace_left"] <= 60
    assert d1.node_id is not None and d2.node_id is not None
    rc, out, err = run("keys", "--shared", segment, "--node", d2.node_id)
    assert rc == 0 and "two.example" in out and out.splitlines()[0].split() == \
        ["APP", "KEY", "NODE", "SESSIONS", "GRACE_LEFT"]
    assert ("one.example" in out) == (d1.node_id == d2.node_id)
    rc, out, _ = run("keys", "--shared", segment, "--app", "default")
    assert rc == 0 and len(out.splitlines()) == 2  # headers only
    rc, _, err = run("keys", "--shared", segment, "--node", "zz")
    assert rc == 1 and 'no node "zz"' in err
    rc, _, err = run("keys", "--shared", segment, "--limit", "0")
    assert rc == 2 and "--limit" in err


# --------------------------------------------------------------------------
# metrics

def families(text: str) -> Dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _publish_refused(r: approute.Router) -> None:
    body = json.dumps({"node": "x", "uri": "sip:127.0.0.1:5079", "pool": "media", "seq": 1})
    auth = approute.sign_report(body, keyid="k1", secret="not-the-right-secret-at-all")
    assert r.apply_report(body, expires=60, source="127.0.0.1", auth=auth).code == 403


def test_metrics_parse_with_counters_typed_as_counters(segment) -> None:
    r = approute.Router.from_yaml(CONF, shared=segment)
    r.route("conference", call_id="c1", key="k")
    _publish_refused(r)
    rc, out, err = run("metrics", "--shared", segment)
    assert rc == 0, err
    fam = families(out)
    assert fam["approute_sessions"].type == "gauge"
    assert fam["approute_sessions"].samples[0].value == 1
    # counters: the parser strips _total from the family name and keeps it on the samples
    for name in ("approute_sessions_expired", "approute_reports", "approute_node_routed"):
        assert fam[name].type == "counter", name
        assert all(s.name == name + "_total" for s in fam[name].samples)
    reports = {(s.labels.get("result"), s.labels.get("reason")): s.value
               for s in fam["approute_reports"].samples}
    assert reports[("accepted", None)] == 0 and reports[("refused", "signature")] == 1
    assert not any(f.type == "gauge" and f.name.endswith("_total") for f in fam.values())
    assert "# TYPE approute_expired_sessions" not in out  # the old gauge names are gone
    routed = {s.labels["node"]: s.value for s in fam["approute_node_routed"].samples}
    assert sum(routed.values()) == 1


def test_core_counters_count_every_process(segment) -> None:
    """decisions, retries and route latency live in the segment: a forked
    worker's routes count in the same families as the parent's."""
    r = approute.Router.from_yaml(CONF, shared=segment)
    pid = os.fork()
    if pid == 0:  # a worker: 32 routes, each on a new key
        try:
            for i in range(32):
                r.route("default", call_id="w%d" % i)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    for i in range(32):
        r.route("default", call_id="p%d" % i)
    d = r.retry("p0", code=503)
    rc, out, err = run("metrics", "--shared", segment)
    assert rc == 0, err
    fam = families(out)
    dec = {(s.labels["app"], s.labels["reason"]): s.value for s in fam["approute_decisions"].samples}
    assert dec[("default", "strategy")] == 64 and d.ok
    assert dec[("default", "retry")] == 1 and dec[("conference", "strategy")] == 0
    assert {(s.labels["app"], s.labels["code"]): s.value for s in fam["approute_retries"].samples} == \
        {("default", "503"): 1}
    h = fam["approute_route_seconds"]
    count = [s.value for s in h.samples if s.name.endswith("_count")][0]
    assert 2 <= count <= 64 // 16 + 2  # one route in 16 per thread is timed
    inf = [s.value for s in h.samples if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"][0]
    assert inf == count
    assert fam["approute_processes"].samples[0].value >= 1
    assert fam["approute_repairs"].type == "counter"


def test_future_core_counters_need_one_table_entry() -> None:
    """decisions/retries/route_seconds in stats() come out as Prometheus expects."""
    stats = {
        "sessions": 0,
        "decisions": {"conference": {"affinity": 3, "strategy": 2}, "queue": {"no_node": 1}},
        "retries": {"conference": {503: 4}},
        "route_seconds": {"buckets": {0.0001: 5, 0.001: 9, float("inf"): 10}, "sum": 0.004, "count": 10},
        "something_new": 7,
    }
    fam = families(metrics.metrics_text(stats, []))
    dec = {(s.labels["app"], s.labels["reason"]): s.value for s in fam["approute_decisions"].samples}
    assert fam["approute_decisions"].type == "counter"
    assert dec == {("conference", "affinity"): 3, ("conference", "strategy"): 2, ("queue", "no_node"): 1}
    assert [(s.labels, s.value) for s in fam["approute_retries"].samples] == [({"app": "conference",
                                                                                 "code": "503"}, 4)]
    h = fam["approute_route_seconds"]
    assert h.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in h.samples if s.name.endswith("_bucket")]
    assert buckets == [("0.0001", 5), ("0.001", 9), ("+Inf", 10)]
    assert fam["approute_something_new"].type == "gauge"


def test_metrics_textfile_is_written_whole(tmp_path, segment) -> None:
    approute.Router.from_yaml(CONF, shared=segment)
    path = tmp_path / "approute.prom"
    path.write_text("stale\n")
    rc, out, err = run("metrics", "--shared", segment, "--textfile", str(path))
    assert (rc, out, err) == (0, "", "")
    assert families(path.read_text())["approute_nodes"].samples[0].value == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["approute.prom"]  # no temporary left
    rc, _, err = run("metrics", "--shared", segment, "--textfile", str(tmp_path / "no/such/dir/x.prom"))
    assert rc == 1 and "No such file" in err


@pytest.mark.parametrize("listen, words", [
    ("9464", "expected ADDR:PORT"),
    ("127.0.0.1:99999", "outside 0..65535"),
    (":9464", "give the address"),
])
def test_metrics_listen_bad_address(segment, listen, words) -> None:
    approute.Router.from_yaml(CONF, shared=segment)
    rc, _, err = run("metrics", "--shared", segment, "--listen", listen)
    assert rc == 2 and words in err


def test_parse_listen() -> None:
    assert metrics.parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert metrics.parse_listen("[::1]:0") == ("::1", 0)
    assert metrics.parse_listen("localhost:80") == ("localhost", 80)
    for bad in ("::1:9464", "127.0.0.1", "127.0.0.1:", "[::1]", "127.0.0.1:http"):
        with pytest.raises(ValueError, match="ADDR:PORT"):
            metrics.parse_listen(bad)


def test_metrics_listen_on_a_busy_port_is_an_error(segment) -> None:
    import socket
    approute.Router.from_yaml(CONF, shared=segment)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc, out, err = run("metrics", "--shared", segment, "--listen", "127.0.0.1:%d" % port)
    assert rc == 1 and "Address already in use" in err


def _start_server(segment: str) -> Tuple["subprocess.Popen[str]", str]:
    proc = subprocess.Popen([sys.executable, "-m", "approute", "metrics", "--shared", segment,
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "approute metrics: serving http://127.0.0.1:PORT/metrics"
    m = re.search(r"http://(127\.0\.0\.1:\d+)/metrics", line)
    if not m:
        proc.kill()
        raise AssertionError("no serving line: %r %r" % (line, proc.communicate(timeout=10)))
    return proc, m.group(1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_metrics_over_http_and_clean_stop(segment, sig) -> None:
    r = approute.Router.from_yaml(CONF, shared=segment)
    proc, addr = _start_server(segment)
    try:
        with urllib.request.urlopen("http://%s/metrics" % addr, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            fam = families(resp.read().decode())
        assert fam["approute_sessions"].samples[0].value == 0
        r.route("conference", call_id="c1", key="k")  # each scrape reads the live state
        with urllib.request.urlopen("http://%s/metrics" % addr, timeout=10) as resp:
            assert families(resp.read().decode())["approute_sessions"].samples[0].value == 1
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen("http://%s/other" % addr, timeout=10)
        assert e.value.code == 404
    finally:
        os.kill(proc.pid, sig)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    rest = proc.stderr.read() if proc.stderr else ""
    assert rc == 0, rest
    assert "Traceback" not in rest and "stopped" in rest


def test_metrics_listen_reports_a_segment_gone(segment) -> None:
    approute.Router.from_yaml(CONF, shared=segment)
    proc, addr = _start_server(segment)
    try:
        approute.Router.unlink(segment)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen("http://%s/metrics" % addr, timeout=10)
        assert e.value.code == 503
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


# --------------------------------------------------------------------------
# a reader that closes the pipe early

@pytest.mark.parametrize("command", ["status --json", "status", "metrics"])
def test_closed_pipe_is_quiet(tmp_path, segment, command) -> None:
    # Enough nodes that the output is far larger than a pipe's buffer: the
    # command is still writing when `head` has read its line and gone. (`status
    # --json` writes in many pieces, so a later one always meets the closed pipe;
    # before the fix it printed "approute status: error: [Errno 32] Broken pipe".)
    nodes = "".join('  - {id: node-%04d.media.example.com, uri: "sip:node-%04d.media.example.com:%d", '
                    'pool: media, capacity: {conference: 50, channels: 500}}\n' % (i, i, 6000 + i)
                    for i in range(1000))
    text = "state: {max_nodes: 1024, max_sessions: 256, max_affinities: 256}\nnodes:\n" + nodes + \
        "apps:\n  default: {pool: media}\n"
    approute.Router.from_yaml(text, shared=segment)
    full = subprocess.run([sys.executable, "-m", "approute", *command.split(), "--shared", segment],
                          capture_output=True, timeout=60, env=cli_env())
    assert full.returncode == 0 and len(full.stdout) > 2 * 65536
    errfile = tmp_path / "stderr"
    p = subprocess.run(["bash", "-c", 'set -o pipefail; "$0" -m approute %s --shared "$1" 2>"$2" | head -1'
                        % command, sys.executable, segment, str(errfile)],
                       capture_output=True, text=True, timeout=60, env=cli_env())
    assert p.stdout.splitlines() == [full.stdout.decode().splitlines()[0]]
    assert errfile.read_text() == ""
    assert p.returncode == 0

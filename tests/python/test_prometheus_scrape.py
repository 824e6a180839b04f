"""A real Prometheus (Debian's `prometheus`) scrapes `approute metrics --listen`
of a running router: the alert rules of examples/prometheus evaluate without an
error on what approute really exports (a label mismatch or a many-to-many match
shows only then), and every panel of examples/grafana/approute.json returns
data. Both servers run on free loopback ports in a temporary directory and are
stopped by their pids. Without prometheus the test skips, or fails where
APPROUTE_E2E_REQUIRED=1 (CI)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import approute
import pytest
from promql_names import ROUTER_YAML, required_binary, selected_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "prometheus" / "approute-rules.yml"
DASHBOARD = ROOT / "examples" / "grafana" / "approute.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def api(base: str, path: str, **params: str) -> Any:
    url = "%s/api/v1/%s?%s" % (base, path, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=20) as resp:
        body = json.loads(resp.read().decode())
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[Dict[str, str]]:
    """A router with calls, a draining node and a load report; approute metrics --listen
    on it; a Prometheus scraping it every second with the example rules loaded."""
    prometheus = required_binary("prometheus", "the rules and dashboard against a real scrape")
    shared = "approute-scrape-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    r = approute.Router.from_yaml(ROUTER_YAML, shared=shared)
    for i in range(40):
        r.route("default", call_id="c%d" % i, key="k%d" % (i % 7))
    r.retry("c0", code=503)
    r.report_load("a", cpu=0.5)
    r.drain("b")
    env = dict(os.environ)
    env.pop("APPROUTE_SHARED", None)
    exporter = subprocess.Popen([sys.executable, "-m", "approute", "metrics", "--shared", shared,
                                 "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, env=env)
    procs: List[subprocess.Popen[bytes]] = [exporter]
    try:
        assert exporter.stderr is not None
        line = exporter.stderr.readline().decode()
        m = re.search(r"http://(127\.0\.0\.1:\d+)/metrics", line)
        assert m, line
        target = m.group(1)
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [%s]\n"
            "scrape_configs:\n"
            "  - job_name: approute\n"
            "    static_configs: [{targets: ['%s']}]\n" % (json.dumps(str(RULES)), target))
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 (closed below)
        procs.append(subprocess.Popen(
            [prometheus, "--config.file=%s" % (tmp_path / "prometheus.yml"),
             "--storage.tsdb.path=%s" % (tmp_path / "data"), "--web.listen-address=127.0.0.1:%d" % port],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        base = "http://127.0.0.1:%d" % port
        deadline = time.monotonic() + 60
        while True:  # up, and at least 10 scrapes in (rates need two samples in their window)
            try:
                got = api(base, "query", query="count_over_time(approute_nodes[1m])")
                if got["result"] and float(got["result"][0]["value"][1]) >= 10:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        yield {"base": base, "instance": target}
        log.close()
    finally:
        for p in reversed(procs):
            stop(p)
        approute.Router.unlink(shared)


def test_rules_evaluate_without_error(scraped: Dict[str, str]) -> None:
    groups = api(scraped["base"], "rules")["groups"]
    rules = [rule for g in groups for rule in g["rules"]]
    assert len(rules) == RULES.read_text().count("- alert:")
    bad = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    assert not bad, bad
    # a draining node is no alert yet (2 h), and nothing here is down, full or refused
    firing = api(scraped["base"], "alerts")["alerts"]
    assert [a for a in firing if a["state"] == "firing"] == []


def test_every_dashboard_panel_returns_data(scraped: Dict[str, str]) -> None:
    dash = json.loads(DASHBOARD.read_text())
    exported = set(api(scraped["base"], "label/__name__/values"))
    checked = 0
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        results, names = [], set()
        for t in panel["targets"]:
            expr = (t["expr"].replace("$__rate_interval", "30s").replace('"$pool"', '".*"')
                    .replace('"$instance"', json.dumps(scraped["instance"])))
            names.update(selected_names(expr))
            results.append(api(scraped["base"], "query", query=expr)["result"])
        if names <= exported:  # a panel on families this router exports shows something
            assert any(results), "panel %r: no data from %s" % (
                panel["title"], [t["expr"] for t in panel["targets"]])
            checked += 1
    assert checked >= 15  # every panel but those of families this router lacks (cluster:)

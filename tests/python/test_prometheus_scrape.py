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
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator

import approute
import pytest
from approute import _procs
from metrics_server import start_server, stop_server
from promql_names import ROUTER_YAML, required_binary, selected_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "prometheus" / "approute-rules.yml"
DASHBOARD = ROOT / "examples" / "grafana" / "approute.json"


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
    exporter, target = start_server(shared)
    try:
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [%s]\n"
            "scrape_configs:\n"
            "  - job_name: approute\n"
            "    static_configs: [{targets: ['%s']}]\n" % (json.dumps(str(RULES)), target))
        port = _procs.free_tcp_port()
        server = _procs.Proc("prometheus", [
            prometheus, "--config.file=%s" % (tmp_path / "prometheus.yml"),
            "--storage.tsdb.path=%s" % (tmp_path / "data"), "--web.listen-address=127.0.0.1:%d" % port],
            tmp_path / "prometheus.log")
        base = "http://127.0.0.1:%d" % port

        def scraped_ten_times() -> bool:  # rates need two samples in their window
            try:
                got = api(base, "query", query="count_over_time(approute_nodes[1m])")
            except OSError:  # not listening yet
                return False
            return bool(got["result"]) and float(got["result"][0]["value"][1]) >= 10

        try:
            _procs.wait_for(scraped_ten_times, timeout=60, interval=0.5, what="10 scrapes by Prometheus")
            yield {"base": base, "instance": target}
        finally:
            server.stop()
    finally:
        stop_server(exporter)
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

"""examples/grafana/approute.json: it parses as a Grafana dashboard and every
PromQL query in it (panels and template variables) names only metrics approute
exports (read from a running router's `approute metrics` output and
approute.metrics' table, not from a list kept here)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from promql_names import exported_names, selected_names

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "approute.json"

_LABEL_VALUES = re.compile(r"^\s*label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$")


def panels(dash: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])  # panels inside a collapsed row


def queries(dash: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable."""
    out = []
    for p in panels(dash):
        for t in p.get("targets", []):
            out.append(("panel %r %s" % (p.get("title"), t.get("refId")), t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v.get("query"), dict) else v["query"]
        m = _LABEL_VALUES.match(q)
        assert m, "variable %s: expected label_values(SELECTOR, LABEL), got %r" % (v["name"], q)
        out.append(("variable %s" % v["name"], m.group(1)))
    return out


def test_dashboard_parses_with_unique_ids_and_datasource_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    graphs = [p for p in panels(dash) if p["type"] != "row"]
    assert len(graphs) >= 10
    for p in graphs:
        assert p["title"] and p["targets"], p.get("title")
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_every_query_names_only_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exported = exported_names()
    found = set()
    for where, expr in queries(dash):
        names = selected_names(expr)
        assert names, "%s: no metric in %r" % (where, expr)
        missing = sorted(set(names) - exported)
        assert not missing, "%s: not exported by approute: %s" % (where, missing)
        found.update(names)
    # the dashboard covers the families the alerts are about
    for name in ("approute_node_sessions", "approute_node_capacity", "approute_node_up",
                 "approute_decisions_total", "approute_cluster_degraded", "approute_sessions_expired_total",
                 "approute_reports_total"):
        assert name in found, name

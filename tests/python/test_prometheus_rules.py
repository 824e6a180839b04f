"""examples/prometheus/approute-rules.yml: promtool's own unit tests of the rules
(approute-rules.test.yml), every alert documented and tested, and every metric
the rules name one that approute exports. promtool is Debian's `prometheus`
package; without it the test is skipped, or fails where APPROUTE_E2E_REQUIRED=1 (CI)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from promql_names import exported_names, required_binary, selected_names

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "examples" / "prometheus"
RULES = RULES_DIR / "approute-rules.yml"
RULE_TESTS = RULES_DIR / "approute-rules.test.yml"


def alerts() -> List[Dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_and_unit_tests_pass(tmp_path: Path) -> None:
    promtool = required_binary("promtool", "the alert rules' unit tests")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True,
                           timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: %d rules found" % len(alerts()) in check.stdout
    test = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=RULES_DIR,
                          capture_output=True, text=True, timeout=300, check=False)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def test_promtool_fails_a_rule_that_stops_firing(tmp_path: Path) -> None:
    """The unit tests can fail: with the pool threshold raised past what the
    tests feed it, promtool reports the alert it expected and did not get."""
    promtool = required_binary("promtool", "the alert rules' unit tests")
    text = RULES.read_text()
    assert "> 0.85" in text
    (tmp_path / RULES.name).write_text(text.replace("> 0.85", "> 0.95"))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    test = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert test.returncode != 0
    assert "alertname: ApproutePoolNearCapacity" in test.stdout + test.stderr


def test_every_alert_has_severity_text_runbook_and_a_firing_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    fired = {case["alertname"] for group in tests["tests"] for case in group.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "an alert name is used twice"
    for a in alerts():
        name = a["alert"]
        assert a.get("labels", {}).get("severity") in ("critical", "warning", "info"), name
        notes = a.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert notes.get(key, "").strip(), "%s has no %s" % (name, key)
        assert "\n" not in notes["runbook"].strip(), "%s: the runbook is one line" % name
        assert "`approute " in notes["runbook"], "%s: the runbook names no approute command" % name
        assert name in fired, "%s is never shown firing in %s" % (name, RULE_TESTS.name)


def test_rules_name_only_exported_metrics() -> None:
    exported = exported_names()
    used = {n for a in alerts() for n in selected_names(a["expr"])}
    assert used, "no metric found in the rules"
    assert used <= exported, "not exported by approute: %s" % sorted(used - exported)
    # and the parser really reads the expressions: a name approute lacks is caught
    assert "approute_no_such_metric" not in exported
    assert selected_names("rate(approute_no_such_metric[5m]) > 0") == ["approute_no_such_metric"]
    with pytest.raises(AssertionError, match="without a metric name"):
        selected_names('{__name__=~"approute_.*"}')

"""A node's own counts in admission, from Python: report_load(id, channels=n)
bounds what the node still takes, counting approute's calls since the report,
until status.usage_max_age."""
from __future__ import annotations

import textwrap

import approute
import pytest

CONF = textwrap.dedent(
    """
    status: {usage_max_age: 20}
    nodes:
      - {id: ast1, uri: "sip:10.0.0.1:5060", pool: media, capacity: {channels: 500}}
    apps:
      calls: {pool: media, strategy: least_loaded, resource: channels}
    """
)


def placed(r: approute.Router, prefix: str, n: int) -> int:
    return sum(1 for i in range(n) if r.route("calls", call_id=f"{prefix}{i}").ok)


def test_a_node_reporting_480_of_500_takes_20_more() -> None:
    r = approute.Router.from_yaml(CONF)
    r.report_load("ast1", channels=480)
    assert placed(r, "c", 30) == 20
    d = r.route("calls", call_id="more")
    assert not d.ok and d.reason == "no_node" and "1 full" in d.detail
    assert r.node("ast1").sessions["channels"] == 20
    assert r.node("ast1").load["channels"] == 480


def test_calls_placed_since_the_report_count_on_top_of_it() -> None:
    r = approute.Router.from_yaml(CONF)
    assert placed(r, "a", 10) == 10
    r.report_load("ast1", channels=490)  # approute's 10 and 480 of the node's own
    assert placed(r, "b", 30) == 10


def test_a_stale_report_stops_counting() -> None:
    r = approute.Router.from_yaml(CONF)
    r._set_time(1_000_000)
    r.report_load("ast1", channels=500)
    assert placed(r, "a", 5) == 0
    r._set_time(1_000_019)
    assert placed(r, "b", 5) == 0
    r._set_time(1_000_020)
    assert placed(r, "c", 5) == 5


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_usage_max_age_must_be_a_positive_number_of_seconds(value: str) -> None:
    with pytest.raises(approute.ConfigError, match="status.usage_max_age"):
        approute.Router.from_yaml(CONF.replace("usage_max_age: 20", f"usage_max_age: {value}"))

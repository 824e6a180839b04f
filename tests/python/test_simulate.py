"""`approute simulate`: determinism, outputs, the CLI, Python strategies, speed."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from approute import cli, simulate

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "examples" / "simulate" / "reference.yaml"

SMALL = {
    "seed": 7,
    "duration": 600,
    "sample_interval": 30,
    "router": {
        "nodes": [
            {"id": "n1", "uri": "sip:10.0.0.1", "pool": "media", "weight": 2, "attrs": {"region": "eu"}},
            {"id": "n2", "uri": "sip:10.0.0.2", "pool": "media", "attrs": {"region": "us"}},
            {"id": "n3", "uri": "sip:10.0.0.3", "pool": "media", "attrs": {"region": "eu"}},
        ],
        "apps": {"conference": {"pool": "media", "resource": "conference", "affinity": {"grace": 30}}},
    },
    "nodes": {"n1": {"limit": 40}, "n2": {"limit": 40, "speed": 0.5}, "n3": {"limit": 40}},
    "workload": {
        "conference": {
            "rate": [[0, 2], [300, 6], [600, 2]],
            "keys": {"count": 50, "zipf": 1.2, "prefix": "t"},
            "duration": {"dist": "lognormal", "mean": 20, "sigma": 0.5},
            "attrs": {"region": {"eu": 0.7, "us": 0.3}},
        },
    },
    "events": [
        {"at": 200, "fail": "n3"},
        {"at": 260, "recover": "n3"},
        {"at": 300, "join": "n4", "uri": "sip:10.0.0.4", "pool": "media", "limit": 40},
        {"at": 450, "leave": "n1"},
        {"at": 500, "remove": "n2"},
    ],
    "strategies": ["round_robin", "p2c", {"name": "least_loaded", "label": "ll"}],
}


def strip(result):
    for r in result["results"]:
        r.pop("wall_seconds")
        r.pop("calls_per_second")
    return result


def test_deterministic_under_a_seed():
    a = strip(simulate.run(SMALL))
    b = strip(simulate.run(SMALL))
    assert a == b
    c = strip(simulate.run(SMALL, seed=8))
    assert [r["calls"] for r in c["results"]] != [r["calls"] for r in a["results"]] or \
        [r["samples"] for r in c["results"]] != [r["samples"] for r in a["results"]]


def test_result_counts_hold_together():
    res = simulate.run(SMALL)
    labels = [r["label"] for r in res["results"]]
    assert labels == ["round_robin", "p2c", "ll"]
    for r in res["results"]:
        assert r["calls"] > 1000
        assert r["calls"] == r["routed"] + r["rejected"]
        assert r["errors"] == 0
        assert r["dropped"] > 0                      # n3 failed with calls on it
        assert r["node_ids"] == ["n1", "n2", "n3", "n4"]
        assert sum(r["placed"].values()) == r["routed"]
        n4 = r["samples"][3]
        assert n4[0] == -1 and n4[-1] >= 0          # joined at 300 s
        assert r["samples"][1][-1] == -1            # n2 removed at 500 s
        assert 0 < r["mean_sessions"] <= r["p99_sessions"] <= r["max_sessions"] <= 40
        assert r["max_util"] is not None and r["max_util"] <= 1.0
        assert 0.0 <= r["affinity_hit_rate"] <= 1.0
    # arrivals do not depend on the strategy
    assert len({r["calls"] for r in res["results"]}) == 1


def test_cli_writes_table_json_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    wl = tmp_path / "wl.yaml"
    import yaml
    wl.write_text(yaml.safe_dump(SMALL))
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["simulate", str(wl), "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"),
                   "--strategy", "round_robin", "--strategy", "{name: hash, by: key}"], out, err)
    assert rc == 0, err.getvalue()
    text = out.getvalue()
    assert "round_robin" in text and "hash(by=key)" in text and "affinity hit" in text
    data = json.loads((tmp_path / "r.json").read_text())
    assert [r["label"] for r in data["results"]] == ["round_robin", "hash(by=key)"]
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_cli_reports_bad_workloads(tmp_path):
    wl = tmp_path / "bad.yaml"
    wl.write_text("workload: {conference: {rate: [[0, 1]], nope: 1}}\nrouter: {}\n")
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["simulate", str(wl)], out, err) == 1
    assert "workload.conference: unknown key(s) nope" in err.getvalue()
    wl.write_text("workload: {conference: {rate: 1}}\nrouter: {}\nevents: [{at: 1, explode: n1}]\n")
    assert cli.main(["simulate", str(wl)], out, io.StringIO()) == 1


def test_python_strategy_in_the_simulator(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples" / "strategies"))
    small = dict(SMALL, duration=200)
    res = simulate.run(small, strategies=["python:prefer_region:PreferRegion", "least_loaded"])
    pr, ll = res["results"]
    assert pr["calls"] == ll["calls"] and pr["errors"] == 0 and pr["routed"] > 100


def test_progress_is_reported():
    seen = []
    simulate.run(dict(SMALL, strategies=["round_robin"]), progress=lambda label, f: seen.append((label, f)))
    assert seen and seen[-1] == ("round_robin", 1.0)


def test_reference_workload_runs_a_million_calls():
    """The workload docs/strategies.md times runs at least a million calls and
    reports its wall time (the speed itself is a figure, printed by
    `approute simulate`, not asserted: a test never asserts wall-clock time)."""
    res = simulate.run(str(REFERENCE), strategies=["round_robin", "least_loaded"])
    calls = sum(r["calls"] for r in res["results"])
    assert calls >= 1_000_000
    assert all(r["wall_seconds"] > 0 for r in res["results"]), res["results"]


# A popular key with steady traffic must not keep a leaving node busy forever.
STEADY = {
    "seed": 3,
    "duration": 900,
    "sample_interval": 10,
    "router": {
        "nodes": [{"id": "n%d" % i, "uri": "sip:10.0.0.%d" % i, "pool": "media"} for i in (1, 2, 3)],
        "apps": {"conference": {"pool": "media", "resource": "conference", "affinity": {"grace": 60}}},
    },
    "workload": {"conference": {"rate": 20, "keys": {"count": 5, "zipf": 1.5, "prefix": "t"},
                                "duration": {"dist": "fixed", "mean": 30}}},
    "strategies": ["round_robin", "least_loaded", {"name": "consistent_bounded", "by": "key"}],
}


@pytest.mark.parametrize("event,bound", [({"at": 300, "leave": "n1"}, 30 + 10),
                                         ({"at": 300, "drain": "n1", "deadline": 60}, 60 + 30 + 10)])
def test_leave_and_drain_with_deadline_complete_under_steady_keyed_traffic(event, bound):
    res = simulate.run(dict(STEADY, events=[event]))
    for r in res["results"]:
        (d,) = r["drains"]
        assert d["node"] == "n1" and d["empty_after"] is not None, r["label"]
        assert d["empty_after"] <= bound, (r["label"], d)
        assert r["rejected"] == 0


def test_drain_without_deadline_keeps_a_busy_key():
    res = simulate.run(dict(STEADY, strategies=["round_robin"], events=[{"at": 300, "drain": "n1"}]))
    (d,) = res["results"][0]["drains"]
    # n1 holds some key whose calls never stop: without a deadline it never empties.
    assert d["empty_after"] is None and d["left_at_end"] > 0


def test_event_deadline_is_checked():
    with pytest.raises(simulate.SimulationError, match=r"events\[0\]\.deadline"):
        simulate.run(dict(STEADY, events=[{"at": 1, "fail": "n1", "deadline": 5}]))
    with pytest.raises(simulate.SimulationError, match=r"events\[0\]\.deadline"):
        simulate.run(dict(STEADY, events=[{"at": 1, "drain": "n1", "deadline": -1}]))

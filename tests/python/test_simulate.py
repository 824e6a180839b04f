"""`approute simulate`: determinism, outputs, the CLI, Python strategies, speed."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------
# rooms: the room a strict key, the caller's domain a preference, a headroom

ROOMS = {
    "seed": 3,
    "duration": 3600,
    "sample_interval": 30,
    "router": {
        "nodes": [{"id": "r%d" % i, "uri": "sip:10.0.3.%d" % i, "pool": "media",
                   "capacity": {"conference": 30}} for i in (1, 2, 3)],
        "apps": {"conference": {"pool": "media", "resource": "conference",
                                "affinity": {"grace": 30, "strict": True}, "retry": {"codes": [503]}}},
    },
    "nodes": {"r1": {"limit": 30}, "r2": {"limit": 30}, "r3": {"limit": 30}},
    "workload": {"conference": {
        "rate": 0.06,
        "duration": {"dist": "lognormal", "mean": 400, "sigma": 0.4},
        "rooms": {"participants": [3, 10], "domains": 6, "home_share": 0.7},
    }},
    "strategies": [
        {"name": "least_loaded", "label": "loose", "affinity": {"strict": False}},
        {"name": "least_loaded", "label": "strict"},
        {"name": "least_loaded", "label": "headroom", "affinity": {"headroom": 0.25}},
    ],
}


def test_rooms_split_only_without_strict_keys_and_headroom_keeps_seats():
    res = simulate.run(ROOMS)
    loose, strict, headroom = res["results"]
    for r in res["results"]:
        assert r["errors"] == 0
        assert r["rooms"] == loose["rooms"] > 100          # every row sees the same rooms ...
        assert r["calls"] == loose["calls"] > 3 * r["rooms"]  # ... and the same participants
        assert r["calls"] == r["routed"] + r["rejected"]
        assert r["rejected"] == r["participants_refused"] + r["new_rooms_refused"]
        assert sum(r["refusals"].values()) == r["rejected"]
        assert r["rooms_held"] <= r["rooms"]
        assert r["max_sessions"] <= 30
    # as a preference the room follows the load: full rooms spill to other nodes
    assert loose["split_rooms"] > 0 and loose["max_split_rooms"] > 0 and loose["split_participants"] > 0
    # strict: never split, whatever the load; the full room refuses instead
    for r in (strict, headroom):
        assert r["split_rooms"] == r["max_split_rooms"] == r["split_participants"] == 0
    assert strict["participants_refused"] > 0 and strict["refusals"].get("key_full", 0) > 0
    # headroom: fewer participants turned away from their own room, paid in new rooms refused
    assert headroom["participants_refused"] < strict["participants_refused"]
    assert headroom["new_rooms_refused"] > strict["new_rooms_refused"]
    text = simulate.format_table(res)
    assert "split rooms" in text and "new rooms refused" in text and "headroom" in text


def test_rooms_example_workload_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["simulate", str(REPO / "examples" / "simulate" / "rooms.yaml"), "--duration", "3600",
                   "--plot", str(tmp_path / "rooms.png"), "--json", str(tmp_path / "rooms.json")], out, err)
    assert rc == 0, err.getvalue()
    data = json.loads((tmp_path / "rooms.json").read_text())
    by = {r["label"]: r for r in data["results"]}
    assert by["least_loaded, not strict"]["split_rooms"] > 0
    assert all(r["split_rooms"] == 0 for label, r in by.items() if "not strict" not in label)
    png = (tmp_path / "rooms.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@pytest.mark.parametrize("rooms, message", [
    ({"participants": [5, 2]}, "participants"),
    ({"participants": 3, "domains": 0}, "domains"),
    ({"home_share": 1.5}, "home_share"),
    ({"people": 3}, r"unknown key\(s\) people"),
])
def test_rooms_spec_is_checked(rooms, message):
    wl = json.loads(json.dumps(ROOMS))
    wl["workload"]["conference"]["rooms"] = rooms
    with pytest.raises(simulate.SimulationError, match=message):
        simulate.run(wl)


def test_rooms_make_their_own_keys():
    wl = json.loads(json.dumps(ROOMS))
    wl["workload"]["conference"]["keys"] = 10
    with pytest.raises(simulate.SimulationError, match="rooms make their own keys"):
        simulate.run(wl)


def test_plot_is_readable(tmp_path):
    """One legend under the panels (not over the data, one entry per node on
    at most a few rows), distinct colour/style per node, each node's size
    drawn while it is in the pool, every pool event marked and named."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    small: Any = SMALL
    wl = dict(small)
    wl["router"] = dict(small["router"], nodes=small["router"]["nodes"] + [
        {"id": "n%d" % i, "uri": "sip:10.0.1.%d" % i, "pool": "media"} for i in range(5, 12)])
    wl["nodes"] = dict(small["nodes"], **{"n%d" % i: {"limit": 40} for i in range(5, 12)})
    res = simulate.run(wl, strategies=["round_robin", "p2c"])
    fig = simulate.plot_figure(res)
    try:
        fig.canvas.draw()
        (legend,) = fig.legends
        labels = [t.get_text() for t in legend.get_texts()]
        nodes = ["n1", "n2", "n3", "n4"] + ["n%d" % i for i in range(5, 12)]
        assert sorted(labels[:len(nodes)]) == sorted(nodes)
        assert "size (limit x speed)" in labels and "pool event" in labels
        assert all("\n" not in lbl for lbl in labels)
        # under every panel: the legend's top is below the lowest axes' bottom
        r = fig.canvas.get_renderer()
        top = legend.get_window_extent(r).y1
        assert top <= min(ax.get_tightbbox(r).y0 for ax in fig.axes) + 1
        # eleven nodes: no two share colour and line style
        styles = {(h.get_color(), h.get_linestyle()) for h in legend.legend_handles[:len(nodes)]}
        assert len(styles) == len(nodes)
        ax = fig.axes[0]
        words = {t.get_text() for t in ax.texts}
        assert {"n3 fails", "n3 recovers", "n4 joins", "n1 leaves", "n2 removed"} <= words, words
        # a dotted size line per node at its limit x speed (n2: 40 x 0.5)
        dotted = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
        levels = {round(max(v for v in ln.get_ydata() if v == v)) for ln in dotted}
        assert {20, 40} <= levels
        # n4's size line starts when it joins (300 s), not before
        (n4,) = [ln for ln in dotted if ln.get_label() == "_size n4"]
        first = min(x for x, y in zip(n4.get_xdata(), n4.get_ydata()) if y == y)
        assert 270 <= first <= 330
    finally:
        plt.close(fig)


def test_table_defines_its_counts():
    res = simulate.run(SMALL, strategies=["round_robin"])
    text = simulate.format_table(res)
    assert "bounces: times a node at its limit x speed answered a call 503" in text
    assert "rejected: calls that got no node at all" in text
    assert "dropped: calls cut while up" in text

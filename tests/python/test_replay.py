"""Replays of recorded calls: the calls file, the acc and CDR converters,
and `approute simulate --replay` with two configs side by side (the acc
converter on lines a real Kamailio wrote: tests/e2e/test_replay_e2e.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

approute = pytest.importorskip("approute")

from approute import cli, replay  # noqa: E402

# Lines as Kamailio's acc module logs them to stderr (-E) with the example
# config's log_extra (the format of the lines tests/e2e sees): two answered
# calls (one with its BYE), one missed after a retried branch.
PREFIX = " 9(123) NOTICE: {1 1 INVITE c} acc [acc.c:287]: acc_log_request(): ACC: "
TAGS = "from_tag=f;to_tag=t"


def acc(kind: str, ts: int, method: str, cid: str, code: int, reason: str, extra: str) -> str:
    return "%s%s: timestamp=%d;method=%s;%s;call_id=%s;code=%d;reason=%s;%s" % (
        PREFIX, kind, ts, method, TAGS, cid, code, reason, extra)


ACC = "\n".join([
    acc("transaction answered", 1767225600, "INVITE", "c1", 200, "OK",
        "app=conference;key=room1;prefer=d1;node=ast1"),
    acc("transaction answered", 1767225630, "BYE", "c1", 200, "OK", "app=;key=;prefer=;node="),
    acc("call missed", 1767225601, "INVITE", "c2", 503, "Service Unavailable",
        "app=conference;key=room1;prefer=d2;node=ast1"),
    acc("call missed", 1767225602, "INVITE", "c2", 486, "Busy Here",
        "app=conference;key=room1;prefer=d2;node=ast2"),
    acc("transaction answered", 1767225605, "INVITE", "c3", 200, "OK",
        "app=conference;key=room2;prefer=;node=ast2"),
    " 9(125) INFO: something else entirely",
]) + "\n"

ROUTER = """\
nodes:
  - {id: ast1, uri: "sip:10.0.0.1:5060", pool: media, capacity: {conference: %d}}
  - {id: ast2, uri: "sip:10.0.0.2:5060", pool: media, capacity: {conference: %d}}
apps:
  conference:
    pool: media
    resource: conference
    strategy: least_loaded
    affinity: {grace: 60%s}
    retry: {codes: [503], max_attempts: 2}
"""


def test_acc_lines_become_calls() -> None:
    calls = replay.from_acc(ACC.splitlines())
    assert [c["call_id"] for c in calls] == ["c1", "c2", "c3"]
    c1, c2, c3 = calls
    assert c1 == {"start": 1767225600.0, "call_id": "c1", "app": "conference", "key": "room1",
                  "prefer": "d1", "duration": 30.0, "code": 200}
    assert c2["code"] == 486 and c2["duration"] == 0 and c2["start"] == 1767225601.0
    assert c3["prefer"] == "" and c3["duration"] == 0  # no BYE seen: 0
    with pytest.raises(replay.ReplayError, match="no app"):
        replay.from_acc([ACC.splitlines()[0].replace("app=conference;", "")])
    assert replay.from_acc([ACC.splitlines()[0].replace("app=conference;", "")], "fallback")[0]["app"] == \
        "fallback"


def test_calls_file_round_trip_and_errors(tmp_path: Path) -> None:
    calls = replay.from_acc(ACC.splitlines())
    path = tmp_path / "calls.csv"
    with open(path, "w") as f:
        assert replay.write_calls(calls, f) == 3
    assert path.read_text().splitlines()[0] == "start,call_id,app,key,prefer,duration,code"
    assert replay.load_calls(str(path)) == calls
    bad = tmp_path / "bad.csv"
    bad.write_text("start,call_id,app,key,prefer,duration,code\n2026-01-01T00:00:00Z,x,conference,,,-1,200\n")
    with pytest.raises(replay.ReplayError, match=r"bad.csv:2: duration '-1' must be >= 0"):
        replay.load_calls(str(bad))
    bad.write_text("when,who\n1,2\n")
    with pytest.raises(replay.ReplayError, match="header"):
        replay.load_calls(str(bad))
    assert replay.parse_start("2026-01-01T01:00:00+01:00", "x") == 1767225600.0


def test_cdr_csv_with_mapped_columns_and_dispositions(tmp_path: Path) -> None:
    cdr = tmp_path / "cdr.csv"
    cdr.write_text("calldate,uniqueid,dcontext,billsec,disposition,room\n"
                   "2026-01-01 00:00:10,u1,conference,60,ANSWERED,r1\n"
                   "2026-01-01 00:00:05,u2,conference,0,BUSY,r1\n")
    calls = replay.from_cdr_csv(str(cdr), {"start": "calldate", "call_id": "uniqueid", "app": "dcontext",
                                           "duration": "billsec", "code": "disposition", "key": "room"})
    assert [(c["call_id"], c["code"], c["key"], c["duration"]) for c in calls] == \
        [("u2", 486, "r1", 0.0), ("u1", 200, "r1", 60.0)]
    with pytest.raises(replay.ReplayError, match="unknown field"):
        replay.from_cdr_csv(str(cdr), {"when": "calldate"})
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["calls", "cdr", str(cdr), "--map", "start=calldate", "--map", "call_id=uniqueid",
                     "--map", "app=dcontext", "--map", "duration=billsec", "--map", "code=disposition"],
                    out, err) == 0, err.getvalue()
    assert out.getvalue().splitlines()[1] == "1767225605,u2,conference,,,0,486"


def test_replay_two_configs_side_by_side(tmp_path: Path) -> None:
    # Room r0 gets 3 participants at once on nodes of 2 seats: without
    # strict keys the third spills to the other node (a split room); with
    # strict keys it is refused. A missed call is placed, then abandoned.
    lines = ["start,call_id,app,key,prefer,duration,code"]
    for i in range(3):
        lines.append("%d,r0-%d,conference,r0,,100,200" % (1767225600 + i, i))
    lines.append("1767225610,m1,conference,r1,,0,487")
    lines.append("1767225620,k1,conference,,,10,200")
    calls_path = tmp_path / "calls.csv"
    calls_path.write_text("\n".join(lines) + "\n")
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(ROUTER % (2, 2, ""))
    new.write_text(ROUTER % (2, 2, ", strict: true"))
    out, err = io.StringIO(), io.StringIO()
    js = tmp_path / "out.json"
    rc = cli.main(["simulate", "--replay", str(calls_path), "--config", str(old), "--config", str(new),
                   "--json", str(js)], out, err)
    assert rc == 0, err.getvalue()
    text = out.getvalue()
    assert "replay of 5 calls (4 answered, 1 missed)" in text
    assert str(old) in text and str(new) in text
    result = json.loads(js.read_text())
    a, b = result["results"]
    assert a["calls"] == b["calls"] == 5
    assert a["missed"] == b["missed"] == 1
    assert a["split_rooms"] == 1 and a["rejected"] == 0
    assert b["split_rooms"] == 0 and b["rejected"] == 1 and b["refusals"] == {"key_full": 1}
    assert sum(a["placed"].values()) == 5 and sum(b["placed"].values()) == 4
    # load over time: the samples show r0's calls up for their 100 s
    assert max(max(s) for s in a["samples"]) == 2
    assert result["duration"] == pytest.approx(102)


def test_replay_bounces_above_a_limit_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    lines = ["start,call_id,app,key,prefer,duration,code"]
    lines += ["%d,c%d,conference,k%d,,30,200" % (1767225600 + i, i, i) for i in range(4)]
    calls_path = tmp_path / "calls.csv"
    calls_path.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "r.yaml"
    cfg.write_text(ROUTER % (10, 10, ""))
    png = tmp_path / "load.png"
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["simulate", "--replay", str(calls_path), "--config", str(cfg), "--limit", "ast1=1",
                     "--limit", "ast2=1", "--plot", str(png)], out, err) == 0, err.getvalue()
    assert png.stat().st_size > 1000
    text = out.getvalue()
    assert "retries (bounces)" in text
    # 2 seats in all: two calls bounce off both nodes and are refused
    r = replay.replay(replay.load_calls(str(calls_path)), [str(cfg)], {"ast1": 1, "ast2": 1})["results"][0]
    assert r["routed"] == 2 and r["rejected"] == 2 and r["bounces"] >= 2


def test_replay_usage_errors(tmp_path: Path) -> None:
    err = io.StringIO()
    assert cli.main(["simulate", "--replay", "x.csv"], io.StringIO(), err) == 1
    assert "--config" in err.getvalue()
    assert cli.main(["simulate", "--config", "a.yaml", "w.yaml"], io.StringIO(), io.StringIO()) == 2
    assert cli.main(["simulate"], io.StringIO(), io.StringIO()) == 2

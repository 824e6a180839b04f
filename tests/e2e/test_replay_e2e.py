"""Replay end to end: the example Kamailio config with -A WITH_ACC logs acc
lines (answered and missed INVITE transactions, BYEs) to its stderr log;
`approute calls acc` turns them into a calls file and `approute simulate
--replay` replays it, its counts matching the calls SIPp placed. The same
run checks log_decisions: json (one JSON object per decision, with the
short trace of explain)."""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any, List

from approute import cli, replay
from e2e_harness import Call


def test_acc_lines_of_a_real_kamailio_replay_to_the_same_counts(e2e: Any) -> None:
    e2e.add_node("ast1", "uas_200.xml")
    e2e.add_node("ast2", "uas_486.xml")  # busy: its calls are missed (486 is not a retry code)
    e2e.write_config(settings_extra="acc_avps: true\nlog_decisions: json\n")
    e2e.start_kamailio(defines=["WITH_ACC"])
    calls = [Call("d%d.example.com" % i, user="u%d" % i, hold_ms=400) for i in range(8)]
    results = e2e.run_calls(calls, rate=20, timeout=30)
    statuses = {r.call_id: r.status for r in results}
    answered = [c for c, s in statuses.items() if s == 200]
    assert answered and len(answered) < len(results), statuses  # some of each
    e2e.wait_idle()

    def acc_lines() -> List[str]:
        text = e2e.kamailio_log.read_text(errors="replace")
        return [ln for ln in text.splitlines() if re.search(r"ACC: (transaction answered|call missed):", ln)]
    # every answered call's BYE is accounted too
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum("method=BYE" in ln for ln in acc_lines()) < len(answered):
        time.sleep(0.2)
    lines = acc_lines()
    assert any("ACC: call missed" in ln for ln in lines), lines[:5]

    # the converter, through the command line, on the log as Kamailio wrote it
    calls_csv = e2e.dir / "calls.csv"
    err = io.StringIO()
    assert cli.main(["calls", "acc", str(e2e.kamailio_log), "-o", str(calls_csv)], io.StringIO(), err) == 0, \
        err.getvalue()
    got = replay.load_calls(str(calls_csv))
    assert {c["call_id"]: c["code"] for c in got} == statuses
    for c in got:
        assert c["app"] == "conference"
        assert re.fullmatch(r"d\d\.example\.com", c["key"]), c  # the key: the caller's domain
        if c["code"] == 200:
            assert 0 <= c["duration"] <= 5, c  # held 400 ms (acc timestamps are whole seconds)

    out, err = io.StringIO(), io.StringIO()
    js = e2e.dir / "replay.json"
    assert cli.main(["simulate", "--replay", str(calls_csv), "--config", str(e2e.router_yaml), "--json",
                     str(js)], out, err) == 0, err.getvalue()
    r = json.loads(js.read_text())["results"][0]
    assert r["calls"] == len(results)
    assert r["missed"] == len(results) - len(answered)
    assert r["routed"] + r["rejected"] == len(results)
    assert "replay of %d calls (%d answered" % (len(results), len(answered)) in out.getvalue()

    # log_decisions: json: one object per routed call, with its short trace
    recs = []
    for ln in e2e.kamailio_log.read_text(errors="replace").splitlines():
        m = re.search(r"approute: (\{.*\})\s*$", ln)
        if m:
            recs.append(json.loads(m.group(1)))
    routes = {rec["call_id"]: rec for rec in recs if rec["event"] == "route"}
    assert set(routes) == set(statuses), (sorted(routes), sorted(statuses))
    for rec in routes.values():
        assert rec["ok"] and rec["node"] in ("ast1", "ast2")
        assert rec["trace"]["app"] == "conference" and rec["trace"]["picks"][-1] == [rec["node"], "taken"]

"""The demo's honest clock and its account of room moves, without Kamailio
(the demo itself runs in tests/e2e/test_kamailio_e2e.py)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import pytest

demo = pytest.importorskip("approute.demo")
demo_explain = pytest.importorskip("approute.demo_explain")


@pytest.mark.parametrize("duration", [6, 20, 60])
def test_every_call_is_placed_and_ended_within_the_duration(duration: int) -> None:
    plan = demo.demo_plan(duration, 0.6, 8, 4000, 10000, seed=7)
    assert plan
    assert all(0 <= t < duration for t, _, _, _ in plan)
    assert all(t + hold / 1000.0 <= duration + 0.001 for t, _, _, hold in plan), \
        max(t + hold / 1000.0 for t, _, _, hold in plan)


def test_calls_are_spread_over_the_run() -> None:
    plan = demo.demo_plan(20, 0.6, 8, 4000, 10000, seed=7)
    quarters = demo.per_window([t for t, _, _, _ in plan], 20)
    assert sum(quarters) == len(plan)
    assert all(q > 0 for q in quarters), quarters
    assert max(quarters) < 0.5 * len(plan), quarters
    # the default rate: about 0.6 rooms a second while rooms may open (1 s to 16 s)
    rooms = {room for _, room, _, _ in plan} - {1001}
    assert 4 <= len(rooms) <= 20, len(rooms)


def test_per_window_counts_late_times_in_the_last() -> None:
    assert demo.per_window([0.1, 4.9, 5.0, 19.9, 25.0], 20) == [2, 1, 0, 2]


def _steps(*rows: Sequence[str]) -> List[Tuple[str, ...]]:
    return [tuple(r) for r in rows]


def test_a_503_release_is_a_move_with_its_cause() -> None:
    node_of = {"c1": "ast3", "c2": "ast1", "c3": "ast1"}
    by_call = {"c1": _steps(("route", "strategy", "ast3", "", "", "")),
               "c2": _steps(("route", "affinity", "ast3", "", "", ""),
                            ("retry", "strategy", "ast1", "", "503", "ast3")),
               "c3": _steps(("route", "affinity", "ast1", "", "", ""))}
    # c1 on ast3 has left when c2 comes (only then may a strict room move)
    moves, split = demo_explain.room_moves([(0.0, 1.0, "c1"), (2.0, 5.0, "c2"), (3.0, 5.0, "c3")],
                                   node_of, by_call, None)
    assert not split
    assert [(m[1], m[2], m[4]) for m in moves] == [("ast3", "ast1", "released by 503")]


def test_drain_and_reopen_and_split_are_told_apart() -> None:
    by_call = {"a": _steps(("route", "strategy", "ast2", "", "", "")),
               "b": _steps(("route", "strategy", "ast1", "", "", ""))}
    node_of = {"a": "ast2", "b": "ast1"}
    moves, split = demo_explain.room_moves([(0.0, 1.0, "a"), (3.0, 4.0, "b")], node_of, by_call,
                                   ("ast2", 2.0, 5.0))
    assert not split and moves[0][4] == "moved by the drain"
    moves, _ = demo_explain.room_moves([(0.0, 1.0, "a"), (3.0, 4.0, "b")], node_of, by_call, None)
    assert moves[0][4] == "reopened"
    # overlapping participants on two nodes: a split, not a move
    moves, split = demo_explain.room_moves([(0.0, 5.0, "a"), (3.0, 4.0, "b")], node_of, by_call, None)
    assert split and moves == []


def test_bounded_move() -> None:
    node_of = {"a": "ast1", "b": "ast2"}
    by_call = {"b": _steps(("route", "affinity_bound", "ast2", "", "", ""))}
    moves, split = demo_explain.room_moves([(0.0, 5.0, "a"), (1.0, 5.0, "b")], node_of, by_call, None)
    # a bounded key moves while its earlier calls still run: that is the bound's job, not a split
    assert not split and moves[0][4] == "bounded"


def test_decision_lines_of_kamailios_log_become_steps() -> None:
    ok = (" 4(1234) INFO: <core> [x]: approute: retry app=conference call_id=c2 node=ast1 "
          "reason=strategy attempt=2 code=503 from=ast3")
    got = demo_explain.parse_decision(ok)
    assert got is not None
    worker, fields, step = got
    assert worker == "1234" and fields["call_id"] == "c2"
    assert step == ("retry", "strategy", "ast1", "", "503", "ast3")
    refused = (" 5(77) INFO: approute: route app=conference call_id=c9 node=- reason=key_full "
               "detail=ast1 has 8 of 8 conference key=1001")
    got = demo_explain.parse_decision(refused)
    assert got is not None and got[2] == ("route", "key_full", "-", "ast1 has 8 of 8 conference", "", "")
    assert demo_explain.parse_decision(" 5(77) INFO: approute: mod_init done") is None
    assert demo_explain.parse_decision("route app=a call_id=x node=n1 reason=strategy") is None


def test_a_participants_words_name_the_bounce_and_the_refusal() -> None:
    words = demo_explain.participant_words(_steps(
        ("route", "affinity", "ast3", "", "", ""), ("retry", "strategy", "ast1", "", "503", "ast3")))
    assert words == ["joined its room's node (ast3)", "ast3 answered 503",
                     "opened the room on the least loaded node (ast1)"]
    words = demo_explain.participant_words(_steps(("route", "key_full", "-", "ast1 is full", "", "")))
    assert words == ["refused (486 Busy Here): its room's node was full", "router: ast1 is full"]
    assert demo_explain.participant_words([]) == []


def test_the_moves_report_counts_causes_and_names_rooms_reopened_after_a_503() -> None:
    lines = demo_explain.moves_report(
        [("1002", "c2", "ast3", "ast1", 2.0, "released by 503", "w1"),
         ("1004", "c7", "ast2", "ast1", 9.5, "reopened", "w2"),
         ("1005", "c9", "ast2", "ast3", 11.0, "reopened", "w3")], ["1003"])
    assert lines[0].endswith(": 3 (released by 503 1, reopened 2)")
    assert lines[1] == "  room 1002 at 2.0s, ast3 -> ast1: released by 503: w1"
    assert lines[-1].startswith("rooms opened on another node after") and ": 1003 (the bounce" in lines[-1]
    assert demo_explain.moves_report([], [])[0].startswith("room moves: none")
    by_call = {"a": _steps(("route", "affinity", "ast3", "", "", ""),
                           ("retry", "strategy", "ast1", "", "503", "ast3"))}
    assert demo_explain.opened_after_503([(3.0, 4.0, "b"), (1.0, 5.0, "a")], by_call)
    assert not demo_explain.opened_after_503([(0.5, 4.0, "b"), (1.0, 5.0, "a")], by_call)
    assert not demo_explain.opened_after_503([], by_call)

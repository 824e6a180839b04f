"""The demo's account of its rooms (``approute.demo``'s summary): why each
participant went where it went, and why a room's participants ended up on
another node than its earlier ones.

The decisions come from Kamailio's log (``log_decisions: true``), one step
per decision: (what, reason, node, detail, code, bounced), what being
``route`` or ``retry``, code the answer that made the router retry and
bounced the node that gave it.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

Step = Tuple[str, ...]  # what, reason, node, detail, code, bounced
Move = Tuple[str, str, str, float, str, str]  # call-id, from, to, start s, cause, words
RoomMove = Tuple[str, str, str, str, float, str, str]  # room, then a Move

_DECISION_RE = re.compile(r"^\s*\d+\((\d+)\).*approute: ((?:route|retry) .*)$")
_DETAIL_RE = re.compile(r" detail=(.*?)(?: key=\S*)?(?: prefer=\S*)?(?: code=\S*)?(?: from=\S*)?$")

#: what each decision reason means for a participant (the summary's words)
WHY = {
    "strategy": "opened the room on the least loaded node",
    "prefer": "opened the room beside its domain's other rooms",
    "preference": "opened the room beside its domain's other rooms",
    "affinity": "joined its room's node",
    "session": "a retransmission of a routed call",
    "retry": "placed again after a node refused it",
    "key_full": "refused (486 Busy Here): its room's node was full",
    "key_down": "refused (480): its room's node was down",
    "key_draining": "refused (480): its room's node was draining past its deadline",
    "key_disabled": "refused (480): its room's node was disabled",
    "key_tried": "refused (480): its room's node had already refused this call",
    "no_node": "refused (503): no node could open a new room (all full or past their headroom)",
}


def parse_decision(line: str) -> Optional[Tuple[str, Dict[str, str], Step]]:
    """One line of Kamailio's log: (worker, its key=value fields, its step)
    when it is a decision the handler logged, else None."""
    m = _DECISION_RE.match(line)
    if not m:
        return None
    text = m.group(2)
    fields = dict(kv.split("=", 1) for kv in text.split()[1:] if "=" in kv)
    d = _DETAIL_RE.search(text)
    step = (text.split()[0], fields.get("reason", "?"), fields.get("node", "-"), d.group(1) if d else "",
            fields.get("code", ""), fields.get("from", ""))
    return m.group(1), fields, step


Drain = Tuple[str, float, float]  # node, seconds draining from, until


def why_moved(prev: str, node: str, steps: Sequence[Step], start: float,
              room_was_empty: bool, drain: Optional[Drain]) -> Tuple[str, str]:
    """(cause, words) for a room whose participant landed on ``node`` while the
    participant before was on ``prev``: released by a 503, bounded, moved by
    the drain, reopened after the room emptied, or unexplained."""
    for what, _reason, _node, _detail, code, bounced in steps:
        if what == "retry" and code == "503" and bounced in (prev, ""):
            return ("released by 503", "%s answered 503 (full): the router released %s's claim on the "
                    "room and placed the call on %s" % (prev, prev, node))
    if any(reason == "affinity_bound" for _w, reason, *_ in steps):
        return ("bounded", "%s was over affinity.bound, so the room went to %s" % (prev, node))
    if drain and drain[0] == prev and drain[1] <= start and (start <= drain[2] or drain[2] < 0):
        return ("moved by the drain", "%s was draining and the room had no live participant, so its "
                "claim went at once and the room opened again on %s" % (prev, node))
    if room_was_empty:
        return ("reopened", "every participant had left and %s could not take a new one (full or past "
                "its headroom), so the room opened again on %s" % (prev, node))
    return ("unexplained", "%s -> %s with participants still on %s" % (prev, node, prev))


def room_moves(calls: Sequence[Tuple[float, float, str]], node_of: Dict[str, str],
               by_call: Dict[str, List[Step]], drain: Optional[Drain]
               ) -> Tuple[List[Move], bool]:
    """One room's answered participants as (start s, end s, call-id): the
    moves, (call-id, from, to, start, cause, words) each, and whether the
    room was split (two nodes held live participants of it at once)."""
    moves: List[Move] = []
    split = False
    live: List[Tuple[float, str]] = []  # (end, node) of participants still in the room
    prev: Optional[str] = None
    for start, end, cid in sorted(calls):
        node = node_of.get(cid)
        if node is None:
            continue
        live = [(e, n) for e, n in live if e > start]
        if prev is not None and node != prev:
            bounded = any(st[1] == "affinity_bound" for st in by_call.get(cid, []))
            if any(n != node for _, n in live) and not bounded:  # the bound spills a live key by design
                split = True
            else:
                cause, words = why_moved(prev, node, by_call.get(cid, []), start, not live, drain)
                moves.append((cid, prev, node, start, cause, words))
        live.append((end, node))
        prev = node
    return moves, split


def opened_after_503(calls: Sequence[Tuple[float, float, str]], by_call: Dict[str, List[Step]]) -> bool:
    """Whether a room's first answered participant (of ``calls``, as for
    room_moves) got there after another node answered it 503."""
    if not calls:
        return False
    first = min(calls)[2]
    return any(st[0] == "retry" and st[4] == "503" for st in by_call.get(first, []))


def participant_words(steps: Sequence[Step]) -> List[str]:
    """What happened to one participant, decision by decision, in the
    summary's words (empty when Kamailio logged no decision for it)."""
    words = []
    for what, reason, node, detail, code, bounced in steps:
        if what == "retry" and code:
            words.append("%s answered %s" % (bounced or "the node", code))
        w = WHY.get(reason, reason)
        words.append(w + (" (%s)" % node if node != "-" and reason not in ("key_full",) else ""))
        if detail and reason.startswith(("key_", "no_node")):
            words.append("router: " + detail)
    return words


def moves_report(moves: Sequence[RoomMove], reopened_after_503: Sequence[str]) -> List[str]:
    """The summary's lines on room moves: ``moves`` as (room,) + a room_moves
    move each, and the rooms whose first participant a 503 sent elsewhere."""
    out = []
    if moves:
        causes = Counter(m[5] for m in moves)
        by_cause = ", ".join("%s %d" % kv for kv in sorted(causes.items()))
        out.append("room moves (a participant on another node than the room's earlier ones, never at "
                   "the same time): %d (%s)" % (len(moves), by_cause))
        for room, _cid, prev, node, start, cause, why in moves:
            out.append("  room %s at %.1fs, %s -> %s: %s: %s" % (room, start, prev, node, cause, why))
    else:
        out.append("room moves: none (a strict room stays on its node while it has participants; a "
                   "503 releases a room only when the bounced call is its only one, the drain moves "
                   "no live room)")
    if reopened_after_503:
        out.append("rooms opened on another node after their first call's node answered 503: %s (the "
                   "bounce released that node's claim; nobody was in the room yet, so nothing moved)"
                   % ", ".join(reopened_after_503))
    return out

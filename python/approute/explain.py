"""``approute explain``: why a call would go where it would go now.

    approute explain --shared NAME --app A [--key K] [--prefer P] [--exclude N ...] [--json]
    approute explain CALL-ID --shared NAME [--json]   # a live session, placed as it would be now

Both print the trace of ``Router.explain()`` (a dry run that changes nothing):
the policy used, one row per node of the pool (its state, health and count,
and why it would not take the call), the affinity lookup, the candidates the
strategy compared and its picks, then the decision route() would make now.
The printer knows no reason by name: a node's ``exclusion`` and ``detail``
come from the core, so a new reason needs no change here.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Mapping, Optional, TextIO

from .cli_util import EXIT_OK, _shared, _Usage, format_table

Trace = Mapping[str, Any]


def _count(sessions: int, capacity: Optional[int]) -> str:
    return "%d/%s" % (sessions, "-" if capacity is None else capacity)


def node_rows(trace: Trace) -> List[List[str]]:
    """One row per pool node: id, state, health, count, candidate, why not."""
    rows = []
    for n in trace["nodes"]:
        rows.append([n["id"], n["state"], n["health"], _count(n["sessions"], n["capacity"]),
                     "yes" if n["candidate"] else "no", n["exclusion"] or "-", n["detail"]])
    return rows


NODE_HEADERS = ["NODE", "STATE", "HEALTH", "COUNT", "CANDIDATE", "EXCLUSION", "WHY"]


def decision_line(trace: Trace) -> str:
    d = trace["decision"]
    if d["ok"]:
        return "decision: %s (%s), reason %s" % (d["node_id"], d["uri"], d["reason"])
    return "decision: refused, reason %s: %s" % (d["reason"], d["detail"])


def explain_text(trace: Trace) -> str:
    """The trace as the table and lines ``approute explain`` prints."""
    head = 'app "%s": pool %s, resource %s, strategy %s' % (
        trace["app"], trace["pool"], trace["resource"], trace["strategy"])
    if trace["key"]:
        head += ", key %r" % trace["key"]
    if trace["prefer"]:
        head += ", prefer %r" % trace["prefer"]
    if trace["call_id"]:
        head += ", session %r" % trace["call_id"]
    out = [head, format_table(node_rows(trace), NODE_HEADERS), ""]
    out.extend("- " + s for s in trace["steps"])
    if trace["compared"]:
        out.append("compared: " + ", ".join(
            "%s %s w%d p%d" % (c["id"], _count(c["sessions"], c["capacity"]), c["weight"], c["priority"])
            for c in trace["compared"]))
    if trace["picks"]:
        out.append("picks: " + ", ".join("%s %s" % (p["node"], p["outcome"]) for p in trace["picks"]))
    out.append(decision_line(trace))
    return "\n".join(out)


def short_trace(trace: Trace) -> Dict[str, Any]:
    """What a decision log line carries of a trace: the policy, the nodes
    passed over and why, the affinity outcome, the picks."""
    return {
        "app": trace["app"],
        "strategy": trace["strategy"],
        "excluded": {n["id"]: n["exclusion"] for n in trace["nodes"] if n["exclusion"]},
        "affinity": trace["affinity"]["outcome"],
        "picks": [[p["node"], p["outcome"]] for p in trace["picks"]],
    }


# --------------------------------------------------------------------------
# the command

def add_arguments(sub: Any, shared_opt: Any) -> None:
    sp = sub.add_parser(
        "explain", help="why a call would go where it would go now (a dry run)",
        description="Runs the routing flow for a call as a dry run (nothing is reserved, "
        "claimed or counted) and prints each node of the app's pool with why it would or would "
        "not take the call, the affinity lookup, the strategy's picks and the decision. With "
        "CALL-ID: the live session's placement as it would be made now.")
    sp.add_argument("call_id", metavar="CALL-ID", nargs="?", help="a live session to explain")
    shared_opt(sp)
    sp.add_argument("--app", metavar="APP", help="the call's app")
    sp.add_argument("--key", metavar="K", help="the call's affinity key")
    sp.add_argument("--prefer", metavar="P", help="the call's preference (a new key's)")
    sp.add_argument("--exclude", metavar="NODE", action="append", default=[],
                    help="a node the call must not go to (repeatable)")
    sp.add_argument("--attr", metavar="NAME=VALUE", action="append", default=[],
                    help="a request attribute for the strategy (repeatable)")
    sp.add_argument("--json", action="store_true", help="the whole trace as JSON")


def run(args: argparse.Namespace, router: Any, out: TextIO) -> int:
    if args.call_id is not None:
        if args.app or args.key or args.prefer or args.exclude or args.attr:
            raise _Usage("give either CALL-ID or --app/--key/--prefer/--exclude/--attr, not both")
        trace = router.explain(call_id=args.call_id)
    else:
        if not args.app:
            raise _Usage("--app APP is required (or give a CALL-ID)")
        attrs = {}
        for a in args.attr:
            name, sep, value = a.partition("=")
            if not sep or not name:
                raise _Usage("--attr takes NAME=VALUE, not %r" % a)
            attrs[name] = value
        trace = router.explain(args.app, key=args.key, prefer=args.prefer, exclude=args.exclude,
                               attrs=attrs)
    if args.json:
        json.dump(trace, out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        out.write(explain_text(trace) + "\n")
    return EXIT_OK


def run_command(args: argparse.Namespace, out: TextIO) -> int:
    from . import cli_util
    router = cli_util.attach(_shared(args))
    return run(args, router, out)

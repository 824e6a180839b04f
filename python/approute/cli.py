"""``approute`` command line: inspect and steer a running router.

    approute status   --shared NAME [--json] [--top K]   # nodes, counts, the busiest keys
    approute drain    NODE --shared NAME [--deadline S] [--wait]   # no new keys; progress
    approute enable   NODE --shared NAME     # back to active
    approute disable  NODE --shared NAME     # takes nothing new
    approute validate CONFIG [--strict]      # exit 0 if the YAML config is valid (warnings shown)
    approute reload   CONFIG --shared NAME   # validate, then apply to the running router
    approute keys     --shared NAME [--app A] [--node N] [--limit K] [--json]   # affinity keys
    approute add-node ID URI --shared NAME [--pool P] [--weight W] [--capacity RES=N ...]
    approute remove-node ID --shared NAME
    approute unlink   NAME                   # remove a shared segment's name
    approute metrics  --shared NAME [--textfile PATH | --listen ADDR:PORT]   # Prometheus; status page at /
    approute simulate WORKLOAD [--plot PNG] [--json OUT]   # compare strategies offline
    approute agent    --config agent.yaml    # node agent: signed status PUBLISH
    approute sessions --shared NAME [--node N] [--app A] [--limit N] [--json]
    approute end      CALL-ID --shared NAME  # end one session by hand
    approute end      --shared NAME [--node N] [--app A] [--older-than S] [--yes]   # many
    approute explain  --shared NAME --app A [--key K] [--prefer P] [--json]   # why a call goes where
    approute explain  CALL-ID --shared NAME  # a live session's placement, as it would be made now
    approute simulate --replay CALLS --config router.yaml [--config new.yaml]   # rehearse on real traffic
    approute calls    {acc|cdr} INPUT [-o CALLS]   # a calls file from Kamailio acc lines or CDRs

``--shared`` defaults to the environment variable APPROUTE_SHARED.
Exit codes: 0 success, 1 error (message on stderr), 2 usage error. A reader
that closes the pipe early (``approute status | head -1``) ends the command
quietly with 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, TextIO

from . import cli_util
from .cli_commands import (
    _OPERATOR_COMMANDS,
    _version,
    add_operator_commands,
    add_session_commands,
    keys_table,
    run_session_command,
    top_keys,
    validate,
)
from .cli_util import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    _as_dict,
    _fmt_counts,
    _seconds,
    _shared,
    _Usage,
    format_table,
    node_to_dict,
)

# Prometheus text format: approute.metrics (kept importable from here)
from .metrics import metrics_text

__all__ = [
    "EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "build_parser", "cluster_text", "drain",
    "drain_left", "format_table", "main", "metrics_text", "node_to_dict", "status_text", "validate",
]

_STATE_COMMANDS = {"drain": "draining", "enable": "active", "disable": "disabled"}
#: How many affinity keys text `status` shows (those with the most live sessions).
TOP_KEYS = 10
#: Above this many affinities `status` lists no keys unless --top is given:
#: finding the busiest reads every key (about 2 s per 150,000 on a busy host).
TOP_KEYS_SCAN_LIMIT = 100_000


# --------------------------------------------------------------------------
# status

def cluster_text(cluster: Dict[str, Any]) -> str:
    """One line on the cluster placement; "" without `cluster:`."""
    if not cluster or cluster.get("mode", "local") == "local":
        return ""
    line = ("cluster: %s   deployment: %s   proxy: %s   proxies: %s   degraded placements: %s   "
            "outage refusals: %s   redis rtt p50/p99: %s/%s us" % (
                cluster.get("mode"), cluster.get("name"), cluster.get("proxy"),
                ",".join(cluster.get("proxies") or []) or "?", cluster.get("degraded_placements", 0),
                cluster.get("outage_refusals", 0),
                cluster.get("rtt_p50_us", 0), cluster.get("rtt_p99_us", 0)))
    if cluster.get("primary"):
        line += "   primary: %s" % cluster["primary"]
    if cluster.get("warning"):
        line += "\nWARNING: %s" % cluster["warning"]
    return line


def _health_text(n: Dict[str, Any]) -> str:
    """The HEALTH cell: ``down (reported)`` while the node's own report says
    its service does not answer (its agent cannot reach Asterisk)."""
    health = str(n.get("health", ""))
    return health + " (reported)" if n.get("reported_down") else health


def status_text(stats: Dict[str, Any], nodes: Iterable[Dict[str, Any]],
                keys: Optional[List[Dict[str, Any]]] = None) -> str:
    rows = []
    for n in nodes:
        rows.append([
            str(n.get("id", "")), str(n.get("pool", "")), str(n.get("state", "")),
            _health_text(n), str(n.get("weight", "")),
            _fmt_counts(n.get("sessions", {})), _fmt_counts(n.get("capacity", {})),
            _fmt_counts(n.get("load", {})), str(n.get("uri", "")),
        ])
    head = "sessions: %s   affinities: %s   nodes: %s" % (
        stats.get("sessions", "?"), stats.get("affinities", "?"), stats.get("nodes", "?"))
    table = format_table(rows, ["NODE", "POOL", "STATE", "HEALTH", "WEIGHT",
                                "SESSIONS", "CAPACITY", "LOAD", "URI"])
    head += _rooms_text(stats)
    if not keys:
        return head + "\n\n" + table
    shown = len(keys)
    total = stats.get("affinities")
    if isinstance(total, int) and total > shown:
        title = "top %d of %d keys by sessions (approute keys lists them all):" % (shown, total)
    else:
        title = "keys by sessions:"
    return "%s\n\n%s\n\n%s\n%s" % (head, table, title, keys_table(keys))


def _rooms_text(stats: Dict[str, Any]) -> str:
    """Strict keys refused and new keys turned away by headroom, per app (nothing when none)."""
    lines = []
    for app, by_reason in sorted((stats.get("key_refusals") or {}).items()):
        counts = {r: n for r, n in by_reason.items() if n}
        if counts:
            lines.append("key refusals (%s): %s" % (app, _fmt_counts(counts)))
    for app, n in sorted((stats.get("headroom_refusals") or {}).items()):
        if n:
            lines.append("headroom refusals (%s): %d" % (app, n))
    return "".join("\n" + line for line in lines)



# --------------------------------------------------------------------------
# main

def drain_left(router: Any, node: str) -> Optional[Dict[str, int]]:
    """Sessions and live keys still on `node`; None once the node is gone."""
    try:
        router.node(node)
    except LookupError:
        return None
    sessions = len(router.sessions(node=node))
    keys = sum(1 for a in router.affinities(node=node) if a.sessions > 0)
    return {"sessions": sessions, "keys": keys}


def drain(router: Any, node: str, deadline: Optional[float], wait: bool, interval: float,
          out: TextIO, sleep: Optional[Callable[[float], None]] = None,
          clock: Optional[Callable[[], float]] = None) -> int:
    """``approute drain``: drains `node`, then shows what is left (until empty with `wait`).

    With `wait` and a `deadline`, a node still not empty when the deadline has
    passed is an error (1): what is left is printed, and the sessions keep
    their node until their calls end (``approute end --node`` ends them).
    """
    import time
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    router.drain(node, deadline=deadline)
    start = clock()
    out.write("%s: draining%s\n" % (node, "" if deadline is None else ", deadline %gs" % deadline))
    last = None
    while True:
        left = drain_left(router, node)
        if left is None or (left["sessions"] == 0 and left["keys"] == 0):
            out.write("%s: empty after %.1fs%s\n" % (node, clock() - start, "" if left else " (removed)"))
            return EXIT_OK
        if left != last:
            out.write("%s: %d session(s), %d key(s) left after %.1fs\n"
                      % (node, left["sessions"], left["keys"], clock() - start))
            out.flush()
            last = left
        if not wait:
            return EXIT_OK
        if deadline is not None and clock() - start >= deadline:
            out.write("%s: deadline of %gs passed with %d session(s), %d key(s) left; its keys' new "
                      "calls go elsewhere, its sessions stay until their calls end (or: approute "
                      "end --node %s)\n" % (node, deadline, left["sessions"], left["keys"], node))
            return EXIT_ERROR
        sleep(interval if deadline is None else max(0.0, min(interval, deadline - (clock() - start))))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="approute", description="Inspect and steer an approute router.")
    p.add_argument("--version", action="version", version="approute %s" % _version())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def shared_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--shared", metavar="NAME",
                        help="shared state segment name (default: $APPROUTE_SHARED)")

    sp = sub.add_parser("status", help="nodes, sessions and affinities of a running router")
    shared_opt(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--top", type=int, default=None, metavar="K",
                    help="show the K affinity keys with the most sessions (default %d, none "
                    "above %d affinities; 0: none)" % (TOP_KEYS, TOP_KEYS_SCAN_LIMIT))
    for cmd, state in _STATE_COMMANDS.items():
        sp = sub.add_parser(cmd, help="set a node's admin state to %s" % state)
        sp.add_argument("node", metavar="NODE")
        shared_opt(sp)
        if cmd == "drain":
            sp.description = ("Drains a node: it takes no new keys; a key whose last session on it "
                              "ends is released at once. Shows the sessions and keys left.")
            sp.add_argument("--deadline", type=_seconds, metavar="S",
                            help="after S seconds the keys it still holds go elsewhere, so it "
                                 "empties within S plus its longest call (default: never)")
            sp.add_argument("--wait", action="store_true",
                            help="show progress until the node holds no session and no key")
            sp.add_argument("--interval", type=_seconds, default=1.0, metavar="S",
                            help="seconds between progress lines with --wait (default 1)")
    sp = sub.add_parser("validate", help="check a router YAML configuration")
    sp.add_argument("config", metavar="CONFIG")
    sp.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    add_operator_commands(sub, shared_opt)
    sp = sub.add_parser("simulate", help="replay a workload through the router, comparing strategies")
    from . import simulate as _simulate
    _simulate.add_arguments(sp)
    from . import agent
    sp = sub.add_parser("agent", help="node agent: report this server's status to the proxy",
                        description="Sends signed PUBLISH status reports (event "
                        "approute-status) to the proxy; see docs/status-package.md.")
    agent.add_arguments(sp)
    add_session_commands(sub, shared_opt)
    from . import explain as _explain
    _explain.add_arguments(sub, shared_opt)
    from . import replay as _replay
    _replay.add_calls_command(sub)
    return p


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None,
         err: Optional[TextIO] = None) -> int:
    """The ``approute`` command; returns the exit code."""
    stream = out or sys.stdout
    try:
        rc = _main(argv, stream, err or sys.stderr)
        stream.flush()  # a closed pipe shows here, not in the interpreter's exit
        return rc
    except BrokenPipeError:
        _quiet_stdout(stream)
        return EXIT_OK


def _quiet_stdout(stream: TextIO) -> None:
    """The reader went away (``| head``): nothing more to say, and nothing at exit either."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _main(argv: Optional[Sequence[str]], out: TextIO, err: TextIO) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # argparse: --help is 0, usage errors are 2
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    if args.command == "agent":
        from . import agent
        return agent.run_from_args(args, out, err)
    try:
        import approute
    except ImportError as e:
        err.write("approute: error: cannot import approute: %s\n" % e)
        return EXIT_ERROR
    try:
        if args.command == "validate":
            return validate(args.config, out, err, strict=args.strict)
        if args.command in _OPERATOR_COMMANDS:
            return _OPERATOR_COMMANDS[args.command](args, out, err)
        if args.command == "simulate":
            from . import simulate as _simulate
            return _simulate.run_command(args, out, err)
        if args.command == "calls":
            from . import replay as _replay
            return _replay.run_calls_command(args, out, err)
        if args.command == "explain":
            from . import explain as _explain
            return _explain.run_command(args, out)
        name = _shared(args)
        router = cli_util.attach(name)
        if args.command == "status":
            stats = _as_dict(router.stats())
            nodes = [node_to_dict(n) for n in router.nodes()]
            cluster = _as_dict(router.cluster()) if hasattr(router, "cluster") else {}
            top = args.top
            if top is None:
                total = stats.get("affinities")
                top = 0 if isinstance(total, int) and total > TOP_KEYS_SCAN_LIMIT else TOP_KEYS
            if top < 0:
                raise _Usage("--top must be at least 0, not %d" % top)
            keys = top_keys(router, top)
            if args.json:
                json.dump({"shared": name, "stats": stats, "nodes": nodes, "cluster": cluster,
                           "top_keys": keys}, out, indent=2, sort_keys=True)
                out.write("\n")
            else:
                line = cluster_text(cluster)
                out.write((line + "\n" if line else "") + status_text(stats, nodes, keys) + "\n")
            return EXIT_OK
        if args.command == "drain":
            return drain(router, args.node, args.deadline, args.wait, args.interval, out)
        if args.command in _STATE_COMMANDS:
            state = _STATE_COMMANDS[args.command]
            router.set_state(args.node, state)
            out.write("%s: %s\n" % (args.node, state))
            return EXIT_OK
        if args.command in ("sessions", "end"):
            return run_session_command(args, router, name, out, err)
    except _Usage as e:
        err.write("approute: error: %s\n" % e)
        return EXIT_USAGE
    except approute.Error as e:
        err.write("approute %s: error: %s: %s\n" % (args.command, type(e).__name__, e))
        return EXIT_ERROR
    except BrokenPipeError:
        raise  # the reader went away: main() ends quietly
    except OSError as e:
        err.write("approute %s: error: %s\n" % (args.command, e))
        return EXIT_ERROR
    err.write("approute: error: unknown command %r\n" % args.command)  # pragma: no cover
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

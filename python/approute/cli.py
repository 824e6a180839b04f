"""``approute`` command line: inspect and steer a running router.

    approute status   --shared NAME [--json]
    approute drain    NODE --shared NAME     # keep sessions/affinities, no new keys
    approute enable   NODE --shared NAME     # back to active
    approute disable  NODE --shared NAME     # takes nothing new
    approute validate CONFIG                 # exit 0 if the YAML config is valid
    approute metrics  --shared NAME          # Prometheus text exposition
    approute simulate WORKLOAD [--plot PNG] [--json OUT]   # compare strategies offline
    approute agent    --config agent.yaml    # node agent: signed status PUBLISH
    approute sessions --shared NAME [--node N] [--app A] [--limit N] [--json]
    approute end      CALL-ID --shared NAME  # end one session by hand

``--shared`` defaults to the environment variable APPROUTE_SHARED.
Exit codes: 0 success, 1 error (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, TextIO

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

_STATE_COMMANDS = {"drain": "draining", "enable": "active", "disable": "disabled"}


# --------------------------------------------------------------------------
# helpers

def _as_dict(value: Any) -> Dict[str, Any]:
    if value is None:
        return {}
    try:
        return dict(value)
    except (TypeError, ValueError):
        return {}


def node_to_dict(n: Any) -> Dict[str, Any]:
    """A NodeStatus as plain JSON-able data."""
    out: Dict[str, Any] = {}
    for field in ("id", "uri", "pool", "weight", "priority", "state", "health", "routed_total",
                  # status reports and health feedback (docs/status-package.md)
                  "origin", "lease_expires", "ejected_until", "latency_ewma_ms", "error_rate"):
        if hasattr(n, field):
            v = getattr(n, field)
            out[field] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    for field in ("sessions", "capacity", "load", "attrs", "quality"):
        if hasattr(n, field):
            out[field] = _as_dict(getattr(n, field))
    return out


def _attach(name: str):
    import approute
    return approute.Router.attach(name)


def _shared(args: argparse.Namespace) -> str:
    name = args.shared or os.environ.get("APPROUTE_SHARED")
    if not name:
        raise _Usage("--shared NAME is required (or set APPROUTE_SHARED)")
    return name


class _Usage(Exception):
    pass


def _fmt_counts(d: Dict[str, Any]) -> str:
    if not d:
        return "-"
    return ",".join("%s=%s" % (k, _num(v)) for k, v in sorted(d.items()))


def _num(v: Any) -> str:
    if isinstance(v, float):
        return ("%.3f" % v).rstrip("0").rstrip(".")
    return str(v)


def format_table(rows: List[List[str]], headers: List[str]) -> str:
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    line = lambda cells: "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def status_text(stats: Dict[str, Any], nodes: Iterable[Dict[str, Any]]) -> str:
    rows = []
    for n in nodes:
        rows.append([
            str(n.get("id", "")), str(n.get("pool", "")), str(n.get("state", "")),
            str(n.get("health", "")), str(n.get("weight", "")),
            _fmt_counts(n.get("sessions", {})), _fmt_counts(n.get("capacity", {})),
            _fmt_counts(n.get("load", {})), str(n.get("uri", "")),
        ])
    head = "sessions: %s   affinities: %s   nodes: %s" % (
        stats.get("sessions", "?"), stats.get("affinities", "?"), stats.get("nodes", "?"))
    table = format_table(rows, ["NODE", "POOL", "STATE", "HEALTH", "WEIGHT",
                                "SESSIONS", "CAPACITY", "LOAD", "URI"])
    return head + "\n\n" + table


# --------------------------------------------------------------------------
# Prometheus text format

def _label(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric_name(s: str) -> str:
    s = re.sub(r"[^a-zA-Z0-9_]", "_", s)
    return s if s and not s[0].isdigit() else "_" + s


def metrics_text(stats: Dict[str, Any], nodes: Iterable[Dict[str, Any]]) -> str:
    lines: List[str] = []

    def family(name: str, help_: str, samples: List[tuple]) -> None:
        lines.append("# HELP %s %s" % (name, help_))
        lines.append("# TYPE %s gauge" % name)
        for labels, value in samples:
            if labels:
                lab = ",".join('%s="%s"' % (k, _label(v)) for k, v in labels)
                lines.append("%s{%s} %s" % (name, lab, _num(value)))
            else:
                lines.append("%s %s" % (name, _num(value)))

    nodes = list(nodes)
    helps = {
        "sessions": "Live sessions (routed calls) in the router.",
        "affinities": "Affinity keys held (live or in their grace time).",
        "nodes": "Nodes known to the router.",
    }
    stats = dict(stats)
    stats.setdefault("nodes", len(nodes))
    for key in ["sessions", "affinities", "nodes"] + sorted(set(stats) - set(helps)):
        value = stats.get(key, 0)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            family("approute_" + _metric_name(key), helps.get(key, "Router statistic %s." % key),
                   [((), value)])
    sess, cap, load, up, state, weight, routed = [], [], [], [], [], [], []
    for n in nodes:
        nid = n.get("id", "")
        for res, v in sorted(n.get("sessions", {}).items()):
            sess.append(((("node", nid), ("pool", n.get("pool", "")), ("resource", res)), v))
        for res, v in sorted(n.get("capacity", {}).items()):
            cap.append(((("node", nid), ("resource", res)), v))
        for m, v in sorted(n.get("load", {}).items()):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                load.append(((("node", nid), ("metric", _metric_name(str(m)))), v))
        up.append(((("node", nid),), 1 if n.get("health") == "up" else 0))
        for s in ("active", "draining", "disabled"):
            state.append(((("node", nid), ("state", s)), 1 if n.get("state") == s else 0))
        if isinstance(n.get("weight"), (int, float)):
            weight.append(((("node", nid),), n["weight"]))
        if isinstance(n.get("routed_total"), int):
            routed.append(((("node", nid),), n["routed_total"]))
    family("approute_node_sessions", "Sessions counted on a node, per resource.", sess)
    family("approute_node_capacity", "Configured capacity of a node, per resource.", cap)
    family("approute_node_load", "Last load report of a node, per metric.", load)
    family("approute_node_up", "1 when the node's health is up.", up)
    family("approute_node_state", "Admin state of a node (1 for the current state).", state)
    family("approute_node_weight", "Configured weight of a node.", weight)
    if routed:
        lines.append("# HELP approute_node_routed_total Calls routed to a node since it joined.")
        lines.append("# TYPE approute_node_routed_total counter")
        for labels, value in routed:
            lines.append('approute_node_routed_total{node="%s"} %s' % (_label(labels[0][1]), value))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# validate

_LINE_RE = re.compile(r"\bline (\d+)")


def _guess_line(text: str, message: str) -> Optional[int]:
    """Best effort: the first line mentioning a quoted name from the message."""
    m = _LINE_RE.search(message)
    if m:
        return int(m.group(1))
    for token in re.findall(r"['\"`]([^'\"`]{1,80})['\"`]", message):
        for i, line in enumerate(text.splitlines(), 1):
            if re.search(r"(^|[^A-Za-z0-9_.-])%s([^A-Za-z0-9_.-]|$)" % re.escape(token), line):
                return i
    return None


def validate(path: str, out: TextIO, err: TextIO) -> int:
    import approute
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        err.write("%s: error: %s\n" % (path, e.strerror or e))
        return EXIT_ERROR
    try:  # syntax first: PyYAML knows the exact line and column
        import yaml  # type: ignore
    except ImportError:
        yaml = None
    if yaml is not None:
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = "%s:%d:%d" % (path, mark.line + 1, mark.column + 1) if mark else path
            problem = getattr(e, "problem", None) or str(e)
            err.write("%s: error: YAML syntax: %s\n" % (where, problem))
            return EXIT_ERROR
    try:
        checker = getattr(approute, "validate_config", None)
        if checker is not None:
            checker(text, path)  # messages carry "path:line:col: ..."
        router = approute.Router.from_yaml(text, shared=None)
    except approute.Error as e:
        msg = str(e)
        m = re.match(r"^(.*?:\d+(?::\d+)?): (.*)$", msg, re.S)
        if m and m.group(1).startswith(path):
            err.write("%s: error: %s\n" % (m.group(1), m.group(2)))
            return EXIT_ERROR
        line = _guess_line(text, msg)
        where = "%s:%d" % (path, line) if line else path
        err.write("%s: error: %s\n" % (where, msg))
        return EXIT_ERROR
    try:
        n = len(router.nodes())
    except Exception:  # pragma: no cover - informational only
        n = -1
    out.write("%s: ok (%s nodes)\n" % (path, n if n >= 0 else "?"))
    return EXIT_OK


# --------------------------------------------------------------------------
# sessions / end: list the live sessions, end one by hand (a BYE that never
# came through the proxy, e.g. answered "404 Not here")

_SESSION_FIELDS = ("call_id", "app", "node_id", "key", "age", "attempt", "confirmed",
                   "expires_in")


def session_to_dict(si: Any) -> Dict[str, Any]:
    """A SessionInfo as plain JSON-able data."""
    out: Dict[str, Any] = {}
    for field in _SESSION_FIELDS:
        v = getattr(si, field, None)
        out[field] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


def _age(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    s = int(seconds)
    if s < 120:
        return "%ds" % s
    if s < 7200:
        return "%dm%02ds" % (s // 60, s % 60)
    return "%dh%02dm" % (s // 3600, (s % 3600) // 60)


def sessions_text(sessions: Iterable[Dict[str, Any]]) -> str:
    rows = [[str(d.get("call_id", "")), str(d.get("app", "")), str(d.get("node_id") or "-"),
             str(d.get("key") or "-"), _age(d.get("age")), str(d.get("attempt", "")),
             "yes" if d.get("confirmed") else "no", _age(d.get("expires_in"))]
            for d in sessions]
    return format_table(rows, ["CALL-ID", "APP", "NODE", "KEY", "AGE", "ATTEMPT", "CONFIRMED",
                               "EXPIRES"])


def add_session_commands(sub: Any, shared_opt: Any) -> None:
    """The `sessions` and `end` subcommands."""
    sp = sub.add_parser("sessions", help="list live sessions (call id, app, node, key, age)")
    shared_opt(sp)
    sp.add_argument("--node", metavar="NODE", help="only the sessions on this node")
    sp.add_argument("--app", metavar="APP", help="only the sessions of this application")
    sp.add_argument("--limit", metavar="N", type=int, help="at most N sessions")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = sub.add_parser("end", help="end one session by hand (its capacity is freed)")
    sp.add_argument("call_id", metavar="CALL-ID")
    shared_opt(sp)


def run_session_command(args: argparse.Namespace, router: Any, name: str,
                        out: TextIO, err: TextIO) -> int:
    """Runs `sessions` or `end` against an attached router."""
    if args.command == "end":
        if not args.call_id.strip():
            raise _Usage("CALL-ID must not be empty")
        router.end(args.call_id)  # NotFoundError: "no session ..." (exit 1)
        out.write("%s: ended\n" % args.call_id)
        return EXIT_OK
    lister = getattr(router, "sessions", None)
    if lister is None:
        err.write("approute sessions: error: this approute build cannot list sessions "
                  "(Router.sessions is missing)\n")
        return EXIT_ERROR
    if args.limit is not None and args.limit < 1:
        raise _Usage("--limit must be at least 1, not %d" % args.limit)
    if args.node is not None:
        router.node(args.node)  # an unknown node: NotFoundError naming it
    sessions = [session_to_dict(si) for si in lister(node=args.node, app=args.app,
                                                     limit=args.limit)]
    if args.json:
        json.dump({"shared": name, "sessions": sessions}, out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        out.write(sessions_text(sessions) + "\n")
    return EXIT_OK


# --------------------------------------------------------------------------
# main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="approute", description="Inspect and steer an approute router.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def shared_opt(sp):
        sp.add_argument("--shared", metavar="NAME",
                        help="shared state segment name (default: $APPROUTE_SHARED)")

    sp = sub.add_parser("status", help="nodes, sessions and affinities of a running router")
    shared_opt(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    for cmd, state in _STATE_COMMANDS.items():
        sp = sub.add_parser(cmd, help="set a node's admin state to %s" % state)
        sp.add_argument("node", metavar="NODE")
        shared_opt(sp)
    sp = sub.add_parser("validate", help="check a router YAML configuration")
    sp.add_argument("config", metavar="CONFIG")
    sp = sub.add_parser("metrics", help="Prometheus text exposition of a running router")
    shared_opt(sp)
    sp = sub.add_parser("simulate", help="replay a workload through the router, comparing strategies")
    from . import simulate as _simulate
    _simulate.add_arguments(sp)
    from . import agent
    sp = sub.add_parser("agent", help="node agent: report this server's status to the proxy",
                        description="Sends signed PUBLISH status reports (event "
                        "approute-status) to the proxy; see docs/status-package.md.")
    agent.add_arguments(sp)
    add_session_commands(sub, shared_opt)
    return p


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None,
         err: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
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
            return validate(args.config, out, err)
        if args.command == "simulate":
            from . import simulate as _simulate
            return _simulate.run_command(args, out, err)
        name = _shared(args)
        router = _attach(name)
        if args.command == "status":
            stats = _as_dict(router.stats())
            nodes = [node_to_dict(n) for n in router.nodes()]
            if args.json:
                json.dump({"shared": name, "stats": stats, "nodes": nodes}, out, indent=2,
                          sort_keys=True)
                out.write("\n")
            else:
                out.write(status_text(stats, nodes) + "\n")
            return EXIT_OK
        if args.command in _STATE_COMMANDS:
            state = _STATE_COMMANDS[args.command]
            router.set_state(args.node, state)
            out.write("%s: %s\n" % (args.node, state))
            return EXIT_OK
        if args.command == "metrics":
            stats = _as_dict(router.stats())
            nodes = [node_to_dict(n) for n in router.nodes()]
            out.write(metrics_text(stats, nodes))
            return EXIT_OK
        if args.command in ("sessions", "end"):
            return run_session_command(args, router, name, out, err)
    except _Usage as e:
        err.write("approute: error: %s\n" % e)
        return EXIT_USAGE
    except approute.Error as e:
        err.write("approute %s: error: %s: %s\n" % (args.command, type(e).__name__, e))
        return EXIT_ERROR
    except OSError as e:
        err.write("approute %s: error: %s\n" % (args.command, e))
        return EXIT_ERROR
    err.write("approute: error: unknown command %r\n" % args.command)  # pragma: no cover
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

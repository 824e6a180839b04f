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
    approute metrics  --shared NAME [--textfile PATH | --listen ADDR:PORT]   # Prometheus
    approute simulate WORKLOAD [--plot PNG] [--json OUT]   # compare strategies offline
    approute agent    --config agent.yaml    # node agent: signed status PUBLISH
    approute sessions --shared NAME [--node N] [--app A] [--limit N] [--json]
    approute end      CALL-ID --shared NAME  # end one session by hand
    approute end      --shared NAME [--node N] [--app A] [--older-than S] [--yes]   # many

``--shared`` defaults to the environment variable APPROUTE_SHARED.
Exit codes: 0 success, 1 error (message on stderr), 2 usage error. A reader
that closes the pipe early (``approute status | head -1``) ends the command
quietly with 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, TextIO

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


def cluster_text(cluster: Dict[str, Any]) -> str:
    """One line on the cluster placement; "" without `cluster:`."""
    if not cluster or cluster.get("mode", "local") == "local":
        return ""
    return ("cluster: %s   deployment: %s   proxy: %s   proxies: %s   degraded placements: %s   "
            "outage refusals: %s   redis rtt p50/p99: %s/%s us" % (
                cluster.get("mode"), cluster.get("name"), cluster.get("proxy"),
                ",".join(cluster.get("proxies") or []) or "?", cluster.get("degraded_placements", 0),
                cluster.get("outage_refusals", 0),
                cluster.get("rtt_p50_us", 0), cluster.get("rtt_p99_us", 0)))


#: How many affinity keys text `status` shows (those with the most live sessions).
TOP_KEYS = 10
#: Above this many affinities `status` lists no keys unless --top is given:
#: finding the busiest reads every key (about 2 s per 150,000 on a busy host).
TOP_KEYS_SCAN_LIMIT = 100_000


def top_keys(router: Any, n: int = TOP_KEYS) -> List[Dict[str, Any]]:
    """The `n` affinity keys with the most live sessions (then by app, key)."""
    import heapq
    lister = getattr(router, "affinities", None)
    if lister is None or n <= 0:
        return []
    top = heapq.nsmallest(n, lister(), key=lambda a: (-(a.sessions or 0), a.app, a.key))
    return [affinity_to_dict(a) for a in top]


def keys_table(rows: List[Dict[str, Any]]) -> str:
    table = [[str(r["app"]), str(r["key"]), r["node_id"] or "-", str(r["sessions"]),
              _grace(r["grace_left"])] for r in rows]
    return format_table(table, ["APP", "KEY", "NODE", "SESSIONS", "GRACE_LEFT"])


def status_text(stats: Dict[str, Any], nodes: Iterable[Dict[str, Any]],
                keys: Optional[List[Dict[str, Any]]] = None) -> str:
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
# Prometheus text format: approute.metrics (kept importable from here)

from .metrics import metrics_text  # noqa: E402


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


def _read_config(path: str, err: TextIO) -> Optional[str]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        err.write("%s: error: %s\n" % (path, e.strerror or e))
    except UnicodeDecodeError as e:
        err.write("%s: error: not UTF-8 text (byte %d)\n" % (path, e.start))
    return None


def _error_lines(message: str, path: str) -> List[str]:
    """The errors of a message that lists one per line; a line not naming
    `path` continues the one before it."""
    out: List[str] = []
    for line in message.split("\n"):
        if out and not line.startswith(path):
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


def _write_error(path: str, text: str, msg: str, err: TextIO) -> None:
    m = re.match(r"^(.*?:\d+(?::\d+)?): (.*)$", msg, re.S)
    if m and m.group(1).startswith(path):
        err.write("%s: error: %s\n" % (m.group(1), m.group(2)))
    elif msg.startswith(path + ": "):
        err.write("%s: error: %s\n" % (path, msg[len(path) + 2:]))
    else:
        line = _guess_line(text, msg)
        where = "%s:%d" % (path, line) if line else path
        err.write("%s: error: %s\n" % (where, msg))


def check_config(path: str, text: str, err: TextIO) -> Optional[int]:
    """Errors of ``text`` on ``err``; the node count when it is valid, else None."""
    import approute
    try:  # syntax first: PyYAML knows the exact line and column
        import yaml  # type: ignore
    except ImportError:
        yaml = None  # type: ignore[assignment]
    if yaml is not None:
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = "%s:%d:%d" % (path, mark.line + 1, mark.column + 1) if mark else path
            problem = getattr(e, "problem", None) or str(e)
            err.write("%s: error: YAML syntax: %s\n" % (where, problem))
            return None
    try:
        checker = getattr(approute, "validate_config", None)
        if checker is not None:
            checker(text, path)  # messages carry "path:line:col: ..."
        router = approute.Router.from_yaml(text, shared=None)
    except approute.Error as e:
        # The core lists every error it found, one per line ("path:line:col: ...").
        for msg in _error_lines(str(e), path):
            _write_error(path, text, msg, err)
        return None
    try:
        return len(router.nodes())
    except Exception:  # pragma: no cover - informational only
        return 0


def _report_warnings(path: str, text: str, err: TextIO) -> int:
    from .validate import config_warnings
    warnings = config_warnings(text)
    for w in warnings:
        where = "%s:%d:%d" % (path, w.line, w.column) if w.line else path
        err.write("%s: warning: %s: %s\n" % (where, w.path, w.message))
    return len(warnings)


def validate(path: str, out: TextIO, err: TextIO, strict: bool = False) -> int:
    """``approute validate``: errors fail (1); warnings are shown and fail only with ``strict``."""
    text = _read_config(path, err)
    if text is None:
        return EXIT_ERROR
    n = check_config(path, text, err)
    if n is None:
        return EXIT_ERROR
    warned = _report_warnings(path, text, err)
    if warned and strict:
        err.write("%s: error: %d warning%s (--strict)\n" % (path, warned, "" if warned == 1 else "s"))
        return EXIT_ERROR
    out.write("%s: ok (%d nodes%s)\n" % (path, n, ", %d warning%s" % (warned, "" if warned == 1 else "s")
                                          if warned else ""))
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
    sp = sub.add_parser(
        "end", help="end sessions by hand: one call id, or every session matching filters",
        description="Ends sessions whose BYE never reached this proxy (it went around it, or the "
        "node answered it itself), so that their capacity is freed now rather than when their "
        "lifetime expires. Give one CALL-ID, or filters (--node, --app, --older-than, combined "
        "with AND): without --yes these list the sessions they match and change nothing (exit "
        "1); with --yes they end them and print the count.")
    sp.add_argument("call_id", metavar="CALL-ID", nargs="?", help="the session to end")
    shared_opt(sp)
    sp.add_argument("--node", metavar="NODE", help="every session on this node")
    sp.add_argument("--app", metavar="APP", help="every session of this application")
    sp.add_argument("--older-than", metavar="S", type=_seconds, dest="older_than",
                    help="every session older than S seconds")
    sp.add_argument("--yes", action="store_true",
                    help="end the sessions the filters match (without it: only list them)")


def end_sessions(args: argparse.Namespace, router: Any, out: TextIO, err: TextIO) -> int:
    """``approute end``: one call id, or the sessions matching --node/--app/--older-than."""
    filters = args.node is not None or args.app is not None or args.older_than is not None
    if args.call_id is not None:
        if filters:
            raise _Usage("give either CALL-ID or --node/--app/--older-than, not both")
        if not args.call_id.strip():
            raise _Usage("CALL-ID must not be empty")
        router.end(args.call_id)  # NotFoundError: "no session ..." (exit 1)
        out.write("%s: ended\n" % args.call_id)
        return EXIT_OK
    if not filters:
        raise _Usage("give a CALL-ID, or --node, --app or --older-than to end many sessions")
    if not hasattr(router, "sessions"):
        err.write("approute end: error: this approute build cannot list sessions\n")
        return EXIT_ERROR
    if args.node is not None:
        router.node(args.node)  # an unknown node: NotFoundError naming it
    matched = [session_to_dict(si) for si in router.sessions(node=args.node, app=args.app)]
    if args.older_than is not None:
        matched = [d for d in matched
                   if isinstance(d.get("age"), (int, float)) and d["age"] >= args.older_than]
    what = ", ".join(w for w in (
        "on node %s" % args.node if args.node is not None else "",
        "of app %s" % args.app if args.app is not None else "",
        "older than %gs" % args.older_than if args.older_than is not None else "") if w)
    if not args.yes:
        if matched:
            out.write(sessions_text(matched) + "\n")
        err.write("approute end: %d session(s) %s would be ended; nothing was changed (add --yes "
                  "to end them)\n" % (len(matched), what))
        return EXIT_ERROR
    ended = gone = 0
    for d in matched:
        try:
            router.end(d["call_id"])
            ended += 1
        except LookupError:  # it ended meanwhile (its BYE came, or it expired)
            gone += 1
    out.write("%d session(s) %s ended%s\n" % (ended, what, "" if not gone else
                                              "; %d had ended meanwhile" % gone))
    return EXIT_OK


def run_session_command(args: argparse.Namespace, router: Any, name: str,
                        out: TextIO, err: TextIO) -> int:
    """Runs `sessions` or `end` against an attached router."""
    if args.command == "end":
        return end_sessions(args, router, out, err)
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
# operator commands: reload, keys, add-node, remove-node, unlink, metrics
# (each its own function; dispatched through _OPERATOR_COMMANDS)

def _version() -> str:
    try:
        from . import __version__
        return __version__
    except ImportError:  # the extension is missing: still say which package this is
        from importlib import metadata
        try:
            return metadata.version("approute")
        except metadata.PackageNotFoundError:
            return "unknown"


def cmd_reload(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Validates CONFIG, then applies it to the running router (every process sees it)."""
    text = _read_config(args.config, err)
    if text is None:
        return EXIT_ERROR
    n = check_config(args.config, text, err)
    if n is None:
        err.write("%s: not applied; the running router is unchanged\n" % args.config)
        return EXIT_ERROR
    warned = _report_warnings(args.config, text, err)
    if warned and args.strict:
        err.write("%s: error: %d warning%s (--strict); not applied\n"
                  % (args.config, warned, "" if warned == 1 else "s"))
        return EXIT_ERROR
    name = _shared(args)
    router = _attach(name)
    router.reload(text)
    out.write("%s: reloaded %s (%d nodes)\n" % (name, args.config, len(router.nodes())))
    return EXIT_OK


def _grace(v: Optional[float]) -> str:
    return "-" if v is None else "%ss" % _num(round(float(v), 1))


def affinity_to_dict(a: Any) -> Dict[str, Any]:
    return {f: getattr(a, f, None) for f in ("app", "key", "node_id", "sessions", "grace_left")}


def cmd_keys(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Which affinity key is on which node, its live sessions and the grace left."""
    if args.limit is not None and args.limit < 1:
        raise _Usage("--limit must be at least 1, got %d" % args.limit)
    name = _shared(args)
    router = _attach(name)
    if not hasattr(router, "affinities"):
        err.write("approute keys: error: this build of approute has no Router.affinities(); "
                  "upgrade the package\n")
        return EXIT_ERROR
    if args.node is not None:
        router.node(args.node)  # NotFoundError names an unknown node instead of an empty list
    rows = [affinity_to_dict(a) for a in router.affinities(app=args.app, node=args.node, limit=args.limit)]
    if args.json:
        json.dump({"shared": name, "affinities": rows}, out, indent=2, sort_keys=True)
        out.write("\n")
        return EXIT_OK
    out.write(keys_table(rows) + "\n")
    return EXIT_OK


def _capacity(values: Optional[List[str]]) -> Dict[str, int]:
    caps: Dict[str, int] = {}
    for item in values or []:
        for part in item.split(","):
            res, sep, num = part.partition("=")
            res = res.strip()
            if not sep or not res:
                raise _Usage("--capacity %r: expected RESOURCE=N, e.g. conference=50" % part)
            try:
                n = int(num)
            except ValueError:
                raise _Usage("--capacity %r: %r is not a whole number" % (part, num)) from None
            if n < 0:
                raise _Usage("--capacity %r: capacity must be >= 0" % part)
            if res in caps:
                raise _Usage("--capacity: resource %r given twice" % res)
            caps[res] = n
    return caps


def _attrs(values: Optional[List[str]]) -> Dict[str, str]:
    attrs: Dict[str, str] = {}
    for item in values or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise _Usage("--attr %r: expected NAME=VALUE, e.g. region=eu" % item)
        attrs[k] = v
    return attrs


def cmd_add_node(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    capacity = _capacity(args.capacity)
    attrs = _attrs(args.attr)
    router = _attach(_shared(args))
    router.add_node(args.id, args.uri, pool=args.pool, weight=args.weight, priority=args.priority,
                    capacity=capacity, attrs=attrs, state=args.state)
    out.write("%s: added to pool %s (%s)\n" % (args.id, args.pool, args.uri))
    return EXIT_OK


def cmd_remove_node(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    router = _attach(_shared(args))
    router.remove_node(args.id)
    out.write("%s: removed\n" % args.id)
    return EXIT_OK


def cmd_unlink(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import approute
    if not approute.Router.unlink(args.name):
        err.write("approute unlink: error: no shared segment named %r\n" % args.name)
        return EXIT_ERROR
    out.write("%s: unlinked (processes that have it mapped keep it until they exit)\n" % args.name)
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from . import metrics
    name = _shared(args)
    if args.listen is not None:
        try:
            metrics.parse_listen(args.listen)
        except ValueError as e:
            raise _Usage(str(e)) from None
    router = _attach(name)  # fails now, not at the first scrape, when the segment is absent

    def render() -> str:
        r = _attach(name)  # each scrape sees the current segment, even after a restart
        return metrics.metrics_text({**_as_dict(r.stats()), **metrics.cluster_stats(r)},
                                    [node_to_dict(n) for n in r.nodes()])

    if args.listen is not None:
        del router
        return metrics.serve(args.listen, render, err)
    text = metrics.metrics_text({**_as_dict(router.stats()), **metrics.cluster_stats(router)},
                                [node_to_dict(n) for n in router.nodes()])
    if args.textfile is not None:
        metrics.write_textfile(args.textfile, text)
        return EXIT_OK
    out.write(text)
    return EXIT_OK


_OPERATOR_COMMANDS = {
    "reload": cmd_reload,
    "keys": cmd_keys,
    "add-node": cmd_add_node,
    "remove-node": cmd_remove_node,
    "unlink": cmd_unlink,
    "metrics": cmd_metrics,
}


def add_operator_commands(sub: Any, shared_opt: Callable[[argparse.ArgumentParser], None]) -> None:
    sp = sub.add_parser("reload", help="validate a configuration and apply it to a running router",
                        description="Validates CONFIG like `approute validate`, then applies it to "
                        "the router in the shared segment: every process attached to it (each "
                        "Kamailio worker) routes with it from its next call. Nodes that remain "
                        "keep their sessions and affinities. An invalid CONFIG changes nothing.")
    sp.add_argument("config", metavar="CONFIG")
    shared_opt(sp)
    sp.add_argument("--strict", action="store_true", help="do not apply a configuration with warnings")

    sp = sub.add_parser("keys", help="affinity keys: which key is on which node",
                        description="Lists affinity claims: app, key, node, live sessions, and the "
                        "grace time left once its last session has ended.")
    shared_opt(sp)
    sp.add_argument("--app", metavar="APP", help="only this app's keys")
    sp.add_argument("--node", metavar="NODE", help="only keys held by this node")
    sp.add_argument("--limit", metavar="N", type=int, help="at most N keys")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = sub.add_parser("add-node", help="add a node to a running router",
                        description="Adds a node at run time (until the next reload that does not "
                        "list it).")
    sp.add_argument("id", metavar="ID")
    sp.add_argument("uri", metavar="URI", help="e.g. sip:10.0.0.4:5060")
    shared_opt(sp)
    sp.add_argument("--pool", default="default", help="default: default")
    sp.add_argument("--weight", type=int, default=1, help="default: 1")
    sp.add_argument("--priority", type=int, default=0, help="default: 0")
    sp.add_argument("--capacity", action="append", metavar="RES=N",
                    help="capacity per resource (repeatable, or RES=N,RES2=M)")
    sp.add_argument("--attr", action="append", metavar="NAME=VALUE", help="attribute (repeatable)")
    sp.add_argument("--state", default="active", choices=["active", "draining", "disabled"])

    sp = sub.add_parser("remove-node", help="remove a node from a running router")
    sp.add_argument("id", metavar="ID")
    shared_opt(sp)

    sp = sub.add_parser("unlink", help="remove a shared segment's name (/dev/shm/NAME)",
                        description="Removes the segment's name; processes that have it mapped keep "
                        "using it until they exit, and the memory is freed then. The next router "
                        "created with this name starts empty.")
    sp.add_argument("name", metavar="NAME")

    sp = sub.add_parser("metrics", help="Prometheus metrics of a running router",
                        description="Prints the Prometheus text exposition once, writes it to a "
                        "textfile for node_exporter, or serves it at /metrics over HTTP.")
    shared_opt(sp)
    where = sp.add_mutually_exclusive_group()
    where.add_argument("--textfile", metavar="PATH",
                       help="write PATH atomically (node_exporter's textfile collector)")
    where.add_argument("--listen", metavar="ADDR:PORT",
                       help="serve http://ADDR:PORT/metrics until SIGINT/SIGTERM")


# --------------------------------------------------------------------------
# main

def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds, got %r" % text)
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError("expected a number of seconds >= 0, got %r" % text)
    return v


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

    def shared_opt(sp):
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
        name = _shared(args)
        router = _attach(name)
        if args.command == "status":
            stats = _as_dict(router.stats())
            nodes = [node_to_dict(n) for n in router.nodes()]
            cluster = _as_dict(router.cluster()) if hasattr(router, "cluster") else {}
            top = args.top
            if top is None:
                many = isinstance(stats.get("affinities"), int) and stats["affinities"] > TOP_KEYS_SCAN_LIMIT
                top = 0 if many else TOP_KEYS
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

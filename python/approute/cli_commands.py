"""The ``approute`` commands besides status and drain: validate, sessions /
end, and the operator commands (reload, keys, add-node, remove-node, unlink,
metrics)."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, TextIO

from . import cli_util
from .cli_util import (
    EXIT_ERROR,
    EXIT_OK,
    _as_dict,
    _num,
    _seconds,
    _shared,
    _Usage,
    format_table,
    node_to_dict,
)

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
        import yaml
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
    router = cli_util.attach(name)
    router.reload(text)
    out.write("%s: reloaded %s (%d nodes)\n" % (name, args.config, len(router.nodes())))
    return EXIT_OK


def _grace(v: Optional[float]) -> str:
    return "-" if v is None else "%ss" % _num(round(float(v), 1))


def affinity_to_dict(a: Any) -> Dict[str, Any]:
    return {f: getattr(a, f, None) for f in ("app", "key", "node_id", "sessions", "grace_left")}


def keys_table(rows: List[Dict[str, Any]]) -> str:
    table = [[str(r["app"]), str(r["key"]), r["node_id"] or "-", str(r["sessions"]),
              _grace(r["grace_left"])] for r in rows]
    return format_table(table, ["APP", "KEY", "NODE", "SESSIONS", "GRACE_LEFT"])


def top_keys(router: Any, n: int) -> List[Dict[str, Any]]:
    """The `n` affinity keys with the most live sessions (then by app, key)."""
    import heapq
    lister = getattr(router, "affinities", None)
    if lister is None or n <= 0:
        return []
    top = heapq.nsmallest(n, lister(), key=lambda a: (-(a.sessions or 0), a.app, a.key))
    return [affinity_to_dict(a) for a in top]


def cmd_keys(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Which affinity key is on which node, its live sessions and the grace left."""
    if args.limit is not None and args.limit < 1:
        raise _Usage("--limit must be at least 1, got %d" % args.limit)
    name = _shared(args)
    router = cli_util.attach(name)
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
    router = cli_util.attach(_shared(args))
    router.add_node(args.id, args.uri, pool=args.pool, weight=args.weight, priority=args.priority,
                    capacity=capacity, attrs=attrs, state=args.state)
    out.write("%s: added to pool %s (%s)\n" % (args.id, args.pool, args.uri))
    return EXIT_OK


def cmd_remove_node(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    router = cli_util.attach(_shared(args))
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
    router = cli_util.attach(name)  # fails now, not at the first scrape, when the segment is absent

    def render() -> str:
        r = cli_util.attach(name)  # each scrape sees the current segment, even after a restart
        return metrics.metrics_text({**_as_dict(r.stats()), **metrics.cluster_stats(r)},
                                    [node_to_dict(n) for n in r.nodes()])

    if args.listen is not None:
        del router
        from . import status_page

        def page() -> str:
            return status_page.render(status_page.snapshot(cli_util.attach(name), name))

        def explain(params: Dict[str, str]) -> str:
            return status_page.explain_page(cli_util.attach(name), name, params)

        return metrics.serve(args.listen, render, err, page=page, explain=explain)
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
                       help="serve http://ADDR:PORT/metrics, and the status page (HTML) at "
                       "http://ADDR:PORT/, until SIGINT/SIGTERM")



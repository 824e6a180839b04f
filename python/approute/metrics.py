"""Prometheus exposition of a router: text format, a textfile, and ``/metrics`` over HTTP.

    approute metrics --shared NAME                      # print once
    approute metrics --shared NAME --textfile PATH      # node_exporter textfile collector
    approute metrics --shared NAME --listen 127.0.0.1:9464   # serve /metrics and the status
                                                        # page (/) until SIGINT/SIGTERM

Router-wide figures come from ``router.stats()`` and are described once, in
:data:`ROUTER_METRICS`: to expose a new counter of the core, add one
:class:`Metric` there. Per-node figures come from ``router.nodes()``.
"""
from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, TextIO, Tuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PAGE_CONTENT_TYPE = "text/html; charset=utf-8"
#: Sent with the status page: only its inline style and a data: icon may load,
#: no script runs, whatever the router's state holds.
PAGE_HEADERS: Tuple[Tuple[str, str], ...] = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

Labels = Tuple[Tuple[str, str], ...]
Sample = Tuple[str, Labels, float]  # (suffix, labels, value); suffix "" or "_bucket" / "_sum" / "_count"


@dataclass(frozen=True)
class Metric:
    """How one entry of ``router.stats()`` is exposed.

    ``labels`` name the levels of a nested mapping: with labels ("app", "reason")
    the stats value is ``{app: {reason: n}}``. ``fixed`` labels are added to every
    sample (several stats keys may feed one family, e.g. accepted and refused
    reports). A histogram's value is ``{"buckets": {upper_bound: cumulative_count},
    "sum": s, "count": n}``, nested under ``labels`` like the others.
    """

    key: str
    name: str
    type: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: Tuple[str, ...] = ()
    fixed: Labels = ()


#: Every router-wide figure, in output order. Counters end in _total.
ROUTER_METRICS: Tuple[Metric, ...] = (
    Metric("sessions", "approute_sessions", "gauge", "Live sessions (routed calls) in the router."),
    Metric("affinities", "approute_affinities", "gauge", "Affinity keys held (live or in their grace time)."),
    Metric("nodes", "approute_nodes", "gauge", "Nodes known to the router."),
    Metric("max_sessions", "approute_max_sessions", "gauge", "Capacity of the session table."),
    Metric("max_affinities", "approute_max_affinities", "gauge", "Capacity of the affinity table."),
    Metric("max_nodes", "approute_max_nodes", "gauge", "Capacity of the node table."),
    Metric("expired_sessions", "approute_sessions_expired_total", "counter",
           "Sessions ended by lifetime expiry (their BYE never came)."),
    Metric("reports_accepted", "approute_reports_total", "counter",
           "Status reports (PUBLISH approute-status), by result and refusal reason.",
           fixed=(("result", "accepted"), ("reason", ""))),
    Metric("reports_refused_by", "approute_reports_total", "counter",
           "Status reports (PUBLISH approute-status), by result and refusal reason.",
           labels=("reason",), fixed=(("result", "refused"),)),
    # Counters the core may add to stats(), exposed as soon as they appear there:
    Metric("decisions", "approute_decisions_total", "counter",
           "Routing decisions, by app and reason (affinity, strategy, retry, no_node).",
           labels=("app", "reason")),
    Metric("retries", "approute_retries_total", "counter", "Retries after a bounce, by app and SIP code.",
           labels=("app", "code")),
    Metric("key_refusals", "approute_key_refusals_total", "counter",
           "Calls of a strict key refused because the key's node could not take them, by app and reason "
           "(key_full, key_down, key_draining, key_disabled, key_tried).",
           labels=("app", "reason")),
    Metric("headroom_refusals", "approute_headroom_refusals_total", "counter",
           "Calls for a new key that found no node because affinity.headroom turned nodes away, by app.",
           labels=("app",)),
    Metric("route_seconds", "approute_route_seconds", "histogram",
           "Time route() took, in seconds (a sample: one call in 16 per thread)."),
    Metric("processes", "approute_processes", "gauge", "Live processes registered with the state region."),
    Metric("repairs", "approute_repairs_total", "counter",
           "Recounts after a process died in the middle of a state change."),
    Metric("repaired_counts", "approute_repaired_counts_total", "counter",
           "Node counts those recounts corrected (sum of |old - new|)."),
    # With cluster: (router.cluster(), merged in by cluster_stats()):
    Metric("cluster_degraded", "approute_cluster_degraded", "gauge",
           "1 while Redis is out and the proxy routes on local state alone, else 0."),
    Metric("cluster_proxies", "approute_cluster_proxies", "gauge", "Live proxies of the deployment."),
    Metric("cluster_degraded_placements", "approute_cluster_degraded_placements_total", "counter",
           "Reservations made on local state alone because Redis was out (this host)."),
    Metric("cluster_outage_refusals", "approute_cluster_outage_refusals_total", "counter",
           "Reservations refused while Redis was out: past this proxy's outage share (this host)."),
    Metric("cluster_round_trips", "approute_cluster_redis_round_trips_total", "counter",
           "Good Redis round trips (this host)."),
    Metric("cluster_failures", "approute_cluster_redis_failures_total", "counter",
           "Failed or timed-out Redis round trips (this host)."),
)


def cluster_stats(router: Any) -> Dict[str, Any]:
    """The figures of ``router.cluster()`` as stats() keys; {} without cluster:."""
    get = getattr(router, "cluster", None)
    c = dict(get()) if get is not None else {}
    if c.get("mode", "local") == "local":
        return {}
    return {"cluster_degraded": 1 if c.get("mode") == "degraded" else 0,
            "cluster_proxies": len(c.get("proxies") or []),
            "cluster_degraded_placements": c.get("degraded_placements", 0),
            "cluster_outage_refusals": c.get("outage_refusals", 0),
            "cluster_round_trips": c.get("round_trips", 0),
            "cluster_failures": c.get("failures", 0)}

#: stats() keys that are folded into another family, never exposed on their own.
_SKIP_KEYS = {"reports_refused"}  # the sum of reports_refused_by


def _label(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metric_name(s: str) -> str:
    s = re.sub(r"[^a-zA-Z0-9_]", "_", s)
    return s if s and not s[0].isdigit() else "_" + s


def _num(v: float) -> str:
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "+Inf" if v > 0 else "-Inf"
        return repr(v)
    return str(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _flatten(value: Any, names: Sequence[str], labels: Labels) -> Iterable[Tuple[Labels, Any]]:
    if not names:
        yield labels, value
        return
    if not isinstance(value, Mapping):
        return
    for k in sorted(value, key=str):
        yield from _flatten(value[k], names[1:], labels + ((names[0], str(k)),))


def _samples(m: Metric, value: Any) -> List[Sample]:
    out: List[Sample] = []
    for labels, v in _flatten(value, m.labels, ()):
        labels = m.fixed + labels
        if m.type == "histogram":
            if not isinstance(v, Mapping) or not isinstance(v.get("buckets"), Mapping):
                continue
            bounds = sorted(v["buckets"].items(), key=lambda kv: float(kv[0]))
            for le, count in bounds:
                out.append(("_bucket", labels + (("le", _num(float(le))),), count))
            if not bounds or float(bounds[-1][0]) != float("inf"):
                out.append(("_bucket", labels + (("le", "+Inf"),), v.get("count", 0)))
            out.append(("_sum", labels, v.get("sum", 0)))
            out.append(("_count", labels, v.get("count", 0)))
        elif _is_number(v):
            out.append(("", labels, v))
    return out


class Exposition:
    """Families in output order; one HELP/TYPE per name whatever feeds it."""

    def __init__(self) -> None:
        self._families: Dict[str, Tuple[str, str, List[Sample]]] = {}

    def add(self, name: str, type_: str, help_: str, samples: List[Sample]) -> None:
        fam = self._families.setdefault(name, (type_, help_, []))
        fam[2].extend(samples)

    def text(self) -> str:
        lines: List[str] = []
        for name, (type_, help_, samples) in self._families.items():
            lines.append("# HELP %s %s" % (name, help_.replace("\\", "\\\\").replace("\n", "\\n")))
            lines.append("# TYPE %s %s" % (name, type_))
            for suffix, labels, value in samples:
                shown = [(k, v) for k, v in labels if v != "" or k == "le"]
                lab = ",".join('%s="%s"' % (k, _label(v)) for k, v in shown)
                lines.append("%s%s%s %s" % (name, suffix, "{%s}" % lab if lab else "", _num(value)))
        return "\n".join(lines) + "\n"


def metrics_text(stats: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]]) -> str:
    """The Prometheus text exposition of ``router.stats()`` and the nodes (as dicts)."""
    nodes = list(nodes)
    stats = dict(stats)
    stats.setdefault("nodes", len(nodes))
    ex = Exposition()
    known = set(_SKIP_KEYS)
    for m in ROUTER_METRICS:
        known.add(m.key)
        if m.key in stats:
            ex.add(m.name, m.type, m.help, _samples(m, stats[m.key]))
    # A plain number the table does not describe yet: shown, as a gauge, rather than lost.
    for key in sorted(set(stats) - known):
        if _is_number(stats[key]):
            ex.add("approute_" + metric_name(key), "gauge", "Router statistic %s." % key,
                   [("", (), stats[key])])

    def per_node(name: str, type_: str, help_: str, rows: List[Tuple[Labels, Any]]) -> None:
        ex.add(name, type_, help_, [("", labels, v) for labels, v in rows if _is_number(v)])

    sess: List[Tuple[Labels, Any]] = []
    cap: List[Tuple[Labels, Any]] = []
    load: List[Tuple[Labels, Any]] = []
    up: List[Tuple[Labels, Any]] = []
    ejected: List[Tuple[Labels, Any]] = []
    state: List[Tuple[Labels, Any]] = []
    weight: List[Tuple[Labels, Any]] = []
    routed: List[Tuple[Labels, Any]] = []
    for n in nodes:
        nid = str(n.get("id", ""))
        for res, v in sorted(dict(n.get("sessions") or {}).items()):
            sess.append(((("node", nid), ("pool", str(n.get("pool", ""))), ("resource", res)), v))
        for res, v in sorted(dict(n.get("capacity") or {}).items()):
            cap.append(((("node", nid), ("pool", str(n.get("pool", ""))), ("resource", res)), v))
        for k, v in sorted(dict(n.get("load") or {}).items()):
            load.append(((("node", nid), ("metric", metric_name(str(k)))), v))
        up.append(((("node", nid),), 1 if n.get("health") == "up" else 0))
        # the core sets ejected_until only while the ejection lasts
        ejected.append(((("node", nid),), 0 if n.get("ejected_until") is None else 1))
        for s in ("active", "draining", "disabled"):
            state.append(((("node", nid), ("state", s)), 1 if n.get("state") == s else 0))
        weight.append(((("node", nid),), n.get("weight")))
        routed.append(((("node", nid),), n.get("routed_total")))
    per_node("approute_node_sessions", "gauge", "Sessions counted on a node, per resource.", sess)
    per_node("approute_node_capacity", "gauge", "Configured capacity of a node, per resource.", cap)
    per_node("approute_node_load", "gauge", "Last load report of a node, per metric.", load)
    per_node("approute_node_up", "gauge", "1 when the node's health is up.", up)
    per_node("approute_node_ejected", "gauge",
             "1 while outlier detection keeps the node out (failed calls), else 0.", ejected)
    per_node("approute_node_state", "gauge", "Admin state of a node (1 for the current state).", state)
    per_node("approute_node_weight", "gauge", "Configured weight of a node.", weight)
    per_node("approute_node_routed_total", "counter", "Calls routed to a node since it joined.", routed)
    return ex.text()


def write_textfile(path: str, text: str) -> None:
    """Atomically replaces ``path`` (node_exporter must never read half a file)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".approute-metrics.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def parse_listen(value: str) -> Tuple[str, int]:
    """"127.0.0.1:9464", "[::1]:9464", "localhost:0" -> (host, port). ValueError names what is wrong."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", value.strip())
    if not m:
        raise ValueError("--listen %r: expected ADDR:PORT, e.g. 127.0.0.1:9464 or [::1]:9464" % value)
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError("--listen %r: port %d is outside 0..65535" % (value, port))
    if not host:
        raise ValueError("--listen %r: give the address to listen on "
                         "(0.0.0.0 for every IPv4 address)" % value)
    return host, port


class BadRequest(ValueError):
    """A page's request names something wrong (an unknown app): answered 400."""


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "approute-metrics"
    timeout = 10  # a client that sends nothing is dropped; one request at a time

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._respond(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        server: MetricsServer = self.server  # type: ignore[assignment]
        render: Optional[Callable[[], str]] = None
        ctype = "text/plain; charset=utf-8"
        headers: Tuple[Tuple[str, str], ...] = ()
        if path == "/metrics":
            render, ctype = server.render, CONTENT_TYPE
        elif path == "/" and server.page is not None:
            render, ctype, headers = server.page, PAGE_CONTENT_TYPE, PAGE_HEADERS
        elif path == "/explain" and server.explain is not None:
            query = urllib.parse.parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "")
            params = {k: v[-1] for k, v in query.items()}
            explain = server.explain
            render, ctype, headers = (lambda: explain(params)), PAGE_CONTENT_TYPE, PAGE_HEADERS
        if render is not None:
            try:
                payload, code = render().encode("utf-8"), 200
            except BadRequest as e:  # /explain: a bad or unknown app, key or call id
                payload = ("approute explain: %s\n" % e).encode("utf-8")
                code, ctype, headers = 400, "text/plain; charset=utf-8", ()
            except Exception as e:  # the router is gone or unreadable: say so, keep serving
                payload = ("approute: cannot read the router: %s\n" % e).encode("utf-8")
                code, ctype, headers = 503, "text/plain; charset=utf-8", ()
                self.log_error("%s", e)
        elif path == "/":
            payload, code = b"approute metrics: see /metrics\n", 200
        else:
            payload, code = b"not found; metrics are at /metrics\n", 404
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # only errors are worth a line
        pass

    def log_error(self, format: str, *args: Any) -> None:
        sys.stderr.write("approute metrics: %s\n" % (format % args))


class MetricsServer(http.server.HTTPServer):
    """Serves one request at a time: a scrape costs one pass over the node table.

    ``render`` gives /metrics; ``page``, when given, the HTML status page at /.
    """

    def __init__(self, address: Tuple[str, int], render: Callable[[], str],
                 page: Optional[Callable[[], str]] = None,
                 explain: Optional[Callable[[Dict[str, str]], str]] = None) -> None:
        self.render = render
        self.page = page
        self.explain = explain
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a DNS lookup); not needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


def serve(listen: str, render: Callable[[], str], err: TextIO,
          ready: Optional[Callable[[str], None]] = None,
          page: Optional[Callable[[], str]] = None,
          explain: Optional[Callable[[Dict[str, str]], str]] = None) -> int:
    """Serves /metrics (and the status page at / with ``page``, a placement's
    trace at /explain?app=...&key=... with ``explain``) until SIGINT or SIGTERM;
    returns the exit code."""
    host, port = parse_listen(listen)
    server = MetricsServer((host, port), render, page, explain)
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    shown = ("[%s]:%d" if ":" in bound_host else "%s:%d") % (bound_host, bound_port)
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        err.write("approute metrics: serving http://%s/metrics%s\n"
                  % (shown, "" if page is None else ", status page http://%s/" % shown))
        err.flush()
        if ready is not None:
            ready(shown)
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        for s, h in old.items():
            signal.signal(s, h)
    err.write("approute metrics: stopped\n")
    return 0

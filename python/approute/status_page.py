"""The status page ``approute metrics --listen ADDR:PORT`` serves at ``/``.

One self-contained HTML page (inline CSS, no script, no external asset) that
reloads itself every few seconds (``<meta http-equiv="refresh">``): the pools,
each node's admin state, health, busy/ejected/draining marks and its sessions
against its capacity per resource as bars, the affinity keys with the most live
sessions, and the cluster line. :func:`snapshot` reads a router once;
:func:`render` turns a snapshot into the page, escaping every string that comes
from the state (node ids, URIs, keys, apps and the cluster's names can hold
whatever a status report or a SIP header put there).
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .cli import cluster_text
from .cli_commands import affinity_to_dict
from .cli_util import node_to_dict

#: Seconds between reloads of the page.
REFRESH_SECONDS = 5
#: Affinity keys shown, most live sessions first.
TOP_KEYS = 20
#: A pool or node at or past this share of its capacity is drawn as nearly full.
WARN_SHARE = 0.8


@dataclass
class Snapshot:
    """What the page shows, read from a router at one moment (plain data)."""

    shared: str
    taken: float  # unix time
    stats: Dict[str, Any] = field(default_factory=dict)
    nodes: List[Dict[str, Any]] = field(default_factory=list)  # cli.node_to_dict, plus busy_until
    keys: List[Dict[str, Any]] = field(default_factory=list)  # the top keys, cli.affinity_to_dict
    keys_total: int = 0
    cluster: Dict[str, Any] = field(default_factory=dict)
    version: str = ""


def _top_keys(rows: Sequence[Dict[str, Any]], top: int) -> List[Dict[str, Any]]:
    """Most live sessions first; then app and key, so that equal counts keep their places."""
    return sorted(rows, key=lambda r: (-int(r.get("sessions") or 0), str(r.get("app")),
                                       str(r.get("key"))))[:top]


def snapshot(router: Any, shared: str, top: int = TOP_KEYS, now: Optional[float] = None) -> Snapshot:
    """Reads ``router`` once: stats, nodes, the ``top`` keys and the cluster."""
    nodes: List[Dict[str, Any]] = []
    for n in router.nodes():
        d = node_to_dict(n)
        # a node that answered 503 with Retry-After, on a core that reports it (None until then)
        busy = getattr(n, "busy_until", None)
        d["busy_until"] = float(busy) if isinstance(busy, (int, float)) else None
        nodes.append(d)
    keys = [affinity_to_dict(a) for a in router.affinities()]
    get_cluster = getattr(router, "cluster", None)
    cluster = dict(get_cluster()) if get_cluster is not None else {}
    try:
        from . import __version__ as version
    except ImportError:  # the extension is missing; the page still says what it can
        version = ""
    return Snapshot(shared=shared, taken=time.time() if now is None else now,
                    stats=dict(router.stats()), nodes=nodes, keys=_top_keys(keys, top),
                    keys_total=len(keys), cluster=cluster, version=str(version))


# --------------------------------------------------------------------------
# rendering

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return ("%.2f" % v).rstrip("0").rstrip(".")
    return str(v)


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def _share_class(used: float, limit: float) -> str:
    if limit <= 0 or used >= limit:
        return "full"
    return "warn" if used >= WARN_SHARE * limit else "ok"


def _bar(name: str, used: int, limit: Optional[int]) -> str:
    """One resource of a node or pool: a bar of used/limit, or the count alone when unlimited."""
    if limit is None:
        return ('<div class="res"><span class="rname">%s</span><span class="nobar">no limit</span>'
                '<span class="count">%d</span></div>' % (_e(name), used))
    pct = 100.0 if limit <= 0 else min(100.0, 100.0 * used / limit)
    return ('<div class="res"><span class="rname">%s</span>'
            '<span class="bar" role="meter" aria-valuemin="0" aria-valuemax="%d" aria-valuenow="%d">'
            '<span class="fill %s" style="width:%.1f%%"></span></span>'
            '<span class="count">%d/%d</span></div>'
            % (_e(name), limit, used, _share_class(used, limit), pct, used, limit))


def _resources(n: Mapping[str, Any]) -> List[Tuple[str, int, Optional[int]]]:
    """(resource, sessions, capacity or None) for the resources the node has a capacity
    for or sessions on; an idle node without capacities shows its first resource."""
    sessions = dict(n.get("sessions") or {})
    capacity = dict(n.get("capacity") or {})
    out = []
    for res in sorted(set(sessions) | set(capacity), key=lambda r: (r != "calls", str(r))):
        cap = capacity.get(res)
        out.append((str(res), int(sessions.get(res, 0)), None if cap is None else int(cap)))
    shown = [r for r in out if r[2] is not None or r[1] > 0]
    return shown or out[:1]


def _marks(n: Mapping[str, Any], now: float) -> str:
    marks: List[str] = []
    state = str(n.get("state", ""))
    marks.append('<span class="mark state-%s">%s</span>'
                 % ("other" if state not in ("active", "draining", "disabled") else state, _e(state)))
    busy = n.get("busy_until")
    if isinstance(busy, (int, float)) and busy > now:
        marks.append('<span class="mark busy">busy until %s</span>' % _clock(busy))
    ejected = n.get("ejected_until")
    if isinstance(ejected, (int, float)):
        marks.append('<span class="mark ejected">ejected until %s</span>' % _clock(ejected))
    return " ".join(marks)


def _health(n: Mapping[str, Any]) -> str:
    health = str(n.get("health", ""))
    cls = health if health in ("up", "suspect", "down") else "other"
    return '<span class="mark health-%s">%s</span>' % (cls, _e(health))


def _load(n: Mapping[str, Any]) -> str:
    load = dict(n.get("load") or {})
    if not load:
        return "-"
    return " ".join("%s=%s" % (_e(k), _e(_num(v))) for k, v in sorted(load.items()))


def _pool_summary(nodes: Sequence[Mapping[str, Any]]) -> str:
    """Per resource: sessions on nodes with a capacity over the capacity of active, up nodes."""
    used: Dict[str, int] = {}
    usable: Dict[str, int] = {}
    for n in nodes:
        taking = n.get("state") == "active" and n.get("health") == "up"
        for res, count, cap in _resources(n):
            if cap is None:
                continue
            used[res] = used.get(res, 0) + count
            usable[res] = usable.get(res, 0) + (cap if taking else 0)
    if not used:
        return '<p class="nocap">no capacities set: the pool is unlimited</p>'
    return ('<div class="summary" title="sessions on nodes with a capacity, over the capacity of the '
            'active, up nodes">%s</div>' % "".join(_bar(res, used[res], usable[res]) for res in sorted(used)))


def _node_row(n: Mapping[str, Any], now: float) -> str:
    bars = "".join(_bar(res, used, cap) for res, used, cap in _resources(n)) or "-"
    return ('<tr class="node" data-node="%s"><td class="id">%s</td><td>%s</td><td>%s</td>'
            '<td class="bars">%s</td><td class="load">%s</td><td class="num">%s</td>'
            '<td class="uri">%s</td></tr>'
            % (_e(n.get("id", "")), _e(n.get("id", "")), _marks(n, now), _health(n), bars, _load(n),
               _e(n.get("routed_total", "")), _e(n.get("uri", ""))))


def _pools(nodes: Sequence[Mapping[str, Any]], now: float) -> str:
    by_pool: Dict[str, List[Mapping[str, Any]]] = {}
    for n in nodes:
        by_pool.setdefault(str(n.get("pool", "")), []).append(n)
    if not by_pool:
        return '<p class="empty">No nodes.</p>'
    out = []
    for pool in sorted(by_pool):
        members = sorted(by_pool[pool], key=lambda n: str(n.get("id", "")))
        up = sum(1 for n in members if n.get("health") == "up" and n.get("state") == "active")
        out.append('<section class="pool" data-pool="%s"><h2>pool %s <small>%d node%s, %d active and up'
                   '</small></h2>%s'
                   '<table class="nodes"><thead><tr><th>node</th><th>state</th><th>health</th>'
                   '<th>sessions / capacity</th><th>load</th><th>routed</th><th>uri</th></tr></thead>'
                   '<tbody>%s</tbody></table></section>'
                   % (_e(pool), _e(pool), len(members), "" if len(members) == 1 else "s", up,
                      _pool_summary(members),
                      "".join(_node_row(n, now) for n in members)))
    return "".join(out)


def _grace(v: Any) -> str:
    return "-" if v is None else "%ss" % _num(round(float(v), 1))


def _keys(snap: Snapshot) -> str:
    if not snap.keys:
        return '<p class="empty">No affinity keys.</p>'
    rows = "".join('<tr class="key"><td>%s</td><td class="keyname">%s</td><td>%s</td><td class="num">%s</td>'
                   '<td class="num">%s</td></tr>'
                   % (_e(k.get("app", "")), _e(k.get("key", "")), _e(k.get("node_id") or "-"),
                      _e(k.get("sessions", 0)), _e(_grace(k.get("grace_left"))))
                   for k in snap.keys)
    more = ("" if snap.keys_total <= len(snap.keys) else
            '<p class="more">%d of %d keys; all of them: <code>approute keys --shared %s</code></p>'
            % (len(snap.keys), snap.keys_total, _e(snap.shared)))
    return ('<table class="keys"><thead><tr><th>app</th><th>key</th><th>node</th><th>sessions</th>'
            '<th>grace left</th></tr></thead><tbody>%s</tbody></table>%s' % (rows, more))


def _cluster(cluster: Dict[str, Any]) -> str:
    line = cluster_text(cluster)
    if not line:
        return '<p class="cluster local">local state (no cluster: section)</p>'
    mode = str(cluster.get("mode", ""))
    return '<p class="cluster %s">%s</p>' % ("degraded" if mode == "degraded" else "ok", _e(line))


_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 20px}
header h1{margin:0;font-size:20px}header h1 span{color:#9fb3d9;font-weight:normal}
header p{margin:4px 0 0;color:#c9d3e6}
main{padding:8px 20px 20px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:12px 0;padding:8px 14px}
h2{font-size:16px;margin:4px 0 8px}h2 small{color:#667085;font-weight:normal;margin-left:8px}
table{border-collapse:collapse;width:100%;table-layout:fixed}
table.nodes th:nth-child(1){width:10%}table.nodes th:nth-child(2){width:13%}
table.nodes th:nth-child(3){width:7%}table.nodes th:nth-child(4){width:30%}
table.nodes th:nth-child(5){width:13%}table.nodes th:nth-child(6){width:6%}
table.keys th:nth-child(2){width:45%}
th{text-align:left;color:#667085;font-weight:600;border-bottom:1px solid #dde1e8;padding:4px 8px}
td{padding:5px 8px;border-bottom:1px solid #eef0f4;vertical-align:top}
td.id,td.keyname{font-weight:600;word-break:break-all}td.uri{color:#475467;word-break:break-all}
td.num{text-align:right}
.summary{display:flex;flex-wrap:wrap;gap:4px 24px;margin-bottom:8px;padding:4px 8px;background:#f7f8fa;
border-radius:4px}
.summary::before{content:"in use";color:#667085;align-self:center}
.res{display:flex;align-items:center;gap:8px}
.rname{width:90px;color:#475467;overflow:hidden;text-overflow:ellipsis}
.bar{display:inline-block;width:140px;height:12px;background:#e9ecf2;border-radius:6px;overflow:hidden}
.fill{display:block;height:100%}.fill.ok{background:#2e9e5b}.fill.warn{background:#e6a700}
.fill.full{background:#d64545}
.count{font-variant-numeric:tabular-nums}.nobar{width:140px;color:#98a2b3;font-size:12px}
.mark{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;margin:1px 2px 1px 0}
.state-active{background:#e3f4ea;color:#1f6e3f}.state-draining{background:#fff1d6;color:#8a5a00}
.state-disabled,.state-other{background:#e9ecf2;color:#475467}
.health-up{background:#e3f4ea;color:#1f6e3f}.health-suspect{background:#fff1d6;color:#8a5a00}
.health-down,.health-other{background:#fde2e2;color:#a12121}
.busy{background:#fff1d6;color:#8a5a00}.ejected{background:#fde2e2;color:#a12121}
.cluster.degraded{color:#ffb4b4;font-weight:600}
.empty,.more,.nocap{color:#667085}.nocap{margin:0 0 8px}
footer{color:#667085;padding:0 20px 16px;font-size:12px}
"""


def render(snap: Snapshot, refresh: int = REFRESH_SECONDS) -> str:
    """The page for ``snap``; everything from the state is HTML-escaped."""
    stats = snap.stats
    head = ("sessions %s &middot; affinities %s &middot; nodes %s &middot; updated %s UTC, every %d s"
            % (_e(stats.get("sessions", "?")), _e(stats.get("affinities", "?")),
               _e(stats.get("nodes", len(snap.nodes))), _clock(snap.taken), refresh))
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="refresh" content="%d">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            "<title>approute %s</title><style>%s</style></head>\n"
            '<body><header><h1>approute <span>%s</span></h1><p class="head">%s</p>%s</header>\n'
            "<main>%s\n"
            '<section class="topkeys"><h2>top keys <small>most live sessions first</small></h2>%s</section>'
            "</main>\n"
            '<footer>approute %s &middot; <a href="/metrics">/metrics</a> (Prometheus) &middot; '
            '<a href="/explain">explain a call</a></footer>'
            "</body></html>\n"
            % (refresh, _e(snap.shared), _STYLE, _e(snap.shared), head, _cluster(snap.cluster),
               _pools(snap.nodes, snap.taken), _keys(snap), _e(snap.version)))


# --------------------------------------------------------------------------
# /explain: one placement's trace (Router.explain), as a page

_EXPLAIN_STYLE = """
form.explain{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
form.explain input{padding:3px 6px;border:1px solid #c9d3e6;border-radius:4px}
table.trace th:nth-child(1){width:14%}table.trace th:nth-child(5){width:9%}
tr.cand td.id{color:#1f6e3f}tr.out td{color:#667085}
ol.steps{margin:4px 0;padding-left:22px}.decision{font-weight:600}.refused{color:#a12121}
"""


def _explain_form(params: Mapping[str, str]) -> str:
    fields = "".join(
        '<label>%s <input name="%s" value="%s"></label>' % (_e(label), name, _e(params.get(name, "")))
        for name, label in (("app", "app"), ("key", "key"), ("prefer", "prefer"), ("call_id", "or call id")))
    return '<form class="explain" method="get" action="/explain">%s<button>explain</button></form>' % fields


def render_explain(trace: Mapping[str, Any], shared: str, params: Mapping[str, str],
                   version: str = "") -> str:
    """The trace of ``Router.explain()`` as a page; everything from the
    request and the state is HTML-escaped."""
    rows = []
    for n in trace["nodes"]:
        count = "%d/%s" % (n["sessions"], "-" if n["capacity"] is None else n["capacity"])
        rows.append('<tr class="%s"><td class="id">%s</td><td>%s</td><td>%s</td><td class="num">%s</td>'
                    "<td>%s</td><td>%s</td><td>%s</td></tr>"
                    % ("cand" if n["candidate"] and not n["exclusion"] else "out", _e(n["id"]),
                       _e(n["state"]), _e(n["health"]), _e(count), "yes" if n["candidate"] else "no",
                       _e(n["exclusion"] or "-"), _e(n["detail"])))
    d = trace["decision"]
    if d["ok"]:
        decision = '<p class="decision">decision: %s (%s), reason %s</p>' % (
            _e(d["node_id"]), _e(d["uri"]), _e(d["reason"]))
    else:
        decision = '<p class="decision refused">decision: refused, reason %s: %s</p>' % (
            _e(d["reason"]), _e(d["detail"]))
    compared = ", ".join("%s %d/%s (weight %d, priority %d)" % (
        _e(c["id"]), c["sessions"], "-" if c["capacity"] is None else c["capacity"], c["weight"],
        c["priority"]) for c in trace["compared"]) or "-"
    picks = ", ".join("%s: %s" % (_e(p["node"]), _e(p["outcome"])) for p in trace["picks"]) or "-"
    what = "app %s" % _e(trace["app"])
    if trace["key"]:
        what += ", key %s" % _e(trace["key"])
    if trace["prefer"]:
        what += ", prefer %s" % _e(trace["prefer"])
    if trace["call_id"]:
        what += ", session %s" % _e(trace["call_id"])
    body = ('<section><h2>%s <small>pool %s, resource %s, strategy %s%s</small></h2>%s'
            '<table class="nodes trace"><tr><th>node</th><th>state</th><th>health</th><th>count</th>'
            "<th>candidate</th><th>exclusion</th><th>why</th></tr>%s</table></section>"
            '<section><h2>flow</h2><ol class="steps">%s</ol><p>compared: %s</p><p>picks: %s</p></section>'
            % (what, _e(trace["pool"]), _e(trace["resource"]), _e(trace["strategy"]),
               ", in panic" if trace["panic"] else "", decision, "".join(rows),
               "".join("<li>%s</li>" % _e(s) for s in trace["steps"]), compared, picks))
    return _explain_shell(shared, body, params, version)


def _explain_shell(shared: str, body: str, params: Mapping[str, str], version: str) -> str:
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            "<title>approute %s: explain</title><style>%s%s</style></head>\n"
            '<body><header><h1>approute <span>%s</span></h1><p class="head">why a call would go '
            "where it would go now (a dry run: nothing is reserved)</p></header>\n"
            "<main><section>%s</section>%s</main>\n"
            '<footer>approute %s &middot; <a href="/">status</a> &middot; <a href="/metrics">/metrics</a>'
            "</footer></body></html>\n"
            % (_e(shared), _STYLE, _EXPLAIN_STYLE, _e(shared), _explain_form(params), body, _e(version)))


def explain_page(router: Any, shared: str, params: Mapping[str, str]) -> str:
    """/explain?app=...&key=...&prefer=... or /explain?call_id=...: the trace
    page; only the form when nothing is asked. metrics.BadRequest (a 400)
    for an unknown app or call id or a bad key."""
    import approute

    from . import __version__
    from .metrics import BadRequest
    app, call_id = params.get("app", ""), params.get("call_id", "")
    if not app and not call_id:
        return _explain_shell(shared, "", params, __version__)
    try:
        if call_id:
            trace = router.explain(call_id=call_id)
        else:
            trace = router.explain(app, key=params.get("key") or None, prefer=params.get("prefer") or None)
    except (approute.InvalidArgumentError, approute.NotFoundError) as e:
        raise BadRequest(str(e)) from None
    return render_explain(trace, shared, params, __version__)

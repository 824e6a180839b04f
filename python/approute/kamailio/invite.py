"""Routing an initial INVITE (``do_app_routing``): which application the
request is for (trusted X-Exec-App header, R-URI rules, R-URI user, default),
its affinity key and app data from the templates, the checks on every value
sent to Asterisk, ``router.route()``, and then $du, the X-Exec-App headers
and the node / send-time AVPs the later routes read."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import approute as _ar

from ..explain import short_trace
from .context import (
    BAD_REQUEST,
    EXHAUSTED,
    INTERNAL,
    KEY_REFUSALS,
    NO_NODE,
    OK,
    UNKNOWN_APP,
    Context,
    PVCache,
)
from .settings import ATTR_PVS, FIELD_PVS, AppOptions, render
from .sip import SAFE_VALUE_RE, Refused, clean, in_networks

#: (router app, app data, exec app) a request is for
AppMatch = Tuple[Optional[str], Optional[str], Optional[str]]


class InviteRouting:
    """Routes initial INVITEs for one handler."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        s = ctx.settings
        # per-call constants, computed once
        self._hdr_app_pv = "$hdr(%s)" % s.header_app
        self._hdr_data_pv = "$hdr(%s)" % s.header_data
        # app -> reads the route() attributes (None: always read them); an
        # app the router does not list is routed as its "default" app
        self._attr_apps = s.apps_needing_attrs()
        self._attr_other = True
        if self._attr_apps is not None:
            self._attr_other = self._attr_apps.get("default", True)

    def route(self) -> int:
        """Sets $du and the X-Exec-App headers of an initial INVITE; on a
        negative code the reply AVPs (see the package docstring)."""
        ctx = self.ctx
        if ctx.router is None:
            return ctx.fail(500, "Router Not Ready", INTERNAL)
        vals: PVCache = {}  # each PV read at most once per request
        call_id = None
        try:
            call_id = ctx.cached(vals, "$ci")
            if not call_id:
                return ctx.fail(400, "Missing Call-ID", BAD_REQUEST)
            return self._route_checked(vals, call_id)
        except Refused as r:
            return ctx.refused(r, call_id, vals.get("$si"))

    def _route_checked(self, vals: PVCache, call_id: str) -> int:
        ctx = self.ctx
        s = ctx.settings
        get = ctx.cached
        ruser = get(vals, "$rU") or ""
        if len(ruser) > s.max_ruri_user:
            raise Refused(414, "Request-URI Too Long", "R-URI user is %d characters "
                          "(max_ruri_user %d)" % (len(ruser), s.max_ruri_user))
        app, data, exec_app = self.find_app(vals)
        if not app:
            if ctx.notes:
                ctx.note("route", call_id, None, " (no application matched)")
            return ctx.fail(404, "Not Found", UNKNOWN_APP)
        opts = s.options(app)
        key = prefer = None
        tpl = opts.key if opts.key is not None else s.default_key
        if tpl is not None or opts.prefer is not None or (data is None and opts.data is not None):
            look = self._lookup({"app": app, "app_data": data or ""}, vals)
            if tpl is not None:
                text, nonempty = render(tpl, look)
                key = text if nonempty else None
            if opts.prefer is not None and key is not None:
                text, nonempty = render(opts.prefer, look)
                prefer = text if nonempty else None
            if data is None and opts.data is not None:
                data = render(opts.data, look)[0] or None
        self._check_values(app, data, exec_app, opts)  # before anything is kept
        # the hash inputs, only for apps whose strategy may use them
        attrs = None
        need = self._attr_apps
        if need is None or need.get(app, self._attr_other):
            attrs = {}
            for name, pv in ATTR_PVS:
                v = get(vals, pv)
                if v:
                    attrs[name] = v
        trace = self._short_trace(app, key, prefer, attrs) if ctx.settings.log_json else None
        try:
            if prefer is None:
                d = ctx.router.route(app, call_id=call_id, key=key, attrs=attrs)
            else:
                d = ctx.router.route(app, call_id=call_id, key=key, prefer=prefer, attrs=attrs)
        except _ar.NotFoundError as e:
            ctx.log("info", "route app=%s call_id=%s: %s" % (app, call_id, e))
            return ctx.fail(404, "Not Found", UNKNOWN_APP)
        except _ar.ResourceExhaustedError as e:
            ctx.log("err", "route app=%s call_id=%s: %s" % (app, call_id, e))
            return ctx.fail(503, "Router Full", EXHAUSTED)
        except _ar.InvalidArgumentError as e:
            ctx.log("info", "route app=%s call_id=%s: %s" % (app, call_id, e))
            return ctx.fail(400, "Bad Request", BAD_REQUEST)
        if ctx.notes:
            ctx.note("route", call_id, d, " key=%s%s" % (key or "-", " prefer=" + prefer if prefer else ""),
                     {"key": key, "prefer": prefer}, trace)
        if not d.ok:
            if d.reason in KEY_REFUSALS:  # a strict key whose node cannot take it
                return ctx.refuse_key(d, call_id, key, NO_NODE)
            return ctx.fail(503, "No Node Available", NO_NODE)
        ksr = ctx.ksr
        ksr.setdsturi(d.uri)
        self._set_headers(app, data, exec_app, vals, opts)
        ksr.pv.sets("$avp(approute_node)", clean(d.node_id))
        if s.acc_avps:  # what acc's log_extra records for `approute calls acc`
            ksr.pv.sets("$avp(approute_app)", clean(app))
            ksr.pv.sets("$avp(approute_key)", clean(key or ""))
            ksr.pv.sets("$avp(approute_prefer)", clean(prefer or ""))
        if s.report_results:
            ctx.mark_sent()
        return OK

    # ----- which application --------------------------------------------------

    def _field(self, name: str, match: Dict[str, str], vals: PVCache) -> Optional[str]:
        """A template field: from the match, else from the message."""
        if name in match:
            return match[name]
        pv = FIELD_PVS.get(name)
        if pv is None:
            if name.startswith("hdr:"):
                pv = "$hdr(%s)" % name[4:]
            elif name.startswith("pv:"):
                pv = name[3:]
            else:
                return None
        return self.ctx.cached(vals, pv)

    def _short_trace(self, app: str, key: Optional[str], prefer: Optional[str],
                     attrs: Optional[Dict[str, str]]) -> Optional[Dict[str, object]]:
        """log_decisions: json: the short trace of the placement route() is
        about to make (a dry run just before it; None when it fails: route()
        then says why)."""
        try:
            trace = self.ctx.router.explain(app, key=key, prefer=prefer, attrs=attrs)
        except (_ar.Error, AttributeError):  # AttributeError: a router without explain()
            return None
        return short_trace(trace)

    def _lookup(self, match: Dict[str, str], vals: PVCache) -> Callable[[str], Optional[str]]:
        return lambda name: self._field(name, match, vals)

    def find_app(self, vals: Optional[PVCache] = None) -> AppMatch:
        """Returns (router app, app data, exec app) or (None, None, None).
        ``vals``: the request's PV cache (each PV is read at most once)."""
        ctx = self.ctx
        s = ctx.settings
        if vals is None:
            vals = {}
        get = ctx.cached
        # X-Exec-App / X-Exec-App-Data count only from trusted networks;
        # from a caller they are ignored (and removed by _set_headers).
        # $si is read only when the request carries one of them.
        hdr_data = get(vals, self._hdr_data_pv)
        if hdr_data is not None and not self._trusted(vals):
            ctx.log("dbg", "ignoring %s from untrusted %s" % (s.header_data, get(vals, "$si")))
            hdr_data = None
        for source in s.match:
            if source == "header":
                value = get(vals, self._hdr_app_pv)
                if value and not self._trusted(vals):
                    ctx.log("dbg", "ignoring %s from untrusted %s"
                            % (s.header_app, get(vals, "$si")))
                elif value:
                    app = s.known_app(value.strip())
                    if app is None:
                        raise Refused(404, "Not Found",
                                      "X-Exec-App %r is not a configured application"
                                      % clean(value, 80))
                    return app, hdr_data, None
            elif source == "rules":
                found = self._match_rules(vals, hdr_data)
                if found is not None:
                    return found
            elif source == "ruri_user":
                value = get(vals, "$rU")
                if value:
                    # only a configured app: any other user is not an app
                    # (and never one of the router's "default" fallback)
                    app = s.known_app(value)
                    if app is not None:
                        return app, hdr_data, None
        if s.default_app:
            return s.default_app, hdr_data, None
        return None, None, None

    def _match_rules(self, vals: PVCache, hdr_data: Optional[str]) -> Optional[AppMatch]:
        """The first rule whose regex matches its field, as an AppMatch."""
        s = self.ctx.settings
        for rule in s.rules:
            if rule.field_pv is not None:
                subject = self.ctx.cached(vals, rule.field_pv) or ""
            else:
                subject, _ = render(rule.field, self._lookup({}, vals))
            m = rule.regex.search(subject)
            if not m:
                continue
            groups = {k: v for k, v in m.groupdict().items() if v is not None}
            for i, g in enumerate(m.groups(), 1):
                if g is not None:
                    groups[str(i)] = g
            look = self._lookup(groups, vals)
            app, _ = render(rule.app, look)
            if "{" in rule.app:  # built from the request: a configured app only
                known = s.known_app(app)
                if known is None:
                    raise Refused(404, "Not Found", "rule app %r is not a "
                                  "configured application" % clean(app, 80))
                app = known
            data = render(rule.data, look)[0] if rule.data is not None else None
            exec_app = render(rule.exec_app, look)[0] if rule.exec_app is not None else None
            if data is None:
                data = hdr_data
            return app, data, exec_app
        return None

    def _trusted(self, vals: PVCache) -> bool:
        """Whether the request comes from settings.trusted_sources."""
        nets = self.ctx.settings.trusted_sources
        return bool(nets) and in_networks(self.ctx.cached(vals, "$si") or "", nets)

    # ----- what goes to Asterisk ------------------------------------------------

    def _check_values(self, app: str, data: Optional[str], exec_app: Optional[str],
                      opts: AppOptions) -> None:
        """Refuses (Refused) values that may not reach Asterisk: anything
        outside [A-Za-z0-9_.-] (a comma would be a second Stasis argument)
        or longer than max_app_value.  Never cut silently."""
        s = self.ctx.settings
        value = exec_app or opts.exec_app or app
        for what, v in ((s.header_app, value), (s.header_data, data)):
            if not v:
                continue
            if len(v) > s.max_app_value:
                raise Refused(400, "Bad Request", "%s value is %d characters (max_app_value %d)"
                              % (what, len(v), s.max_app_value))
            if not SAFE_VALUE_RE.match(v):
                raise Refused(400, "Bad Request", "%s value %r has characters outside "
                              "A-Z a-z 0-9 _ . -" % (what, clean(v, 80)))

    def _set_headers(self, app: str, data: Optional[str], exec_app: Optional[str],
                     vals: PVCache, opts: AppOptions) -> None:
        """Replaces whatever X-Exec-App(-Data) the request carried with ours."""
        ksr = self.ctx.ksr
        s = self.ctx.settings
        value = exec_app or opts.exec_app or app
        for name, pv in ((s.header_app, self._hdr_app_pv), (s.header_data, self._hdr_data_pv)):
            # a header already read for this request: $hdr() is None when absent
            if pv in vals:
                present = vals[pv] is not None
            else:
                present = ksr.hdr.is_present(name) > 0
            if present:
                ksr.hdr.remove(name)
        # both values were checked by _check_values (safe characters, length)
        ksr.hdr.append("%s: %s\r\n" % (s.header_app, value))
        if data:
            ksr.hdr.append("%s: %s\r\n" % (s.header_data, data))

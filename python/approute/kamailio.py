"""Kamailio integration: handlers for app_python3.

Two ways to use it, both with the same handler object:

* native ``kamailio.cfg`` with ``python_exec("do_app_routing")`` and friends
  (see ``examples/kamailio/kamailio.cfg``);
* KEMI, ``cfgengine "python"``: the object also implements
  ``ksr_request_route`` and the failure/reply callbacks
  (see ``examples/kamailio/kamailio-kemi.cfg``).

The file given to ``modparam("app_python3", "load", ...)`` only needs::

    from approute.kamailio import mod_init

app_python3 calls ``mod_init()`` once in Kamailio's main process, before the
workers fork.  That is where the shared approute state (a POSIX shared
memory segment) is created or attached, so every worker, the CLI and a
restarted Kamailio all see the same sessions and affinities.

Settings come from the YAML file named by the environment variable
``APPROUTE_KAMAILIO_CONFIG``::

    router: router.yaml          # router config file (relative to this file)
                                 # or an inline mapping
    shared: approute             # shared memory segment name (null: private)
    headers: {app: X-Exec-App, data: X-Exec-App-Data}
    match: [header, rules, ruri_user]   # where the app name comes from
    rules:                       # R-URI user regex -> app (+ app data)
      - {ruri_user: '^conf-(?P<room>[0-9]+)$', app: conference, data: '{room}'}
    apps:                        # Kamailio-side options per router app
      conference: {key: '{from_domain}', exec_app: Conference}
    default_key: null            # affinity key template when the app has none
    default_app: null            # app when nothing matched (null: 404)

Affinity key templates combine message fields: ``{from_user}``,
``{from_domain}``, ``{to_user}``, ``{to_domain}``, ``{ruri_user}``,
``{ruri_domain}``, ``{call_id}``, ``{src_ip}``, ``{app}``, ``{app_data}``,
``{hdr:X-Tenant}`` and ``{pv:$var(x)}``; e.g. ``"{hdr:X-Tenant}/{to_user}"``.
A key whose fields are all empty means "no affinity" for that call.

Handler return codes (what ``$rc`` holds after ``python_exec``):

* ``do_app_routing``: 1 routed ($du set, headers added); -1 no node (503),
  -2 unknown application (404), -3 router state full (503), -4 bad request
  (400), -5 internal error (500).  On a negative code ``$avp(approute_code)``
  and ``$avp(approute_reason)`` hold the reply the script should send.
* ``on_failure``: 1 relayed to another node; 2 nothing to retry, let the
  best reply go upstream; -1 no node left, the script should reply 503
  (``$avp(approute_code)`` / ``$avp(approute_reason)`` are set); -5 error.
* ``on_reply``, ``on_bye``, ``on_cancel``, ``on_relay_error``, ``on_timer``
  (rtimer housekeeping: ``sweep()``): 1, or -5.

No Python exception ever escapes into Kamailio: each handler catches it,
logs one line and returns a negative code.
"""

from __future__ import annotations

import os
import re
import time
import traceback
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Tuple

try:  # only importable inside Kamailio
    import KSR as _KSR  # type: ignore
except ImportError:  # pragma: no cover - outside Kamailio
    _KSR = None

ENV_CONFIG = "APPROUTE_KAMAILIO_CONFIG"

# Return codes, see the module docstring.
OK = 1
PASS = 2
NO_NODE = -1
UNKNOWN_APP = -2
EXHAUSTED = -3
BAD_REQUEST = -4
INTERNAL = -5

#: Template fields and the Kamailio pseudo-variable each one reads.
FIELD_PVS = {
    "from_user": "$fU",
    "from_domain": "$fd",
    "from_uri": "$fu",
    "to_user": "$tU",
    "to_domain": "$td",
    "to_uri": "$tu",
    "ruri_user": "$rU",
    "ruri_domain": "$rd",
    "ruri": "$ru",
    "call_id": "$ci",
    "src_ip": "$si",
    "method": "$rm",
}
#: Fields that come from the match, not from the message.
MATCH_FIELDS = ("app", "app_data")

_TEMPLATE_RE = re.compile(r"\{([^{}]+)\}")
_MATCH_SOURCES = ("header", "rules", "ruri_user")


class SettingsError(ValueError):
    """The Kamailio-side settings are invalid."""


# --------------------------------------------------------------------------
# templates

def _check_template(tpl: str, groups: Tuple[str, ...] = (), where: str = "") -> None:
    for name in _TEMPLATE_RE.findall(tpl):
        if name in FIELD_PVS or name in MATCH_FIELDS or name in groups:
            continue
        if name.isdigit():
            continue
        if name.startswith("hdr:") and len(name) > 4:
            continue
        if name.startswith("pv:$") and len(name) > 4:
            continue
        raise SettingsError("%sunknown template field {%s}" % (where, name))


def render(tpl: str, lookup: Callable[[str], Optional[str]]) -> Tuple[str, bool]:
    """Expands ``tpl``; returns (text, any_field_non_empty)."""
    seen = [False]

    def one(m: "re.Match[str]") -> str:
        value = lookup(m.group(1))
        if value:
            seen[0] = True
            return str(value)
        return ""

    return _TEMPLATE_RE.sub(one, tpl), seen[0]


# --------------------------------------------------------------------------
# settings

class Rule:
    """Maps a message field (by default the R-URI user) to an application."""

    def __init__(self, spec: Dict[str, Any], index: int):
        where = "rules[%d]: " % index
        if not isinstance(spec, dict):
            raise SettingsError(where + "must be a mapping")
        field = None
        pattern = None
        for candidate in ("ruri_user", "to_user", "from_domain", "to_domain", "ruri_domain"):
            if candidate in spec:
                field, pattern = "{%s}" % candidate, spec[candidate]
        if "field" in spec:
            field = str(spec["field"])
            pattern = spec.get("match")
        if field is None or pattern is None:
            raise SettingsError(where + "needs ruri_user: REGEX (or field: + match:)")
        try:
            self.regex = re.compile(str(pattern))
        except re.error as e:
            raise SettingsError(where + "bad regex %r: %s" % (pattern, e))
        self.field = field
        _check_template(field, where=where)
        if "app" not in spec:
            raise SettingsError(where + "needs app:")
        groups = tuple(self.regex.groupindex)
        self.app = str(spec["app"])
        self.data = None if spec.get("data") is None else str(spec["data"])
        self.exec_app = None if spec.get("exec_app") is None else str(spec["exec_app"])
        for tpl in (self.app, self.data, self.exec_app):
            if tpl is not None:
                _check_template(tpl, groups, where)


class AppOptions:
    def __init__(self, name: str, spec: Any):
        where = "apps.%s: " % name
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise SettingsError(where + "must be a mapping")
        unknown = set(spec) - {"key", "exec_app", "data"}
        if unknown:
            raise SettingsError(where + "unknown option(s) %s" % ", ".join(sorted(unknown)))
        self.key = None if spec.get("key") is None else str(spec["key"])
        self.exec_app = None if spec.get("exec_app") is None else str(spec["exec_app"])
        self.data = None if spec.get("data") is None else str(spec["data"])
        for tpl in (self.key, self.data):
            if tpl is not None:
                _check_template(tpl, where=where)


def _load_yaml(text: str, what: str) -> Any:
    try:
        import yaml  # type: ignore
    except ImportError:  # JSON is valid YAML
        import json
        try:
            return json.loads(text)
        except ValueError as e:
            raise SettingsError("%s: PyYAML is not installed and the file is not JSON: %s" % (what, e))
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SettingsError("%s: %s" % (what, e))


class Settings:
    """Kamailio-side settings (see the module docstring)."""

    KNOWN = {"router", "shared", "headers", "match", "rules", "apps", "default_key",
             "default_app", "failure_route", "reply_route", "log_decisions",
             "health_on_timeout", "recent"}

    def __init__(self, data: Optional[Dict[str, Any]] = None, base_dir: str = "."):
        data = dict(data or {})
        unknown = set(data) - self.KNOWN
        if unknown:
            raise SettingsError("unknown setting(s): %s" % ", ".join(sorted(unknown)))
        self.base_dir = base_dir
        router = data.get("router")
        self.router_text: Optional[str] = None
        self.router_file: Optional[str] = None
        if isinstance(router, str):
            path = router if os.path.isabs(router) else os.path.join(base_dir, router)
            self.router_file = path
        elif isinstance(router, dict):
            import json  # a mapping is dumped as JSON, which is YAML
            self.router_text = json.dumps(router)
        elif router is not None:
            raise SettingsError("router: must be a file path or a mapping")
        shared = data.get("shared", "approute")
        self.shared: Optional[str] = None if shared in (None, "", False) else str(shared)
        headers = data.get("headers") or {}
        if not isinstance(headers, dict):
            raise SettingsError("headers: must be a mapping")
        self.header_app = str(headers.get("app", "X-Exec-App"))
        self.header_data = str(headers.get("data", "X-Exec-App-Data"))
        for h in (self.header_app, self.header_data):
            if not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", h):
                raise SettingsError("headers: %r is not a valid header name" % h)
        match = data.get("match", ["header", "rules", "ruri_user"])
        if isinstance(match, str):
            match = [match]
        for m in match:
            if m not in _MATCH_SOURCES:
                raise SettingsError("match: unknown source %r (use %s)" % (m, ", ".join(_MATCH_SOURCES)))
        self.match: List[str] = list(match)
        self.rules = [Rule(r, i) for i, r in enumerate(data.get("rules") or [])]
        apps = data.get("apps") or {}
        if not isinstance(apps, dict):
            raise SettingsError("apps: must be a mapping")
        self.apps = {str(k): AppOptions(str(k), v) for k, v in apps.items()}
        self.default_key = None if data.get("default_key") is None else str(data["default_key"])
        if self.default_key is not None:
            _check_template(self.default_key, where="default_key: ")
        self.default_app = None if data.get("default_app") is None else str(data["default_app"])
        self.failure_route = str(data.get("failure_route", "APPROUTE_FAILURE"))
        self.reply_route = str(data.get("reply_route", "APPROUTE_REPLY"))
        self.log_decisions = bool(data.get("log_decisions", True))
        hot = data.get("health_on_timeout", None)
        if hot not in (None, "none", "suspect", "down"):
            raise SettingsError("health_on_timeout: use none, suspect or down")
        self.health_on_timeout = None if hot in (None, "none") else hot
        self.recent = int(data.get("recent", 0))
        # exec_app value -> router app, for the header and ruri_user sources
        self._by_exec = {o.exec_app.lower(): n for n, o in self.apps.items() if o.exec_app}

    @classmethod
    def from_file(cls, path: str) -> "Settings":
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
        data = _load_yaml(text, path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SettingsError("%s: top level must be a mapping" % path)
        return cls(data, os.path.dirname(os.path.abspath(path)))

    @classmethod
    def from_env(cls) -> "Settings":
        path = os.environ.get(ENV_CONFIG)
        if not path:
            raise SettingsError("environment variable %s is not set" % ENV_CONFIG)
        return cls.from_file(path)

    def app_name(self, value: str) -> str:
        """Maps an X-Exec-App style value back to a router app name."""
        return self._by_exec.get(value.lower(), value)

    def options(self, app: str) -> AppOptions:
        return self.apps.get(app) or self.apps.get("default") or AppOptions(app, {})

    def make_router(self):
        import approute
        if self.router_text is not None:
            return approute.Router.from_yaml(self.router_text, shared=self.shared)
        if self.router_file is not None:
            return approute.Router.from_file(self.router_file, shared=self.shared)
        if self.shared is None:
            raise SettingsError("router: is required when shared: is not set")
        # no config here: use the state of a router that is already running
        return approute.Router.attach(self.shared)


# --------------------------------------------------------------------------
# the handler

def _clean(text: Any, limit: int = 120) -> str:
    """One line of printable text (log lines, reason phrases, header values)."""
    s = "".join(ch if 32 <= ord(ch) < 127 else " " for ch in str(text))
    return s[:limit]


class Handler:
    """The object ``mod_init()`` hands to app_python3."""

    def __init__(self, settings: Settings, router: Any = None, ksr: Any = None):
        self.settings = settings
        self.router = router
        self.ksr = ksr if ksr is not None else _KSR
        self.rank = None
        self.recent: deque = deque(maxlen=max(settings.recent, 1))

    # ----- helpers -------------------------------------------------------

    def _log(self, level: str, text: str) -> None:
        ksr = self.ksr
        line = "approute: " + _clean(text, 400) + "\n"
        if ksr is None:
            return
        try:
            if level == "err":
                ksr.err(line)
            elif level == "warn":
                ksr.warn(line)
            elif level == "dbg":
                ksr.dbg(line)
            else:
                ksr.info(line)
        except Exception:  # logging must never break routing
            pass

    def _pv(self, name: str) -> Optional[str]:
        v = self.ksr.pv.get(name)
        if v is None:
            return None
        return str(v)

    def _set_avp(self, name: str, value: Any) -> None:
        self.ksr.pv.sets("$avp(%s)" % name, _clean(value))

    def _fail(self, sip_code: int, reason: str, rc: int) -> int:
        self.ksr.pv.seti("$avp(approute_code)", int(sip_code))
        self._set_avp("approute_reason", reason)
        return rc

    def _field(self, name: str, match: Dict[str, str]) -> Optional[str]:
        if name in match:
            return match[name]
        pv = FIELD_PVS.get(name)
        if pv is not None:
            return self._pv(pv)
        if name.startswith("hdr:"):
            return self._pv("$hdr(%s)" % name[4:])
        if name.startswith("pv:"):
            return self._pv(name[3:])
        return None

    def _lookup(self, match: Dict[str, str]) -> Callable[[str], Optional[str]]:
        return lambda name: self._field(name, match)

    def _find_app(self) -> Tuple[Optional[str], Optional[str], Optional[str]]:
        """Returns (router app, app data, exec app) or (None, None, None)."""
        s = self.settings
        for source in s.match:
            if source == "header":
                value = self._pv("$hdr(%s)" % s.header_app)
                if value:
                    return s.app_name(value.strip()), self._pv("$hdr(%s)" % s.header_data), None
            elif source == "rules":
                for rule in s.rules:
                    subject, _ = render(rule.field, self._lookup({}))
                    m = rule.regex.search(subject)
                    if not m:
                        continue
                    groups = {k: v for k, v in m.groupdict().items() if v is not None}
                    for i, g in enumerate(m.groups(), 1):
                        if g is not None:
                            groups[str(i)] = g
                    look = self._lookup(groups)
                    app, _ = render(rule.app, look)
                    data = render(rule.data, look)[0] if rule.data is not None else None
                    exec_app = render(rule.exec_app, look)[0] if rule.exec_app is not None else None
                    if data is None:
                        data = self._pv("$hdr(%s)" % s.header_data)
                    return app, data, exec_app
            elif source == "ruri_user":
                value = self._pv("$rU")
                if value:
                    return s.app_name(value), self._pv("$hdr(%s)" % s.header_data), None
        if s.default_app:
            return s.default_app, self._pv("$hdr(%s)" % s.header_data), None
        return None, None, None

    def _set_headers(self, app: str, data: Optional[str], exec_app: Optional[str]) -> None:
        ksr = self.ksr
        s = self.settings
        value = exec_app or s.options(app).exec_app or app
        for name in (s.header_app, s.header_data):
            if ksr.hdr.is_present(name) > 0:
                ksr.hdr.remove(name)
        ksr.hdr.append("%s: %s\r\n" % (s.header_app, _clean(value, 200)))
        if data:
            ksr.hdr.append("%s: %s\r\n" % (s.header_data, _clean(data, 200)))

    def _note(self, what: str, call_id: str, d: Any, extra: str = "") -> None:
        if d is not None and getattr(d, "ok", False):
            text = "%s app=%s call_id=%s node=%s reason=%s attempt=%s%s" % (
                what, getattr(d, "app", ""), call_id, d.node_id, d.reason,
                getattr(d, "attempt", ""), extra)
        else:
            text = "%s app=%s call_id=%s node=- reason=%s detail=%s%s" % (
                what, getattr(d, "app", "") if d is not None else "", call_id,
                getattr(d, "reason", "no_node") if d is not None else "error",
                getattr(d, "detail", "") if d is not None else "", extra)
        self.recent.append((time.time(), text))
        if self.settings.log_decisions:
            self._log("info", text)

    def _guard(self, name: str, fn: Callable[[], int]) -> int:
        try:
            rc = fn()
            return INTERNAL if rc == 0 else int(rc)  # 0 would stop the script
        except Exception as e:  # never let anything escape into Kamailio
            self._log("err", "%s failed: %s: %s" % (name, type(e).__name__, e))
            try:
                self._fail(500, "Routing Error", INTERNAL)
            except Exception:
                pass
            return INTERNAL

    # ----- app_python3 entry points ---------------------------------------

    def child_init(self, rank: int) -> int:
        self.rank = rank
        return 0

    def do_app_routing(self, msg: Any = None, *args: Any) -> int:
        """Routes an initial INVITE: sets $du and the X-Exec-App headers."""
        return self._guard("do_app_routing", self._do_app_routing)

    def _do_app_routing(self) -> int:
        import approute
        if self.router is None:
            return self._fail(500, "Router Not Ready", INTERNAL)
        call_id = self._pv("$ci")
        if not call_id:
            return self._fail(400, "Missing Call-ID", BAD_REQUEST)
        app, data, exec_app = self._find_app()
        if not app:
            self._note("route", call_id, None, " (no application matched)")
            return self._fail(404, "Unknown Application", UNKNOWN_APP)
        opts = self.settings.options(app)
        match = {"app": app, "app_data": data or ""}
        look = self._lookup(match)
        key = None
        tpl = opts.key if opts.key is not None else self.settings.default_key
        if tpl is not None:
            text, nonempty = render(tpl, look)
            key = text if nonempty else None
        if data is None and opts.data is not None:
            data = render(opts.data, look)[0] or None
        attrs = {}
        for name, pv in (("from", "$fu"), ("to", "$tu"), ("ruri_user", "$rU"),
                         ("from_domain", "$fd"), ("src_ip", "$si")):
            v = self._pv(pv)
            if v:
                attrs[name] = v
        try:
            d = self.router.route(app, call_id=call_id, key=key, attrs=attrs)
        except approute.NotFoundError as e:
            self._log("info", "route app=%s call_id=%s: %s" % (app, call_id, e))
            return self._fail(404, "Unknown Application", UNKNOWN_APP)
        except approute.ResourceExhaustedError as e:
            self._log("err", "route app=%s call_id=%s: %s" % (app, call_id, e))
            return self._fail(503, "Router Full", EXHAUSTED)
        except approute.InvalidArgumentError as e:
            self._log("info", "route app=%s call_id=%s: %s" % (app, call_id, e))
            return self._fail(400, "Bad Request", BAD_REQUEST)
        self._note("route", call_id, d, " key=%s" % (key or "-"))
        if not d.ok:
            return self._fail(503, "No Node Available", NO_NODE)
        self.ksr.setdsturi(d.uri)
        self._set_headers(app, data, exec_app)
        self._set_avp("approute_node", d.node_id)
        return OK

    def on_failure(self, msg: Any = None, *args: Any) -> int:
        """Failure route: retries on another node or gives up."""
        return self._guard("on_failure", lambda: self._on_failure(self.settings.failure_route))

    def _on_failure(self, route_name: str) -> int:
        import approute
        ksr = self.ksr
        if self.router is None:
            return self._fail(500, "Router Not Ready", INTERNAL)
        call_id = self._pv("$ci") or ""
        if ksr.tm.t_is_canceled() > 0:
            self._end(call_id, "canceled")
            return PASS
        code_s = self._pv("$T_reply_code")
        try:
            code = int(code_s) if code_s else 0
        except ValueError:
            code = 0
        timeout = False
        try:
            timeout = ksr.tm.t_branch_timeout() > 0
        except Exception:
            pass
        if timeout or code == 0:
            code = 408
        failed_node = self._pv("$avp(approute_node)")
        if timeout and failed_node and self.settings.health_on_timeout:
            try:
                self.router.set_health(failed_node, self.settings.health_on_timeout)
            except approute.Error as e:
                self._log("warn", "set_health %s: %s" % (failed_node, e))
        try:
            d = self.router.retry(call_id, code=code)
        except approute.NotFoundError:
            self._log("info", "retry call_id=%s code=%d: no session" % (call_id, code))
            return PASS
        self._note("retry", call_id, d, " code=%d from=%s" % (code, failed_node or "-"))
        if not d.ok:
            if code >= 500 or code == 408:
                return self._fail(503, "No Node Available", NO_NODE)
            return PASS
        ksr.seturi(self._pv("$ru") or self._pv("$ou"))
        ksr.setdsturi(d.uri)
        self._set_avp("approute_node", d.node_id)
        ksr.tm.t_on_failure(route_name)
        if ksr.tm.t_relay() < 0:
            self._log("err", "relay to %s failed for call_id=%s" % (d.uri, call_id))
            self._end(call_id, "relay error")
            return self._fail(500, "Relay Failed", INTERNAL)
        return OK

    def on_reply(self, msg: Any = None, *args: Any) -> int:
        """2xx to the INVITE: the session is confirmed."""
        return self._guard("on_reply", self._on_reply)

    def _on_reply(self) -> int:
        import approute
        if self.router is None:
            return OK
        status = self._pv("$rs") or ""
        method = self._pv("$rm") or "INVITE"  # $rm is the CSeq method on replies
        if not status.startswith("2") or method != "INVITE":
            return OK
        call_id = self._pv("$ci") or ""
        try:
            self.router.confirm(call_id)
        except (approute.NotFoundError, approute.FailedPreconditionError) as e:
            self._log("dbg", "confirm call_id=%s: %s" % (call_id, e))
        return OK

    def _end(self, call_id: str, why: str) -> None:
        import approute
        try:
            self.router.end(call_id)
            if self.settings.log_decisions:
                self._log("info", "end call_id=%s (%s)" % (call_id, why))
        except approute.NotFoundError:
            self._log("dbg", "end call_id=%s (%s): no session" % (call_id, why))

    def on_bye(self, msg: Any = None, *args: Any) -> int:
        """BYE (either direction): the session ends."""
        return self._guard("on_bye", lambda: self._end_current("bye"))

    def on_cancel(self, msg: Any = None, *args: Any) -> int:
        """CANCEL: the session ends."""
        return self._guard("on_cancel", lambda: self._end_current("cancel"))

    def on_relay_error(self, msg: Any = None, *args: Any) -> int:
        """t_relay() failed right after routing: the session ends."""
        return self._guard("on_relay_error", lambda: self._end_current("relay error"))

    def on_timer(self, msg: Any = None, *args: Any) -> int:
        """Periodic housekeeping (rtimer): expires sessions that outlived their
        lifetime (lost BYEs) and affinities past their grace time."""
        return self._guard("on_timer", self._on_timer)

    def _on_timer(self) -> int:
        sweep = getattr(self.router, "sweep", None)
        if sweep is not None:
            n = sweep()
            if n:
                self._log("info", "sweep expired %d record(s)" % n)
        return OK

    def _end_current(self, why: str) -> int:
        if self.router is not None:
            self._end(self._pv("$ci") or "", why)
        return OK

    # ----- KEMI (cfgengine "python") --------------------------------------

    KEMI_FAILURE = "ksr_approute_failure"
    KEMI_REPLY = "ksr_approute_reply"

    def ksr_request_route(self, msg: Any = None) -> int:
        try:
            self._kemi_request()
        except Exception as e:
            self._log("err", "ksr_request_route failed: %s: %s" % (type(e).__name__, e))
            try:
                self.ksr.sl.sl_send_reply(500, "Routing Error")
            except Exception:
                pass
        return 1

    def _kemi_relay(self) -> None:
        if self.ksr.tm.t_relay() < 0:
            self.ksr.sl.sl_reply_error()

    def _kemi_request(self) -> None:
        ksr = self.ksr
        if ksr.maxfwd.process_maxfwd(10) < 0:
            ksr.sl.sl_send_reply(483, "Too Many Hops")
            return
        if ksr.sanity.sanity_check(17895, 7) < 0:
            self._log("warn", "malformed request from %s" % self._pv("$si"))
            return
        method = self._pv("$rm")
        if method == "CANCEL":
            if ksr.tm.t_check_trans() > 0:
                self.on_cancel()
                self._kemi_relay()
            return
        if method != "ACK":
            if ksr.tmx.t_precheck_trans() > 0:
                ksr.tm.t_check_trans()
                return
            if ksr.tm.t_check_trans() == 0:
                return
        if ksr.siputils.has_totag() > 0:
            if ksr.rr.loose_route() > 0:
                if method == "BYE":
                    self.on_bye()
                self._kemi_relay()
            elif method == "ACK":
                if ksr.tm.t_check_trans() > 0:
                    self._kemi_relay()
            else:
                ksr.sl.sl_send_reply(404, "Not here")
            return
        if method == "ACK":
            if ksr.tm.t_check_trans() > 0:
                self._kemi_relay()
            return
        if method == "OPTIONS" and ksr.is_myself_ruri() > 0 and not self._pv("$rU"):
            ksr.sl.sl_send_reply(200, "OK")
            return
        if method != "INVITE":
            ksr.sl.sl_send_reply(405, "Method Not Allowed")
            return
        ksr.hdr.remove("Route")
        ksr.rr.record_route()
        rc = self.do_app_routing()
        if rc < 0:
            code = int(self._pv("$avp(approute_code)") or 500)
            ksr.sl.sl_send_reply(code, self._pv("$avp(approute_reason)") or "Routing Error")
            return
        ksr.tm.t_on_failure(self.KEMI_FAILURE)
        ksr.tm.t_on_reply(self.KEMI_REPLY)
        if ksr.tm.t_relay() < 0:
            self.on_relay_error()
            ksr.sl.sl_reply_error()

    def ksr_approute_failure(self, msg: Any = None) -> int:
        rc = self._guard("on_failure", lambda: self._on_failure(self.KEMI_FAILURE))
        try:
            if rc == NO_NODE:
                self.ksr.tm.t_reply(503, self._pv("$avp(approute_reason)") or "No Node Available")
            elif rc < 0:
                self.ksr.tm.t_reply(500, "Routing Error")
        except Exception as e:
            self._log("err", "failure reply: %s: %s" % (type(e).__name__, e))
        return 1

    def ksr_approute_reply(self, msg: Any = None) -> int:
        self.on_reply()
        return 1

    def ksr_approute_timer(self, msg: Any = None) -> int:
        self.on_timer()
        return 1

    def ksr_reply_route(self, msg: Any = None) -> int:
        return 1

    def ksr_onsend_route(self, msg: Any = None) -> int:
        return 1


# --------------------------------------------------------------------------
# module entry points

_handler: Optional[Handler] = None


def create_handler(settings: Optional[Settings] = None, ksr: Any = None) -> Handler:
    """Loads settings, creates or attaches the router, returns the handler."""
    settings = settings or Settings.from_env()
    router = settings.make_router()
    return Handler(settings, router, ksr)


def mod_init() -> Optional[Handler]:
    """app_python3's module init hook (runs in Kamailio's main process).

    On a configuration error it logs one line and returns None, which makes
    Kamailio refuse to start rather than run without a router.
    """
    global _handler
    try:
        _handler = create_handler()
        h = _handler
        where = ("segment %s" % h.settings.shared) if h.settings.shared else "private state"
        h._log("info", "router ready (%s, pid %d)" % (where, os.getpid()))
        return h
    except Exception as e:
        line = "approute: mod_init failed: %s: %s\n" % (type(e).__name__, _clean(e, 400))
        if _KSR is not None:
            try:
                _KSR.err(line)
            except Exception:
                pass
        else:  # pragma: no cover
            traceback.print_exc()
        return None

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
    trusted_sources: []          # CIDRs whose X-Exec-App(-Data) are believed;
                                 # from anyone else both are removed
    max_app_value: 64            # X-Exec-App(-Data) values: [A-Za-z0-9_.-]{1,64}
    max_ruri_user: 128           # longer R-URI users: 414
    rules:                       # R-URI user regex -> app (+ app data)
      - {ruri_user: '^conf-(?P<room>[0-9]+)$', app: conference, data: '{room}'}
    apps:                        # Kamailio-side options per router app
      conference: {key: '{from_domain}', exec_app: Conference}
    default_key: null            # affinity key template when the app has none
    default_app: null            # app when nothing matched (null: 404)
    log_decisions: true          # one info line per decision / retry / end
    attrs: auto                  # route() attrs only for apps whose strategy
                                 # may use them (hash by from/to/..., Python
                                 # strategies); always: on every call
    report_results: true         # final replies -> router.report_result()
    publish:                     # status reports (PUBLISH, event approute-status)
      default_expires: 3600      # lease asked for when a PUBLISH has no Expires
      max_body: 8192             # larger bodies: 413, stateless
      allow_sources: null        # CIDRs; null: status.allow_sources of the router
    probe:                       # active health probes (SIP OPTIONS, uac + rtimer)
      interval: 5                # seconds between probe rounds (0: no probes)
      timeout: 1.0               # seconds; no final answer within it is code 0
      from: sip:approute-probe@localhost.invalid
      states: [active, draining] # admin states of the nodes that are probed

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
* ``on_reply``, ``on_bye_reply``, ``on_cancel``, ``on_relay_error``,
  ``on_timer`` (rtimer housekeeping: ``sweep()``): 1, or -5.
* ``on_bye``: 1 when the node itself sent the BYE (the session ended), 2
  when the script must arm the BYE's reply route (``on_bye_reply`` ends
  the session on a 2xx from a node: only the node holding the dialog
  answers a BYE 2xx), -5.  A BYE relayed
  anywhere else ends nothing.
* ``on_publish``: first refuses statelessly (``sl_send_reply``, no
  transaction, nothing kept) a source outside the allowed networks (403),
  another event (489), a body over ``publish.max_body`` (413) or not JSON
  (415); then creates the transaction and replies (200 with SIP-ETag and
  Expires, 400, 403, 412, 500).  Reason phrases are the plain ones of each
  code; the detail goes to the log.  Returns 1, or -5 when even the error
  reply failed.
* ``do_app_routing`` refuses, with a log line naming what is wrong and a
  plain answer, X-Exec-App naming an app that is not configured (404),
  values outside [A-Za-z0-9_.-] or over ``max_app_value`` (400) and R-URI
  users over ``max_ruri_user`` (414); nothing is ever cut silently.
* ``on_probe_timer`` (rtimer, every second: sends a round of OPTIONS with
  ``uac_req_send()`` when ``probe.interval`` has passed), ``on_probe_request``
  (``event_route[tm:local-request]``: sets the probe's final response timeout
  with ``t_set_fr``), ``on_probe_reply`` (``event_route[uac:reply]``: feeds
  ``router.report_probe(node, code, rtt_ms)``, code 0 for no answer): 1, or -5.

Final replies of the nodes are also fed to ``router.report_result(node, code,
latency_ms)`` (passive outlier detection): 2xx from ``on_reply``, negative
replies and timeouts (code 0) from ``on_failure``.  A local failure (no
reply and no timeout: the proxy could not send; ``uac_req_send`` failing;
tm's own 477/500 for a probe) is logged and never counted against the node;
whether the node replied is ``$avp(approute_replied)``, set by the reply
route for every reply (``on_reply`` in KEMI, one line in kamailio.cfg);
``report_results: false``
turns that off (and the ``$avp(approute_t0)`` send-time AVP with it).
``$avp(approute_t0)`` holds "-" once a 2xx has been reported (retransmissions
are reported once).

No Python exception ever escapes into Kamailio: each handler catches it,
logs one line and returns a negative code.
"""

from __future__ import annotations

import logging
import os
import re
import time
import traceback
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Tuple

import approute as _ar  # the package this module belongs to (errors, Router)

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
#: route() attributes (hash inputs) and the pseudo-variable of each one.
ATTR_PVS = (("from", "$fu"), ("to", "$tu"), ("ruri_user", "$rU"),
            ("from_domain", "$fd"), ("src_ip", "$si"))
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
        # "{ruri_user}" and the like: the subject is one PV, read directly
        m = re.match(r"^\{([a-z_]+)\}$", field)
        self.field_pv = FIELD_PVS.get(m.group(1)) if m else None
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


def _number(spec: Dict[str, Any], key: str, default: float, where: str,
            minimum: float = 0.0) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError("%s%s: must be a number" % (where, key))
    if value < minimum:
        raise SettingsError("%s%s: must be >= %s" % (where, key, minimum))
    return float(value)


def _networks(raw: Any, where: str) -> Tuple[Any, ...]:
    """A list of CIDRs (or addresses) as ipaddress networks."""
    import ipaddress
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise SettingsError("%s: must be a list of networks (CIDRs)" % where)
    out = []
    for item in raw:
        try:
            out.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError as e:
            raise SettingsError("%s: %r is not a network: %s" % (where, item, e))
    return tuple(out)


def _in_networks(addr: str, nets: Tuple[Any, ...]) -> bool:
    """Whether the address ``addr`` (text, as $si gives it) is in ``nets``."""
    if not nets or not addr:
        return False
    import ipaddress
    try:
        ip = ipaddress.ip_address(addr.strip("[]"))
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in nets)


#: Characters a value sent to Asterisk (X-Exec-App, X-Exec-App-Data) may
#: hold: a Stasis application name and its argument are split on commas and
#: read by the dialplan, so nothing but these.
SAFE_VALUE_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

#: The SIP event package of the status reports (docs/status-package.md).
STATUS_EVENT = "approute-status"
#: Header carrying the report's credential (see approute.sign_report).
AUTH_HEADER = "X-Approute-Auth"
#: Header that marks the proxy's own OPTIONS probes.
PROBE_HEADER = "X-Approute-Probe"
_NODE_STATES = ("active", "draining", "disabled")


class PublishOptions:
    """``publish:`` -- how PUBLISH requests of the status package are read."""

    def __init__(self, spec: Any):
        where = "publish."
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise SettingsError("publish: must be a mapping")
        unknown = set(spec) - {"default_expires", "max_body", "allow_sources"}
        if unknown:
            raise SettingsError("publish: unknown option(s) %s" % ", ".join(sorted(unknown)))
        self.default_expires = int(_number(spec, "default_expires", 3600, where))
        # a larger body is refused statelessly (413) before anything is kept
        self.max_body = int(_number(spec, "max_body", 8192, where, minimum=256))
        if self.max_body > 65000:
            raise SettingsError("publish.max_body: at most 65000 (bytes)")
        # who may PUBLISH, checked before the transaction is created; None:
        # status.allow_sources of the router config (Settings fills it in)
        raw = spec.get("allow_sources")
        self.allow_sources: Optional[Tuple[Any, ...]] = (
            None if raw is None else _networks(raw, "publish.allow_sources"))


class ProbeOptions:
    """``probe:`` -- active OPTIONS probes sent from Kamailio (uac + rtimer)."""

    def __init__(self, spec: Any):
        where = "probe."
        if spec is None:
            spec = {"interval": 0}
        if not isinstance(spec, dict):
            raise SettingsError("probe: must be a mapping")
        unknown = set(spec) - {"interval", "timeout", "from", "states"}
        if unknown:
            raise SettingsError("probe: unknown option(s) %s" % ", ".join(sorted(unknown)))
        self.interval = _number(spec, "interval", 5, where)
        self.timeout = _number(spec, "timeout", 1.0, where, minimum=0.05)
        if self.interval and self.timeout > self.interval:
            raise SettingsError("probe.timeout: must not exceed probe.interval")
        self.from_uri = str(spec.get("from", "sip:approute-probe@localhost.invalid"))
        if not re.match(r"^sips?:[^\s<>\"]+$", self.from_uri):
            raise SettingsError("probe.from: %r is not a SIP URI" % self.from_uri)
        states = spec.get("states", ["active", "draining"])
        if isinstance(states, str):
            states = [states]
        if not isinstance(states, list) or not all(s in _NODE_STATES for s in states):
            raise SettingsError("probe.states: a list of %s" % ", ".join(_NODE_STATES))
        self.states = tuple(states)

    @property
    def enabled(self) -> bool:
        return self.interval > 0


#: Built-in strategies that never look at the request attributes.
_NO_ATTR_STRATEGIES = frozenset((
    "round_robin", "weighted_round_robin", "random", "weighted_random", "least_loaded",
    "p2c", "latency", "priority", "utilization"))
#: hash / consistent_bounded inputs that are not request attributes.
_NO_ATTR_INPUTS = ("call_id", "key")


def _strategy_reads_attrs(app_spec: Any) -> bool:
    """Whether an app of the router config may use route()'s attrs: hash or
    consistent_bounded by from / to / ruri_user / attr:NAME, and any strategy
    that is not built in (Python strategies see request.attrs)."""
    if not isinstance(app_spec, dict):
        return True
    st = app_spec.get("strategy", "round_robin")
    params: Dict[str, Any] = {}
    if isinstance(st, dict):
        params = st
        st = st.get("name")
    if not isinstance(st, str):
        return True
    if st in _NO_ATTR_STRATEGIES:
        return False
    if st == "hash":
        return params.get("by", "call_id") not in _NO_ATTR_INPUTS
    if st == "consistent_bounded":
        return params.get("by", "key") not in _NO_ATTR_INPUTS
    return True


#: Options of an app that has none (and no ``default`` entry): all unset.
_NO_OPTIONS = AppOptions("default", {})


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
             "health_on_timeout", "recent", "publish", "probe", "attrs",
             "report_results", "trusted_sources", "max_ruri_user", "max_app_value"}

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
        attrs = data.get("attrs", "auto")
        if attrs not in ("auto", "always"):
            raise SettingsError("attrs: use auto or always")
        self.attrs = str(attrs)
        rr = data.get("report_results", True)
        if not isinstance(rr, bool):
            raise SettingsError("report_results: must be true or false")
        self.report_results = rr
        self.publish = PublishOptions(data.get("publish"))
        self.probe = ProbeOptions(data.get("probe"))
        # where X-Exec-App / X-Exec-App-Data of a request are believed;
        # from anyone else they are removed (the caller cannot choose)
        self.trusted_sources = _networks(data.get("trusted_sources") or [], "trusted_sources")
        self.max_ruri_user = int(_number(data, "max_ruri_user", 128, "", minimum=1))
        self.max_app_value = int(_number(data, "max_app_value", 64, "", minimum=1))
        for name, o in self.apps.items():
            if o.exec_app and not SAFE_VALUE_RE.match(o.exec_app):
                raise SettingsError("apps.%s: exec_app %r may only hold A-Z a-z 0-9 _ . -"
                                    % (name, o.exec_app))
        if self.default_app is not None and not SAFE_VALUE_RE.match(self.default_app):
            raise SettingsError("default_app: %r may only hold A-Z a-z 0-9 _ . -"
                                % self.default_app)
        # the router config as this handler loads it (None: attached)
        router_cfg = self._router_config()
        router_apps = router_cfg.get("apps") if isinstance(router_cfg, dict) else None
        #: the applications a request may name (header / R-URI user): the
        #: router's apps (not its fallback "default") and those listed here
        self.known_apps = set(self.apps) | (set(str(a) for a in router_apps)
                                            if isinstance(router_apps, dict) else set())
        self.known_apps.discard("default")
        if self.publish.allow_sources is None and isinstance(router_cfg, dict):
            # no status.allow_sources: the core refuses every report, so do we
            status = router_cfg.get("status")
            raw = status.get("allow_sources") if isinstance(status, dict) else None
            self.publish.allow_sources = _networks(raw or [], "router status.allow_sources")
        # exec_app value -> router app, for the header and ruri_user sources
        self._by_exec = {o.exec_app.lower(): n for n, o in self.apps.items() if o.exec_app}
        #: why PUBLISH sources cannot be checked before the transaction, if so
        self.publish_sources_unknown = self.publish.allow_sources is None

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

    def known_app(self, value: str) -> Optional[str]:
        """The configured app a request names (its name or its exec_app, in
        any case), or None: a request never makes up an application."""
        name = self._by_exec.get(value.lower())
        if name is not None:
            return name
        if value in self.known_apps:
            return value
        low = value.lower()
        for a in self.known_apps:
            if a.lower() == low:
                return a
        return None

    def _router_config(self) -> Optional[Dict[str, Any]]:
        """The router config as a mapping, when this handler loads one."""
        try:
            if self.router_text is not None:
                cfg = _load_yaml(self.router_text, "router")
            elif self.router_file is not None:
                with open(self.router_file, "r", encoding="utf-8") as f:
                    cfg = _load_yaml(f.read(), self.router_file)
            else:
                return None
        except (OSError, SettingsError):
            return None  # make_router() reports it
        return cfg if isinstance(cfg, dict) else None

    def options(self, app: str) -> AppOptions:
        return self.apps.get(app) or self.apps.get("default") or _NO_OPTIONS

    def apps_needing_attrs(self) -> Optional[Dict[str, bool]]:
        """Router app -> whether its strategy may read the route() attributes
        ("from", "to", "ruri_user", "from_domain", "src_ip"), from the router
        config this handler loads; None when that config is not known here
        (attach to a running router) or ``attrs: always``: then every call
        reads them."""
        if self.attrs == "always":
            return None
        cfg = self._router_config()
        apps = cfg.get("apps") if cfg is not None else None
        if not isinstance(apps, dict):
            return None  # unknown or unreadable here: read them on every call
        return {str(name): _strategy_reads_attrs(spec) for name, spec in apps.items()}

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

_UNPRINTABLE_RE = re.compile(r"[^\x20-\x7e]")


def _clean(text: Any, limit: int = 120) -> str:
    """One line of printable text (log lines, reason phrases, header values):
    at most ``limit`` characters, each one outside ASCII 32..126 replaced by
    a space."""
    s = str(text)[:limit]
    if s.isascii() and s.isprintable():  # the usual case: nothing to replace
        return s
    return _UNPRINTABLE_RE.sub(" ", s)


# Characters a Reason-Phrase may not carry as such (RFC 3261 section 25.1:
# reserved / unreserved / escaped / UTF8 / SP / HTAB), and what replaces them.
_REASON_MAP = {'"': "'", "<": "(", ">": ")", "[": "(", "]": ")", "{": "(", "}": ")",
               "#": " ", "%": " ", "\\": "/", "^": " ", "`": "'", "|": "/"}
_DEFAULT_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 412: "Conditional Request Failed",
                    413: "Request Entity Too Large", 414: "Request-URI Too Long",
                    415: "Unsupported Media Type", 423: "Interval Too Brief", 489: "Bad Event",
                    500: "Server Internal Error", 503: "Service Unavailable"}
_TOKEN_RE = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")


def reason_phrase(text: Any, code: int = 0, limit: int = 100) -> str:
    """A SIP Reason-Phrase from free text: one line, no characters the
    grammar forbids, at most ``limit`` characters; the standard phrase of
    ``code`` when nothing is left."""
    s = _clean(text if text is not None else "", 400)
    s = "".join(_REASON_MAP.get(ch, ch) for ch in s)
    s = " ".join(s.split())[:limit].strip()
    return s or _DEFAULT_REASONS.get(int(code), "Error")


def _etag_value(etag: Any) -> Optional[str]:
    """An entity tag usable as a header value (a SIP token), or None."""
    s = str(etag or "").strip()
    return s if s and len(s) <= 128 and _TOKEN_RE.match(s) else None


_URI_HOST_RE = re.compile(r"^(sips?):(?:[^@;>]*@)?(\[[^\]]+\]|[^:;>?]+)(?::(\d+))?")
_resolved: Dict[str, List[str]] = {}


def _uri_addrs(uri: str) -> List[Tuple[str, int]]:
    """(ip, port) pairs a node URI stands for (a host name is resolved once
    per process; port 5060, or 5061 for sips, when none is given)."""
    m = _URI_HOST_RE.match(uri.strip())
    if not m:
        return []
    host = m.group(2).strip("[]")
    port = int(m.group(3) or (5061 if m.group(1) == "sips" else 5060))
    ips = _resolved.get(host)
    if ips is None:
        import ipaddress
        try:
            ips = [str(ipaddress.ip_address(host))]
        except ValueError:
            import socket
            try:
                ips = sorted({ai[4][0] for ai in socket.getaddrinfo(host, port)})
            except OSError:
                ips = []
        _resolved[host] = ips
    return [(ip, port) for ip in ips]


class _Refused(Exception):
    """A request refused with a plain SIP answer; ``detail`` goes to the log."""

    def __init__(self, code: int, reason: str, detail: str):
        super().__init__(detail)
        self.code, self.reason, self.detail = code, reason, detail


def _check_utf8(name: str, v: str) -> None:
    """Refuses a value that cannot be UTF-8 (a lone surrogate, as a
    ``surrogateescape`` decoding of bad bytes leaves): the core takes
    UTF-8 only, and such a value is a malformed request, not a crash."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused(400, "Bad Request", "%s is not valid UTF-8" % name) from None


class Handler:
    """The object ``mod_init()`` hands to app_python3."""

    def __init__(self, settings: Settings, router: Any = None, ksr: Any = None):
        self.settings = settings
        self.router = router
        self.ksr = ksr if ksr is not None else _KSR
        self.rank = None
        self.recent: deque = deque(maxlen=max(settings.recent, 1))
        self._last_probe_round = 0.0   # per process: only the rtimer process probes
        self._warned: set = set()
        #: refusals counted by this process (the core counts what it sees)
        self.counters: Dict[str, int] = {}
        self._node_addrs: Dict[Tuple[str, int], str] = {}  # (ip, port) -> node id
        self._node_addrs_at = 0.0
        self._last_log: Dict[str, float] = {}
        self._skipped: Dict[str, int] = {}
        # per-call constants, computed once
        self._hdr_app_pv = "$hdr(%s)" % settings.header_app
        self._hdr_data_pv = "$hdr(%s)" % settings.header_data
        # decision lines are only built when they are logged or kept
        self._notes = bool(settings.log_decisions or settings.recent > 0)
        # app -> reads the route() attributes (None: always read them); an
        # app the router does not list is routed as its "default" app
        self._attr_apps = settings.apps_needing_attrs()
        if self._attr_apps is not None:
            self._attr_other = self._attr_apps.get("default", True)
        if settings.publish_sources_unknown:
            self._warn_once("publish_sources", "publish: the router config is not loaded "
                            "here (attached), so PUBLISH sources are checked only by the "
                            "core, after the transaction exists; set publish.allow_sources "
                            "to refuse outsiders statelessly")

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
        try:
            v = self.ksr.pv.get(name)
        except UnicodeError:  # app_python3 could not decode the bytes
            raise _Refused(400, "Bad Request", "%s is not valid UTF-8" % name) from None
        if v is None:
            return None
        v = str(v)
        if not v.isascii():
            _check_utf8(name, v)
        return v

    def _set_avp(self, name: str, value: Any) -> None:
        self.ksr.pv.sets("$avp(%s)" % name, _clean(value))

    def _fail(self, sip_code: int, reason: str, rc: int) -> int:
        self.ksr.pv.seti("$avp(approute_code)", int(sip_code))
        self._set_avp("approute_reason", reason)
        return rc

    def _cached(self, vals: Dict[str, Optional[str]], pv: str) -> Optional[str]:
        """A PV of the current message, read once per request (``vals``)."""
        if pv in vals:
            return vals[pv]
        v = self._pv(pv)
        vals[pv] = v
        return v

    def _field(self, name: str, match: Dict[str, str],
               vals: Optional[Dict[str, Optional[str]]] = None) -> Optional[str]:
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
        if vals is None:
            return self._pv(pv)
        return self._cached(vals, pv)

    def _lookup(self, match: Dict[str, str],
                vals: Optional[Dict[str, Optional[str]]] = None) -> Callable[[str], Optional[str]]:
        return lambda name: self._field(name, match, vals)

    def _find_app(self, vals: Optional[Dict[str, Optional[str]]] = None
                  ) -> Tuple[Optional[str], Optional[str], Optional[str]]:
        """Returns (router app, app data, exec app) or (None, None, None).
        ``vals``: the request's PV cache (each PV is read at most once)."""
        s = self.settings
        if vals is None:
            vals = {}
        get = self._cached
        # X-Exec-App / X-Exec-App-Data count only from trusted networks;
        # from a caller they are ignored (and removed by _set_headers).
        # $si is read only when the request carries one of them.
        hdr_data = get(vals, self._hdr_data_pv)
        if hdr_data is not None and not self._trusted(vals):
            self._log("dbg", "ignoring %s from untrusted %s" % (s.header_data, get(vals, "$si")))
            hdr_data = None
        for source in s.match:
            if source == "header":
                value = get(vals, self._hdr_app_pv)
                if value and not self._trusted(vals):
                    self._log("dbg", "ignoring %s from untrusted %s"
                              % (s.header_app, get(vals, "$si")))
                elif value:
                    app = s.known_app(value.strip())
                    if app is None:
                        raise _Refused(404, "Not Found",
                                       "X-Exec-App %r is not a configured application"
                                       % _clean(value, 80))
                    return app, hdr_data, None
            elif source == "rules":
                for rule in s.rules:
                    if rule.field_pv is not None:
                        subject = get(vals, rule.field_pv) or ""
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
                            raise _Refused(404, "Not Found", "rule app %r is not a "
                                           "configured application" % _clean(app, 80))
                        app = known
                    data = render(rule.data, look)[0] if rule.data is not None else None
                    exec_app = render(rule.exec_app, look)[0] if rule.exec_app is not None else None
                    if data is None:
                        data = hdr_data
                    return app, data, exec_app
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

    def _trusted(self, vals: Dict[str, Optional[str]]) -> bool:
        """Whether the request comes from settings.trusted_sources."""
        nets = self.settings.trusted_sources
        return bool(nets) and _in_networks(self._cached(vals, "$si") or "", nets)

    def _set_headers(self, app: str, data: Optional[str], exec_app: Optional[str],
                     vals: Optional[Dict[str, Optional[str]]] = None,
                     opts: Optional[AppOptions] = None) -> None:
        ksr = self.ksr
        s = self.settings
        value = exec_app or (opts or s.options(app)).exec_app or app
        for name, pv in ((s.header_app, self._hdr_app_pv), (s.header_data, self._hdr_data_pv)):
            # a header already read for this request: $hdr() is None when absent
            if vals is not None and pv in vals:
                present = vals[pv] is not None
            else:
                present = ksr.hdr.is_present(name) > 0
            if present:
                ksr.hdr.remove(name)
        # both values were checked by _check_values (safe characters, length)
        ksr.hdr.append("%s: %s\r\n" % (s.header_app, value))
        if data:
            ksr.hdr.append("%s: %s\r\n" % (s.header_data, data))

    def _check_values(self, app: str, data: Optional[str], exec_app: Optional[str],
                      opts: AppOptions) -> None:
        """Refuses (_Refused) values that may not reach Asterisk: anything
        outside [A-Za-z0-9_.-] (a comma would be a second Stasis argument)
        or longer than max_app_value.  Never cut silently."""
        s = self.settings
        value = exec_app or opts.exec_app or app
        for what, v in ((s.header_app, value), (s.header_data, data)):
            if not v:
                continue
            if len(v) > s.max_app_value:
                raise _Refused(400, "Bad Request", "%s value is %d characters (max_app_value %d)"
                               % (what, len(v), s.max_app_value))
            if not SAFE_VALUE_RE.match(v):
                raise _Refused(400, "Bad Request", "%s value %r has characters outside "
                               "A-Z a-z 0-9 _ . -" % (what, _clean(v, 80)))

    def _note(self, what: str, call_id: str, d: Any, extra: str = "") -> None:
        if not self._notes:  # neither logged nor kept: not even formatted
            return
        if d is not None and getattr(d, "ok", False):
            text = "%s app=%s call_id=%s node=%s reason=%s attempt=%s%s" % (
                what, getattr(d, "app", ""), call_id, d.node_id, d.reason,
                getattr(d, "attempt", ""), extra)
        else:
            text = "%s app=%s call_id=%s node=- reason=%s detail=%s%s" % (
                what, getattr(d, "app", "") if d is not None else "", call_id,
                getattr(d, "reason", "no_node") if d is not None else "error",
                getattr(d, "detail", "") if d is not None else "", extra)
        if self.settings.recent > 0:
            self.recent.append((time.time(), text))
        if self.settings.log_decisions:
            self._log("info", text)

    def _guard(self, name: str, fn: Callable[[], int]) -> int:
        try:
            rc = fn()
            return INTERNAL if rc == 0 else int(rc)  # 0 would stop the script
        except Exception as e:  # never let anything escape into Kamailio
            return self._crashed(name, e)

    def _crashed(self, name: str, e: BaseException) -> int:
        """An entry point raised: one log line, the 500 AVPs, INTERNAL.  A
        refusal (a malformed value met outside do_app_routing's own checks)
        is the caller's fault, not ours: it is answered as such."""
        if isinstance(e, _Refused):
            try:
                return self._refused(e, None, None)
            except Exception:
                return BAD_REQUEST
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
        # _guard() inlined for the three per-call entry points (a frame less)
        try:
            return self._do_app_routing() or INTERNAL  # 0 would stop the script
        except Exception as e:  # never let anything escape into Kamailio
            return self._crashed("do_app_routing", e)

    def _do_app_routing(self) -> int:
        if self.router is None:
            return self._fail(500, "Router Not Ready", INTERNAL)
        vals: Dict[str, Optional[str]] = {}  # each PV read at most once per request
        get = self._cached
        call_id = None
        try:
            call_id = get(vals, "$ci")
            if not call_id:
                return self._fail(400, "Missing Call-ID", BAD_REQUEST)
            return self._route_checked(vals, call_id)
        except _Refused as r:
            return self._refused(r, call_id, vals.get("$si"))

    def _refused(self, r: "_Refused", call_id: Optional[str], src: Optional[str]) -> int:
        """A request refused by a check: one rate-limited log line with the
        detail, the plain answer's AVPs, and the matching return code."""
        self._log_limited("refused_%d" % r.code, "refused call_id=%s src=%s: %d %s" % (
            _clean(call_id or "-", 80), src or "-", r.code, r.detail))
        rc = UNKNOWN_APP if r.code == 404 else BAD_REQUEST
        return self._fail(r.code, r.reason, rc)

    def _route_checked(self, vals: Dict[str, Optional[str]], call_id: str) -> int:
        get = self._cached
        ruser = get(vals, "$rU") or ""
        if len(ruser) > self.settings.max_ruri_user:
            raise _Refused(414, "Request-URI Too Long", "R-URI user is %d characters "
                           "(max_ruri_user %d)" % (len(ruser), self.settings.max_ruri_user))
        app, data, exec_app = self._find_app(vals)
        if not app:
            if self._notes:
                self._note("route", call_id, None, " (no application matched)")
            return self._fail(404, "Not Found", UNKNOWN_APP)
        s = self.settings
        opts = s.options(app)
        key = None
        tpl = opts.key if opts.key is not None else s.default_key
        if tpl is not None or (data is None and opts.data is not None):
            look = self._lookup({"app": app, "app_data": data or ""}, vals)
            if tpl is not None:
                text, nonempty = render(tpl, look)
                key = text if nonempty else None
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
        try:
            d = self.router.route(app, call_id=call_id, key=key, attrs=attrs)
        except _ar.NotFoundError as e:
            self._log("info", "route app=%s call_id=%s: %s" % (app, call_id, e))
            return self._fail(404, "Not Found", UNKNOWN_APP)
        except _ar.ResourceExhaustedError as e:
            self._log("err", "route app=%s call_id=%s: %s" % (app, call_id, e))
            return self._fail(503, "Router Full", EXHAUSTED)
        except _ar.InvalidArgumentError as e:
            self._log("info", "route app=%s call_id=%s: %s" % (app, call_id, e))
            return self._fail(400, "Bad Request", BAD_REQUEST)
        if self._notes:
            self._note("route", call_id, d, " key=%s" % (key or "-"))
        if not d.ok:
            return self._fail(503, "No Node Available", NO_NODE)
        ksr = self.ksr
        ksr.setdsturi(d.uri)
        self._set_headers(app, data, exec_app, vals, opts)
        pv = ksr.pv
        pv.sets("$avp(approute_node)", _clean(d.node_id))
        if s.report_results:  # _mark_sent()
            pv.sets("$avp(approute_t0)", "%.6f" % time.time())
        return OK

    def on_failure(self, msg: Any = None, *args: Any) -> int:
        """Failure route: retries on another node or gives up."""
        return self._guard("on_failure", lambda: self._on_failure(self.settings.failure_route))

    def _on_failure(self, route_name: str) -> int:
        approute = _ar
        ksr = self.ksr
        if self.router is None:
            return self._fail(500, "Router Not Ready", INTERNAL)
        call_id = self._pv("$ci") or ""
        if ksr.tm.t_is_canceled() > 0:
            self._end(call_id, "canceled", answered=False)
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
        failed_node = self._pv("$avp(approute_node)")
        # did the node answer at all?  The reply route marks every reply of
        # the node ($avp(approute_replied), see on_reply); a failure with
        # neither a reply nor a timeout is local: the send failed (no
        # memory, no socket...) and tm made the answer up.  (tm's own
        # t_branch_replied() is not set for a final reply without a
        # provisional one, so it cannot tell.)
        replied = failed_node is not None and self._pv("$avp(approute_replied)") == failed_node
        local = not timeout and not replied
        if timeout or code == 0:
            code = 408
        if local:
            self._log_limited("local_failure", "call_id=%s: local failure %d towards %s: not "
                              "counted against the node" % (call_id, code, failed_node or "-"))
        elif self.settings.report_results:
            self._report_result(0 if timeout else code, failed_node)
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
        if self.settings.report_results:
            self._mark_sent()
        ksr.tm.t_on_failure(route_name)
        if ksr.tm.t_relay() < 0:
            self._log("err", "relay to %s failed for call_id=%s" % (d.uri, call_id))
            self._end(call_id, "relay error", answered=False)
            return self._fail(500, "Relay Failed", INTERNAL)
        return OK

    def on_reply(self, msg: Any = None, *args: Any) -> int:
        """2xx to the INVITE: the session is confirmed."""
        try:
            return self._on_reply() or INTERNAL
        except Exception as e:
            return self._crashed("on_reply", e)

    def _on_reply(self) -> int:
        router = self.router
        if router is None:
            return OK
        pv = self.ksr.pv
        status = str(pv.get("$rs") or "")
        node = pv.get("$avp(approute_node)")
        if node is not None and pv.get("$avp(approute_replied)") != node:
            # this node answered (on_failure: not a local failure)
            pv.sets("$avp(approute_replied)", str(node))
        if not status.startswith("2"):
            return OK
        method = pv.get("$rm")  # $rm is the CSeq method on replies
        if method is not None and method != "INVITE":
            return OK
        call_id = str(pv.get("$ci") or "")
        try:
            router.confirm(call_id)
        except (_ar.NotFoundError, _ar.FailedPreconditionError) as e:
            self._log("dbg", "confirm call_id=%s: %s" % (call_id, e))
            return OK
        if not self.settings.report_results:
            return OK
        # a retransmitted 2xx runs this route again: report the result once.
        # $avp(approute_t0) (a transaction AVP) becomes "-" once reported.
        t0 = pv.get("$avp(approute_t0)")
        if t0 == "-":
            return OK
        pv.sets("$avp(approute_t0)", "-")
        fn = getattr(router, "report_result", None)
        if fn is None or not node:
            return OK
        try:
            code = int(status)
        except ValueError:
            code = 200
        latency = 0.0
        if t0:
            try:
                latency = max(0.0, (time.time() - float(t0)) * 1000.0)
            except ValueError:
                pass
        try:
            fn(str(node), code, latency)
        except Exception as e:  # a removed node, an old router: never fatal
            self._log("dbg", "report_result %s %d: %s: %s" % (node, code, type(e).__name__, e))
        return OK

    def _end(self, call_id: str, why: str, answered: bool = True) -> None:
        """Ends the session; an unanswered one is abandoned, so the claim a
        failed call made on its key goes at once (not after its grace)."""
        try:
            if answered:
                self.router.end(call_id)
            else:
                getattr(self.router, "abandon", self.router.end)(call_id)
            if self.settings.log_decisions:
                self._log("info", "end call_id=%s (%s)" % (call_id, why))
        except _ar.NotFoundError:
            self._log("dbg", "end call_id=%s (%s): no session" % (call_id, why))

    def on_bye(self, msg: Any = None, *args: Any) -> int:
        """An in-dialog BYE, before it is relayed.  From a node (the node hung
        up): the session ends now.  From anyone else: nothing yet; the
        script arms the BYE's reply route and on_bye_reply() ends the
        session when the session's node answers it 2xx.  A BYE sent
        elsewhere (a forged R-URI) never frees the node's capacity."""
        try:
            return self._on_bye() or INTERNAL
        except Exception as e:
            return self._crashed("on_bye", e)

    def _on_bye(self) -> int:
        if self.router is None:
            return OK
        node = self._node_at(self._pv("$si") or "", self._pv("$sp") or "")
        if node is not None and self._holds(node, self._pv("$ci") or ""):
            return self._end_current("bye from node %s" % node)
        return PASS  # the script arms the BYE's reply route (on_bye_reply)

    def on_bye_reply(self, msg: Any = None, *args: Any) -> int:
        """Reply route of a relayed BYE: a 2xx from the session's own node
        (the node has the BYE and let the call go) ends the session."""
        return self._guard("on_bye_reply", self._on_bye_reply)

    def _on_bye_reply(self) -> int:
        if self.router is None:
            return OK
        status = self._pv("$rs") or ""
        if not status.startswith("2") or self._pv("$rm") not in (None, "BYE"):
            return OK
        call_id = self._pv("$ci") or ""
        src, port = self._pv("$si") or "", self._pv("$sp") or ""
        node = self._node_at(src, port)
        if node is None or not self._holds(node, call_id):
            self._log_limited("bye_elsewhere", "call_id=%s: BYE answered %s by %s:%s, not by "
                              "a node: the session stays" % (
                                  _clean(call_id, 80), status, src, port))
            return OK
        return self._end_current("bye answered by node %s" % node)

    def _holds(self, node: str, call_id: str) -> bool:
        """Whether the BYE of ``call_id`` seen at ``node`` may end the
        session.  Any node will do: a node answers 2xx only to a BYE that
        matches a dialog it holds (Call-ID and both tags), so a BYE for this
        call sent to another node is answered 481 and ends nothing.  Not
        looking the session up keeps a BYE O(1) (listing a node's sessions
        would cost as much as the node has calls)."""
        return bool(node and call_id)

    def _node_at(self, ip: str, port: str) -> Optional[str]:
        """The node whose URI is ip:port, or None."""
        try:
            p = int(port)
        except ValueError:
            return None
        ip = ip.strip("[]")
        hit = self._node_addrs.get((ip, p))
        if hit is not None:
            return hit
        # a node may have joined (PUBLISH) since: rebuild at most once a second
        now = time.monotonic()
        if now - self._node_addrs_at < 1.0:
            return None
        self._node_addrs_at = now
        addrs: Dict[Tuple[str, int], str] = {}
        for n in self.router.nodes():
            for a in _uri_addrs(getattr(n, "uri", "") or ""):
                addrs[a] = n.id
        self._node_addrs = addrs
        return addrs.get((ip, p))

    def on_cancel(self, msg: Any = None, *args: Any) -> int:
        """CANCEL: the session ends."""
        return self._guard("on_cancel", lambda: self._end_current("cancel", answered=False))

    def on_relay_error(self, msg: Any = None, *args: Any) -> int:
        """t_relay() failed right after routing: the session ends."""
        return self._guard("on_relay_error", lambda: self._end_current("relay error", answered=False))

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

    def _end_current(self, why: str, answered: bool = True) -> int:
        router = self.router
        if router is not None:
            call_id = self._pv("$ci") or ""
            try:  # _end(), inlined: once per call
                if answered:
                    router.end(call_id)
                else:
                    getattr(router, "abandon", router.end)(call_id)
            except _ar.NotFoundError:
                self._log("dbg", "end call_id=%s (%s): no session" % (call_id, why))
                return OK
            if self.settings.log_decisions:
                self._log("info", "end call_id=%s (%s)" % (call_id, why))
        return OK

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._log("warn", text)

    # ----- passive results (outlier detection) -----------------------------

    def _mark_sent(self) -> None:
        """Remembers when the request left for the current node (a
        transaction AVP, so the reply and failure routes can read it)."""
        self._set_avp("approute_t0", "%.6f" % time.time())

    def _report_result(self, code: int, node: Optional[str] = None, t0: Any = None) -> None:
        """Feeds the node's final answer (0: none) to the router; ``node`` and
        ``t0``: the AVPs when the caller has already read them."""
        fn = getattr(self.router, "report_result", None)
        if fn is None:
            return
        if node is None:
            node = self._pv("$avp(approute_node)")
        if not node:
            return
        latency = 0.0
        if t0 is None:
            t0 = self._pv("$avp(approute_t0)")
        if t0 and t0 != "-":
            try:
                latency = max(0.0, (time.time() - float(t0)) * 1000.0)
            except ValueError:
                latency = 0.0
        try:
            fn(node, int(code), latency)
        except Exception as e:  # a removed node, an old router: never fatal
            self._log("dbg", "report_result %s %d: %s: %s" % (node, code, type(e).__name__, e))

    # ----- status reports: PUBLISH, event package approute-status ------------

    def on_publish(self, msg: Any = None, *args: Any) -> int:
        """PUBLISH (RFC 3903) of the approute-status event package: applies the
        report to the router and answers it (statefully) with its result."""
        try:
            return self._on_publish()
        except _Refused as r:  # a header that is not UTF-8: the sender's fault
            self._log_limited("publish_refused", "PUBLISH refused: %d %s" % (r.code, r.detail))
            try:
                self._sl_reply(r.code)
                return OK
            except Exception:
                return INTERNAL
        except Exception as e:  # never let anything escape into Kamailio
            self._log("err", "on_publish failed: %s: %s" % (type(e).__name__, e))
            try:
                self._reply(500, "Server Internal Error")
                return OK
            except Exception:
                return INTERNAL

    def _reply(self, code: int, reason: Any, headers: Tuple[str, ...] = ()) -> None:
        ksr = self.ksr
        for h in headers:
            ksr.hdr.append_to_reply(h + "\r\n")
        # stateful when the transaction exists (retransmissions are absorbed)
        ksr.sl.send_reply(int(code), reason_phrase(reason, code))

    def _header_int(self, name: str) -> Tuple[Optional[int], bool]:
        """(value, present) of an integer header; value None when malformed."""
        raw = self._pv("$hdr(%s)" % name)
        if raw is None:
            return None, False
        raw = raw.strip()
        if not raw.isdigit() or len(raw) > 10:
            return None, True
        return int(raw), True

    def _sl_reply(self, code: int, headers: Tuple[str, ...] = ()) -> None:
        """A stateless answer with the plain phrase of ``code``: nothing is
        kept for the request (no transaction)."""
        ksr = self.ksr
        for h in headers:
            ksr.hdr.append_to_reply(h + "\r\n")
        ksr.sl.sl_send_reply(int(code), _DEFAULT_REASONS.get(int(code), "Error"))

    def _refuse_publish(self, code: int, why: str, src: str,
                        headers: Tuple[str, ...] = ()) -> int:
        """Refuses a PUBLISH before its transaction exists; the detail goes
        to the log (at most one line a second per kind and process)."""
        self._sl_reply(code, headers)
        key = "publish_%d" % code
        self.counters[key] = self.counters.get(key, 0) + 1
        self._log_limited(key, "publish from %s: %d %s (stateless; %d so far in this process)"
                          % (src or "-", code, why, self.counters[key]))
        return OK

    def _log_limited(self, key: str, text: str) -> None:
        """One info line per second and ``key`` at most (a flood must not
        flood the log too); the next line says how many were left out."""
        now = time.monotonic()
        last = self._last_log.get(key, 0.0)
        if now - last >= 1.0:
            self._last_log[key] = now
            skipped = self._skipped.pop(key, 0)
            self._log("info", text + (" (%d similar line(s) left out)" % skipped
                                      if skipped else ""))
        else:
            self._skipped[key] = self._skipped.get(key, 0) + 1

    def _on_publish(self) -> int:
        ksr = self.ksr
        src = self._pv("$si") or ""
        pub = self.settings.publish
        # Stateless checks first (source, event, size, type): a request
        # refused here leaves nothing in shared memory, so a flood of them
        # costs the proxy one answer each and nothing more.
        if pub.allow_sources is not None and not _in_networks(src, pub.allow_sources):
            return self._refuse_publish(403, "source not in allow_sources", src)
        event = (self._pv("$hdr(Event)") or "").split(";", 1)[0].strip().lower()
        if event != STATUS_EVENT:
            return self._refuse_publish(489, "event %r is not %s" % (_clean(event, 40) or "-",
                                                                     STATUS_EVENT),
                                        src, ("Allow-Events: " + STATUS_EVENT,))
        try:  # $bs: the body as received (over UDP Content-Length is optional)
            length = max(int(self._pv("$bs") or 0), int(self._pv("$cl") or 0))
        except ValueError:
            length = -1
        if length < 0 or length > pub.max_body:
            return self._refuse_publish(413, "body of %s bytes (publish.max_body %d)"
                                        % (length if length >= 0 else "unknown", pub.max_body),
                                        src)
        ctype = (self._pv("$hdr(Content-Type)") or "").split(";", 1)[0].strip().lower()
        if length > 0 and not (ctype == "application/json" or ctype.endswith("+json")):
            return self._refuse_publish(415, "content type %r is not application/json"
                                        % (_clean(ctype, 60) or "none"), src,
                                        ("Accept: application/json",))
        # one transaction per PUBLISH: a retransmission gets the same answer
        # instead of being applied again (and refused as a replay)
        try:
            if ksr.tm.t_newtran() < 0:
                self._log("dbg", "publish from %s: t_newtran failed (retransmission?)" % src)
                return OK
        except AttributeError:  # pragma: no cover - tm not loaded
            pass
        apply_report = getattr(self.router, "apply_report", None)
        if apply_report is None:
            self._warn_once("apply_report", "status reports need a router with apply_report()")
            self._reply(500, "Server Internal Error")
            return OK
        expires, present = self._header_int("Expires")
        if not present:
            expires = self.settings.publish.default_expires
        elif expires is None:
            self._log("info", "publish from %s: 400 malformed Expires header" % src)
            self._reply(400, "Bad Request")
            return OK
        body = self._pv("$rb") or ""
        if_match = (self._pv("$hdr(SIP-If-Match)") or "").strip() or None
        auth = (self._pv("$hdr(%s)" % AUTH_HEADER) or "").strip() or None
        try:
            res = apply_report(body, expires=int(expires), source=src, auth=auth,
                               if_match=if_match)
        except ValueError as e:  # InvalidArgumentError: e.g. a number out of range
            self.counters["publish_400"] = self.counters.get("publish_400", 0) + 1
            self._reply(400, "Bad Request")
            self._note_status("publish node=- code=400 reason=%s src=%s"
                              % (_clean(e, 200).replace(" ", "_"), src), refused=True)
            return OK
        code = int(getattr(res, "code", 500))
        reason = getattr(res, "reason", "") or ""
        node = getattr(res, "node_id", None) or "-"
        if code == 200:
            etag = _etag_value(getattr(res, "etag", None))
            granted = getattr(res, "expires", None)
            granted = int(expires if granted is None else granted)
            headers = ("Expires: %d" % granted,)
            if etag is not None:
                headers = ("SIP-ETag: " + etag,) + headers
            self._reply(200, "OK", headers)
            self._note_status("publish node=%s code=200 expires=%d etag=%s src=%s"
                              % (node, granted, etag or "-", src))
            return OK
        if code not in (400, 403, 412, 423, 489):
            code = 500
        # the sender gets the plain phrase; the detail (key ids, pools, the
        # clock, the replay window) is for the log only
        self._reply(code, _DEFAULT_REASONS.get(code, "Error"))
        self._note_status("publish node=%s code=%d reason=%s src=%s"
                          % (node, code, reason_phrase(reason, code).replace(" ", "_"), src),
                          refused=True)
        return OK

    def _note_status(self, text: str, refused: bool = False) -> None:
        """A PUBLISH outcome: kept in ``recent``; logged when log_decisions
        is on, and always (rate-limited) for a refusal, whose detail the
        sender never sees."""
        self.recent.append((time.time(), text))
        if self.settings.log_decisions:
            self._log("info", text)
        elif refused:
            self._log_limited("publish_refused", text)

    # ----- active probes: OPTIONS through uac_req_send() ---------------------

    def on_probe_timer(self, msg: Any = None, *args: Any) -> int:
        """rtimer tick (every second): a round of probes when one is due."""
        return self._guard("on_probe_timer", self._on_probe_timer)

    def _on_probe_timer(self) -> int:
        opts = self.settings.probe
        if not opts.enabled or self.router is None:
            return OK
        now = time.monotonic()
        # the rtimer ticks every second; a round is due once the interval has
        # passed (a little slack so that interval 1 means every tick)
        if self._last_probe_round and now - self._last_probe_round < opts.interval - 0.05:
            return OK
        if getattr(self.router, "report_probe", None) is None:
            self._warn_once("report_probe", "probes need a router with report_probe()")
            return OK
        self._last_probe_round = now
        sent = 0
        for n in self.router.nodes():
            if getattr(n, "state", "active") not in opts.states:
                continue
            if self._send_probe(n.id, n.uri):
                sent += 1
        return OK

    def _send_probe(self, node_id: str, uri: str) -> bool:
        ksr = self.ksr
        pv = ksr.pv
        pv.sets("$uac_req(method)", "OPTIONS")
        pv.sets("$uac_req(ruri)", uri)
        pv.sets("$uac_req(turi)", uri)
        pv.sets("$uac_req(furi)", self.settings.probe.from_uri)
        pv.sets("$uac_req(hdrs)", "%s: %s\r\nMax-Forwards: 1\r\n" % (PROBE_HEADER, _clean(node_id)))
        # node id and send time travel with the transaction to uac:reply
        pv.sets("$uac_req(evparam)", "%.6f|%s" % (time.time(), node_id))
        pv.seti("$uac_req(evroute)", 1)
        if ksr.uac.uac_req_send() < 0:
            # the proxy could not send (short of memory, no socket): that
            # says nothing about the node, so nothing is reported
            self._log_limited("probe_send", "probe %s (%s): uac_req_send failed locally; "
                              "not counted against the node" % (node_id, uri))
            return False
        return True

    def on_probe_request(self, msg: Any = None, *args: Any) -> int:
        """event_route[tm:local-request] for a probe: bounds the wait for its
        final answer to probe.timeout (t_set_fr applies to this transaction)."""
        return self._guard("on_probe_request", self._on_probe_request)

    def _on_probe_request(self) -> int:
        ms = int(round(self.settings.probe.timeout * 1000))
        self.ksr.tm.t_set_fr(0, ms)
        return OK

    def on_probe_reply(self, msg: Any = None, *args: Any) -> int:
        """event_route[uac:reply]: the probe's final answer, or its timeout."""
        return self._guard("on_probe_reply", self._on_probe_reply)

    def _on_probe_reply(self) -> int:
        param = self._pv("$uac_req(evparam)") or ""
        if "|" not in param:
            return OK  # not one of ours
        t0_s, node_id = param.split("|", 1)
        try:
            rtt = max(0.0, (time.time() - float(t0_s)) * 1000.0)
        except ValueError:
            return OK
        try:
            evtype = int(self._pv("$uac_req(evtype)") or 0)
            code = int(self._pv("$uac_req(evcode)") or 0)
        except ValueError:
            evtype, code = 2, 0
        # evtype 2: no reply from the node, tm made one up: 408 is the
        # timeout (the node's fault, code 0); anything else (477 send
        # failure, 500 no memory...) is local and says nothing about the node
        if evtype != 1:
            if code not in (0, 408):
                self._log_limited("probe_local", "probe %s: local failure %d; not counted "
                                  "against the node" % (node_id, code))
                return OK
            code = 0
        self._probe_result(node_id, code, rtt)
        return OK

    def _probe_result(self, node_id: str, code: int, rtt: float) -> None:
        fn = getattr(self.router, "report_probe", None)
        if fn is None:
            return
        try:
            fn(node_id, int(code), float(rtt))
        except Exception as e:  # the node left meanwhile
            self._log("dbg", "report_probe %s: %s: %s" % (node_id, type(e).__name__, e))
            return
        self._log("dbg", "probe node=%s code=%d rtt_ms=%.1f" % (node_id, code, rtt))

    # ----- KEMI (cfgengine "python") --------------------------------------

    KEMI_FAILURE = "ksr_approute_failure"
    KEMI_REPLY = "ksr_approute_reply"
    KEMI_BYE_REPLY = "ksr_approute_bye_reply"

    def ksr_request_route(self, msg: Any = None, *args: Any) -> int:
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
        # flood control when the config loads pike (see docs/security.md):
        # a source over its limit is dropped without an answer
        pike = getattr(ksr, "pike", None)
        if pike is not None and pike.pike_check_req() < 0:
            self._log_limited("pike", "pike: dropping requests from %s" % self._pv("$si"))
            return
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
        if method == "PUBLISH":
            # status reports of the nodes: answered here (before in-dialog
            # handling; a PUBLISH is never part of a dialog)
            self.on_publish()
            return
        if ksr.siputils.has_totag() > 0:
            if ksr.rr.loose_route() > 0:
                if method == "BYE":
                    # the session ends when its node has the BYE: now if the
                    # node sent it, else on the node's 2xx (on_bye_reply)
                    if self.on_bye() == PASS:
                        ksr.tm.t_on_reply(self.KEMI_BYE_REPLY)
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

    def ksr_approute_failure(self, msg: Any = None, *args: Any) -> int:
        rc = self._guard("on_failure", lambda: self._on_failure(self.KEMI_FAILURE))
        try:
            if rc == NO_NODE:
                self.ksr.tm.t_reply(503, self._pv("$avp(approute_reason)") or "No Node Available")
            elif rc < 0:
                self.ksr.tm.t_reply(500, "Routing Error")
        except Exception as e:
            self._log("err", "failure reply: %s: %s" % (type(e).__name__, e))
        return 1

    def ksr_approute_reply(self, msg: Any = None, *args: Any) -> int:
        self.on_reply()
        return 1

    def ksr_approute_bye_reply(self, msg: Any = None, *args: Any) -> int:
        self.on_bye_reply()
        return 1

    def ksr_approute_timer(self, msg: Any = None, *args: Any) -> int:
        # rtimer calls KEMI routes with (msg, "rtimer"): hence *args
        self.on_timer()
        return 1

    def ksr_approute_probe(self, msg: Any = None, *args: Any) -> int:
        """rtimer route of the probes (every second)."""
        self.on_probe_timer()
        return 1

    def ksr_uac_event(self, msg: Any = None, evname: Any = None) -> int:
        """modparam("uac", "event_callback", "ksr_uac_event"): uac:reply."""
        if evname in (None, "uac:reply"):
            self.on_probe_reply()
        return 1

    def ksr_tm_event(self, msg: Any = None, evname: Any = None) -> int:
        """modparam("tm", "event_callback", "ksr_tm_event"): tm:local-request."""
        if evname in (None, "tm:local-request") and self._is_probe_request():
            self.on_probe_request()
        return 1

    def _is_probe_request(self) -> bool:
        try:
            return self._pv("$rm") == "OPTIONS" and self._pv("$hdr(%s)" % PROBE_HEADER) is not None
        except Exception:
            return False

    def ksr_reply_route(self, msg: Any = None, *args: Any) -> int:
        return 1

    def ksr_onsend_route(self, msg: Any = None, *args: Any) -> int:
        return 1


# --------------------------------------------------------------------------
# module entry points

_handler: Optional[Handler] = None


class KsrLogHandler(logging.Handler):
    """Sends the "approute" logger's records (e.g. a failing Python strategy,
    with its traceback) to Kamailio's log, one line per line."""

    def __init__(self, ksr: Any):
        super().__init__()
        self.ksr = ksr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fn = self.ksr.err if record.levelno >= logging.ERROR else (
                self.ksr.warn if record.levelno >= logging.WARNING else self.ksr.info)
            for line in self.format(record).splitlines():
                fn("approute: " + line + "\n")
        except Exception:  # never let logging break a route
            pass


def _log_to_kamailio(ksr: Any) -> None:
    log = logging.getLogger("approute")
    if ksr is not None and not any(isinstance(h, KsrLogHandler) for h in log.handlers):
        log.addHandler(KsrLogHandler(ksr))


def create_handler(settings: Optional[Settings] = None, ksr: Any = None) -> Handler:
    """Loads settings, creates or attaches the router, returns the handler."""
    settings = settings or Settings.from_env()
    _log_to_kamailio(ksr if ksr is not None else _KSR)
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

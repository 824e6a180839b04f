"""Kamailio-side settings: the YAML file named by ``APPROUTE_KAMAILIO_CONFIG``
(keys in the package docstring), read and checked once in ``mod_init()``, and
the affinity key / rule templates (``{from_user}``, ``{hdr:X-Tenant}``...)
that these settings hold.  Every bad value raises ``SettingsError`` naming
the setting; nothing here touches Kamailio."""

from __future__ import annotations

import os
import re
from ipaddress import ip_network
from typing import Any, Callable, Dict, List, Optional, Tuple

import approute as _ar

from .sip import SAFE_VALUE_RE, Network

ENV_CONFIG = "APPROUTE_KAMAILIO_CONFIG"

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

def check_template(tpl: str, groups: Tuple[str, ...] = (), where: str = "") -> None:
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
            raise SettingsError(where + "bad regex %r: %s" % (pattern, e)) from e
        self.field = field
        check_template(field, where=where)
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
                check_template(tpl, groups, where)


class AppOptions:
    def __init__(self, name: str, spec: Any):
        where = "apps.%s: " % name
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise SettingsError(where + "must be a mapping")
        unknown = set(spec) - {"key", "prefer", "exec_app", "data"}
        if unknown:
            raise SettingsError(where + "unknown option(s) %s" % ", ".join(sorted(unknown)))
        self.key = None if spec.get("key") is None else str(spec["key"])
        # where a new key should go: the node holding this value's keys (route(prefer=))
        self.prefer = None if spec.get("prefer") is None else str(spec["prefer"])
        self.exec_app = None if spec.get("exec_app") is None else str(spec["exec_app"])
        self.data = None if spec.get("data") is None else str(spec["data"])
        for tpl in (self.key, self.prefer, self.data):
            if tpl is not None:
                check_template(tpl, where=where)

def _number(spec: Dict[str, Any], key: str, default: float, where: str,
            minimum: float = 0.0) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError("%s%s: must be a number" % (where, key))
    if value < minimum:
        raise SettingsError("%s%s: must be >= %s" % (where, key, minimum))
    return float(value)


def _networks(raw: Any, where: str) -> Tuple[Network, ...]:
    """A list of CIDRs (or addresses) as ipaddress networks."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise SettingsError("%s: must be a list of networks (CIDRs)" % where)
    out = []
    for item in raw:
        try:
            out.append(ip_network(str(item).strip(), strict=False))
        except ValueError as e:
            raise SettingsError("%s: %r is not a network: %s" % (where, item, e)) from e
    return tuple(out)




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
        self.allow_sources: Optional[Tuple[Network, ...]] = (
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


def _option_text(value: Any) -> str:
    """A strategy option as the YAML scalar text the core reads."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def strategy_reads_attrs(app_spec: Any) -> bool:
    """Whether an app of the router config may use route()'s attrs, as the
    core says (approute.strategy_request_attrs: hash or consistent_bounded by
    from / to / ruri_user / attr:NAME, and Python strategies).  True when
    the core cannot tell (a strategy registered on the router, a bad option:
    loading the router reports those)."""
    if not isinstance(app_spec, dict):
        return True
    st = app_spec.get("strategy", "round_robin")
    options: Dict[str, str] = {}
    if isinstance(st, dict):
        options = {str(k): _option_text(v) for k, v in st.items() if k != "name"}
        st = st.get("name")
    if not isinstance(st, str):
        return True
    try:
        return bool(_ar.strategy_request_attrs(st, options))
    except (_ar.Error, ValueError):
        return True


#: Options of an app that has none (and no ``default`` entry): all unset.
_NO_OPTIONS = AppOptions("default", {})


def _load_yaml(text: str, what: str) -> Any:
    try:
        import yaml
    except ImportError:  # JSON is valid YAML
        import json
        try:
            return json.loads(text)
        except ValueError as e:
            raise SettingsError("%s: PyYAML is not installed and the file is not JSON: %s" % (what, e)) from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SettingsError("%s: %s" % (what, e)) from e


class Settings:
    """Kamailio-side settings (see the module docstring)."""

    KNOWN = {"router", "shared", "headers", "match", "rules", "apps", "default_key",
             "default_app", "failure_route", "reply_route", "log_decisions",
             "health_on_timeout", "recent", "publish", "probe", "attrs",
             "report_results", "trusted_sources", "max_ruri_user", "max_app_value",
             "retry_after", "acc_avps"}

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
            check_template(self.default_key, where="default_key: ")
        self.default_app = None if data.get("default_app") is None else str(data["default_app"])
        self.failure_route = str(data.get("failure_route", "APPROUTE_FAILURE"))
        self.reply_route = str(data.get("reply_route", "APPROUTE_REPLY"))
        log = data.get("log_decisions", True)
        if not isinstance(log, bool) and log != "json":
            raise SettingsError("log_decisions: use true, false or json, not %r" % (log,))
        self.log_decisions = bool(log)
        #: log_decisions: json, one JSON object per decision (with a short trace)
        self.log_json = log == "json"
        acc = data.get("acc_avps", False)
        if not isinstance(acc, bool):
            raise SettingsError("acc_avps: use true or false, not %r" % (acc,))
        #: $avp(approute_app/key/prefer) set on each routed INVITE, for acc's log_extra
        self.acc_avps = acc
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
        # Retry-After (seconds) of the 486 / 480 a strict key's refusal is
        # answered with; 0: no header
        ra = data.get("retry_after", 30)
        if isinstance(ra, bool) or not isinstance(ra, int) or not 0 <= ra <= 86400:
            raise SettingsError("retry_after: must be whole seconds, 0..86400")
        self.retry_after = ra
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
        return {str(name): strategy_reads_attrs(spec) for name, spec in apps.items()}

    def make_router(self) -> Any:
        """The router this config names: loaded (file or mapping) or attached."""
        import approute
        if self.router_text is not None:
            return approute.Router.from_yaml(self.router_text, shared=self.shared)
        if self.router_file is not None:
            return approute.Router.from_file(self.router_file, shared=self.shared)
        if self.shared is None:
            raise SettingsError("router: is required when shared: is not set")
        # no config here: use the state of a router that is already running
        return approute.Router.attach(self.shared)

"""Kamailio integration: the handler app_python3 calls.

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
      conference: {key: '{app_data}', prefer: '{from_domain}', exec_app: Conference}
    default_key: null            # affinity key template when the app has none
    default_app: null            # app when nothing matched (null: 404)
    retry_after: 30              # Retry-After of a strict key's 486 / 480 (0: none)
    log_decisions: true          # one info line per decision / retry / end;
                                 # json: one JSON object per decision, with
                                 # the short trace of a dry run (explain)
    acc_avps: false              # true: $avp(approute_app), $avp(approute_key) and
                                 # $avp(approute_prefer) on each routed INVITE, for the
                                 # acc module's log_extra (kamailio.cfg -A WITH_ACC)
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
``prefer`` templates (same fields) give ``route(prefer=)``: where a new key
should go (the node holding that value's keys); rendered only with a key.

Handler return codes (what ``$rc`` holds after ``python_exec``):

* ``do_app_routing``: 1 routed ($du set, headers added); -1 no node (503;
  486 / 480 with Retry-After when a strict key's node cannot take the call),
  -2 unknown application (404), -3 router state full (503), -4 bad request
  (400), -5 internal error (500).  On a negative code ``$avp(approute_code)``
  and ``$avp(approute_reason)`` hold the reply the script should send.
* ``on_failure``: 1 relayed to another node; 2 nothing to retry, let the
  best reply go upstream; -1 no node left, the script should reply 503, or
  486 / 480 (Retry-After added) when a strict key may not move
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
import traceback
from typing import Any, Optional

from .context import BAD_REQUEST, EXHAUSTED, INTERNAL, KAMAILIO_KSR, NO_NODE, OK, PASS, UNKNOWN_APP, Context
from .handler import Handler
from .settings import (
    ATTR_PVS,
    ENV_CONFIG,
    FIELD_PVS,
    MATCH_FIELDS,
    AppOptions,
    ProbeOptions,
    PublishOptions,
    Rule,
    Settings,
    SettingsError,
    check_template,
    render,
    strategy_reads_attrs,
)
from .sip import (
    AUTH_HEADER,
    DEFAULT_REASONS,
    PROBE_HEADER,
    SAFE_VALUE_RE,
    STATUS_EVENT,
    Refused,
    clean,
    reason_phrase,
)

__all__ = [
    "ATTR_PVS", "AUTH_HEADER", "AppOptions", "BAD_REQUEST", "Context", "DEFAULT_REASONS",
    "ENV_CONFIG", "EXHAUSTED", "FIELD_PVS", "Handler", "INTERNAL", "KsrLogHandler",
    "MATCH_FIELDS", "NO_NODE", "OK", "PASS", "PROBE_HEADER", "ProbeOptions",
    "PublishOptions", "Refused", "Rule", "SAFE_VALUE_RE", "STATUS_EVENT", "Settings",
    "SettingsError", "UNKNOWN_APP", "check_template", "clean", "create_handler", "mod_init",
    "reason_phrase", "render", "strategy_reads_attrs",
]

#: the handler of this process, once mod_init() has run
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
    _log_to_kamailio(ksr if ksr is not None else KAMAILIO_KSR)
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
        h.log("info", "router ready (%s, pid %d)" % (where, os.getpid()))
        return h
    except Exception as e:
        line = "approute: mod_init failed: %s: %s\n" % (type(e).__name__, clean(e, 400))
        if KAMAILIO_KSR is not None:
            try:
                KAMAILIO_KSR.err(line)
            except Exception:
                pass
        else:  # pragma: no cover
            traceback.print_exc()
        return None

"""What every part of the handler shares: the settings, the router and KSR
(both replaceable at run time), the return codes, logging (plain, once,
rate-limited), reading pseudo-variables, the reply AVPs of a refusal, the
decision notes (``recent``) and ``entry_point``, the one place where an
exception is kept from reaching Kamailio.

One ``Context`` per handler, so per Kamailio process (app_python3 forks after
``mod_init()``); nothing here is shared between processes."""

from __future__ import annotations

import json
import operator
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional, Set, Tuple

from .settings import Settings
from .sip import Refused, check_utf8, clean

#: Kamailio's KSR module inside app_python3; None elsewhere (tests pass their own)
KAMAILIO_KSR: Any
try:
    import KSR as _ksr  # type: ignore[import-not-found]
    KAMAILIO_KSR = _ksr
except ImportError:
    KAMAILIO_KSR = None

# Return codes (what $rc holds after python_exec), see the package docstring.
OK = 1
PASS = 2
NO_NODE = -1
UNKNOWN_APP = -2
EXHAUSTED = -3
BAD_REQUEST = -4
INTERNAL = -5

#: A strict key's refusal (router reason) -> the caller's answer. The room
#: is full: 486 (busy here, every proxy would send it to the same node); its
#: node is down, draining, disabled or already refused this call: 480.
#: Never 503 (docs/design.md, "Strict keys at the SIP edge").
KEY_REFUSALS: Dict[str, Tuple[int, str]] = {
    "key_full": (486, "Busy Here"),
    "key_down": (480, "Temporarily Unavailable"),
    "key_draining": (480, "Temporarily Unavailable"),
    "key_disabled": (480, "Temporarily Unavailable"),
    "key_tried": (480, "Temporarily Unavailable"),
}

#: A PV cache: each pseudo-variable of the current request, read once.
PVCache = Dict[str, Optional[str]]


#: log_decisions: json: a decision's object is never cut below this many
#: characters (the short trace names at most a pool's excluded nodes)
JSON_LOG_LIMIT = 16384


class Context:
    """The state and helpers the parts of one handler share."""

    def __init__(self, settings: Settings, router: Any, ksr: Any):
        self.settings = settings
        self.router = router
        self.ksr = ksr
        #: recent decisions and status reports, (time, text), when kept
        self.recent: Deque[Tuple[float, str]] = deque(maxlen=max(settings.recent, 1))
        #: refusals counted by this process (the core counts what it sees)
        self.counters: Dict[str, int] = {}
        #: decision lines are only built when they are logged or kept
        self.notes = bool(settings.log_decisions or settings.recent > 0)
        self._warned: Set[str] = set()
        self._last_log: Dict[str, float] = {}
        self._skipped: Dict[str, int] = {}

    # ----- logging ----------------------------------------------------------

    def log(self, level: str, text: str, limit: int = 400) -> None:
        """One line in Kamailio's log ("err", "warn", "info", "dbg"), cut at
        ``limit`` characters."""
        ksr = self.ksr
        if ksr is None:
            return
        line = "approute: " + clean(text, limit) + "\n"
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

    def warn_once(self, key: str, text: str) -> None:
        """A warning logged once per process and ``key``."""
        if key not in self._warned:
            self._warned.add(key)
            self.log("warn", text)

    def log_limited(self, key: str, text: str) -> None:
        """One info line per second and ``key`` at most (a flood must not
        flood the log too); the next line says how many were left out."""
        now = time.monotonic()
        last = self._last_log.get(key, 0.0)
        if now - last >= 1.0:
            self._last_log[key] = now
            skipped = self._skipped.pop(key, 0)
            self.log("info", text + (" (%d similar line(s) left out)" % skipped
                                     if skipped else ""))
        else:
            self._skipped[key] = self._skipped.get(key, 0) + 1

    def count(self, key: str) -> int:
        """Counts one more ``key`` in ``counters``; returns the new count."""
        n = self.counters.get(key, 0) + 1
        self.counters[key] = n
        return n

    def note(self, what: str, call_id: str, d: Any, extra: str = "",
             fields: Optional[Dict[str, Any]] = None, trace: Optional[Dict[str, Any]] = None) -> None:
        """A routing decision (or its absence): logged and/or kept. With
        log_decisions: json, one JSON object: the decision, ``fields`` and the
        short ``trace`` (approute.explain.short_trace) when there is one."""
        if not self.notes:  # neither logged nor kept: not even formatted
            return
        if self.settings.log_json:
            rec: Dict[str, Any] = {"event": what, "call_id": call_id}
            if d is not None:
                rec.update(app=getattr(d, "app", ""), ok=bool(getattr(d, "ok", False)),
                           node=getattr(d, "node_id", None), reason=getattr(d, "reason", ""),
                           attempt=getattr(d, "attempt", 0))
                if not rec["ok"]:
                    rec["detail"] = getattr(d, "detail", "")
            else:
                rec.update(ok=False, reason="error")
            rec.update(fields or {})
            if trace is not None:
                rec["trace"] = trace
            text = json.dumps(rec, sort_keys=True, separators=(",", ":"))
            if self.settings.recent > 0:
                self.recent.append((time.time(), text))
            self.log("info", text, limit=JSON_LOG_LIMIT)
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
            self.log("info", text)

    # ----- the current message ----------------------------------------------

    def pv(self, name: str) -> Optional[str]:
        """A pseudo-variable of the current message (None when unset);
        ``Refused`` (400) when its value is not UTF-8."""
        try:
            v = self.ksr.pv.get(name)
        except UnicodeError:  # app_python3 could not decode the bytes
            raise Refused(400, "Bad Request", "%s is not valid UTF-8" % name) from None
        if v is None:
            return None
        v = str(v)
        if not v.isascii():
            check_utf8(name, v)
        return v

    def cached(self, vals: PVCache, pv: str) -> Optional[str]:
        """A PV of the current message, read once per request (``vals``)."""
        if pv in vals:
            return vals[pv]
        v = self.pv(pv)
        vals[pv] = v
        return v

    def set_avp(self, name: str, value: Any) -> None:
        self.ksr.pv.sets("$avp(%s)" % name, clean(value))

    def mark_sent(self) -> None:
        """Remembers when the request left for the current node (a
        transaction AVP, so the reply and failure routes can read it)."""
        self.ksr.pv.sets("$avp(approute_t0)", "%.6f" % time.time())

    # ----- answers ----------------------------------------------------------

    def fail(self, sip_code: int, reason: str, rc: int) -> int:
        """Sets the reply the script should send; returns ``rc``."""
        self.ksr.pv.seti("$avp(approute_code)", int(sip_code))
        self.set_avp("approute_reason", reason)
        return rc

    def refuse_key(self, d: Any, call_id: str, key: Optional[str], rc: int,
                   full: bool = False) -> int:
        """The router refused a strict key's call (``d.reason`` key_full,
        key_down, key_draining, key_disabled or key_tried): the caller gets
        486 Busy Here (the room is full) or 480 Temporarily Unavailable (its
        node cannot be reached now) with a Retry-After, never 503, which
        upstream proxies fail over on (docs/design.md, "Strict keys at the
        SIP edge"); the reason, key and node go to the log, rate-limited.
        ``full``: the key's node itself said it is full (it answered 503 or
        486 in the failure route): 486 whatever the router's reason."""
        code, phrase = KEY_REFUSALS["key_full" if full else d.reason] if (full or d.reason in KEY_REFUSALS) \
            else (480, "Temporarily Unavailable")
        self.log_limited("key_refused_" + d.reason, "refused call_id=%s key=%s: %d %s: %s" % (
            clean(call_id, 80), clean(key or "-", 80), code, d.reason, clean(d.detail, 200)))
        ra = self.settings.retry_after
        if ra:
            self.ksr.hdr.append_to_reply("Retry-After: %d\r\n" % ra)
        return self.fail(code, phrase, rc)

    def refused(self, r: Refused, call_id: Optional[str], src: Optional[str]) -> int:
        """A request refused by a check: one rate-limited log line with the
        detail, the plain answer's AVPs, and the matching return code."""
        self.log_limited("refused_%d" % r.code, "refused call_id=%s src=%s: %d %s" % (
            clean(call_id or "-", 80), src or "-", r.code, r.detail))
        rc = UNKNOWN_APP if r.code == 404 else BAD_REQUEST
        return self.fail(r.code, r.reason, rc)

    def crashed(self, name: str, e: BaseException) -> int:
        """An entry point raised: one log line, the 500 AVPs, INTERNAL.  A
        refusal (a malformed value met outside do_app_routing's own checks)
        is the caller's fault, not ours: it is answered as such."""
        if isinstance(e, Refused):
            try:
                return self.refused(e, None, None)
            except Exception:
                return BAD_REQUEST
        self.log("err", "%s failed: %s: %s" % (name, type(e).__name__, e))
        try:
            self.fail(500, "Routing Error", INTERNAL)
        except Exception:
            pass
        return INTERNAL


def entry_point(name: str, target: str, *args: Any, doc: str = "") -> Callable[..., int]:
    """A method of the handler that Kamailio calls (``python_exec`` passes the
    message and maybe more; they are not used): calls ``target`` (a dotted
    path from the handler, e.g. ``"invite.route"``) with ``args`` and never
    lets an exception escape into Kamailio (``Context.crashed``).  A 0 or
    None result becomes INTERNAL: 0 would stop the script."""
    get = operator.attrgetter(target)

    def call(self: Any, msg: Any = None, *_: Any) -> int:
        try:
            return get(self)(*args) or INTERNAL
        except Exception as e:  # never let anything escape into Kamailio
            ctx: Context = self.ctx
            return ctx.crashed(name, e)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = doc
    return call

"""Status reports of the nodes: PUBLISH requests (RFC 3903) of the
``approute-status`` event package (docs/status-package.md).  Stateless
refusals first (source, event, size, content type: nothing is kept for
them), then one transaction per PUBLISH, ``router.apply_report()`` and the
answer: the plain phrase for the sender, the detail for the log."""

from __future__ import annotations

import time
from typing import Any, Optional, Tuple

from .context import INTERNAL, OK, Context
from .sip import (
    AUTH_HEADER,
    DEFAULT_REASONS,
    STATUS_EVENT,
    Refused,
    clean,
    etag_value,
    in_networks,
    reason_phrase,
)


class StatusReports:
    """Answers the nodes' PUBLISH requests for one handler."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        if ctx.settings.publish_sources_unknown:
            ctx.warn_once("publish_sources", "publish: the router config is not loaded "
                          "here (attached), so PUBLISH sources are checked only by the "
                          "core, after the transaction exists; set publish.allow_sources "
                          "to refuse outsiders statelessly")

    def handle(self) -> int:
        """PUBLISH (RFC 3903) of the approute-status event package: applies the
        report to the router and answers it (statefully) with its result."""
        try:
            return self._publish()
        except Refused as r:  # a header that is not UTF-8: the sender's fault
            self.ctx.log_limited("publish_refused", "PUBLISH refused: %d %s" % (r.code, r.detail))
            try:
                self._sl_reply(r.code)
                return OK
            except Exception:
                return INTERNAL
        except Exception as e:  # never let anything escape into Kamailio
            self.ctx.log("err", "on_publish failed: %s: %s" % (type(e).__name__, e))
            try:
                self._reply(500, "Server Internal Error")
                return OK
            except Exception:
                return INTERNAL

    def _reply(self, code: int, reason: Any, headers: Tuple[str, ...] = ()) -> None:
        ksr = self.ctx.ksr
        for h in headers:
            ksr.hdr.append_to_reply(h + "\r\n")
        # stateful when the transaction exists (retransmissions are absorbed)
        ksr.sl.send_reply(int(code), reason_phrase(reason, code))

    def _header_int(self, name: str) -> Tuple[Optional[int], bool]:
        """(value, present) of an integer header; value None when malformed."""
        raw = self.ctx.pv("$hdr(%s)" % name)
        if raw is None:
            return None, False
        raw = raw.strip()
        if not raw.isdigit() or len(raw) > 10:
            return None, True
        return int(raw), True

    def _sl_reply(self, code: int, headers: Tuple[str, ...] = ()) -> None:
        """A stateless answer with the plain phrase of ``code``: nothing is
        kept for the request (no transaction)."""
        ksr = self.ctx.ksr
        for h in headers:
            ksr.hdr.append_to_reply(h + "\r\n")
        ksr.sl.sl_send_reply(int(code), DEFAULT_REASONS.get(int(code), "Error"))

    def _refuse_publish(self, code: int, why: str, src: str,
                        headers: Tuple[str, ...] = ()) -> int:
        """Refuses a PUBLISH before its transaction exists; the detail goes
        to the log (at most one line a second per kind and process)."""
        self._sl_reply(code, headers)
        key = "publish_%d" % code
        n = self.ctx.count(key)
        self.ctx.log_limited(key, "publish from %s: %d %s (stateless; %d so far in this process)"
                             % (src or "-", code, why, n))
        return OK

    def _publish(self) -> int:
        ksr = self.ctx.ksr
        src = self.ctx.pv("$si") or ""
        pub = self.ctx.settings.publish
        # Stateless checks first (source, event, size, type): a request
        # refused here leaves nothing in shared memory, so a flood of them
        # costs the proxy one answer each and nothing more.
        if pub.allow_sources is not None and not in_networks(src, pub.allow_sources):
            return self._refuse_publish(403, "source not in allow_sources", src)
        event = (self.ctx.pv("$hdr(Event)") or "").split(";", 1)[0].strip().lower()
        if event != STATUS_EVENT:
            return self._refuse_publish(489, "event %r is not %s"
                                        % (clean(event, 40) or "-", STATUS_EVENT), src,
                                        ("Allow-Events: " + STATUS_EVENT,))
        try:  # $bs: the body as received (over UDP Content-Length is optional)
            length = max(int(self.ctx.pv("$bs") or 0), int(self.ctx.pv("$cl") or 0))
        except ValueError:
            length = -1
        if length < 0 or length > pub.max_body:
            return self._refuse_publish(413, "body of %s bytes (publish.max_body %d)"
                                        % (length if length >= 0 else "unknown", pub.max_body),
                                        src)
        ctype = (self.ctx.pv("$hdr(Content-Type)") or "").split(";", 1)[0].strip().lower()
        if length > 0 and not (ctype == "application/json" or ctype.endswith("+json")):
            return self._refuse_publish(415, "content type %r is not application/json"
                                        % (clean(ctype, 60) or "none"), src,
                                        ("Accept: application/json",))
        # one transaction per PUBLISH: a retransmission gets the same answer
        # instead of being applied again (and refused as a replay)
        try:
            if ksr.tm.t_newtran() < 0:
                self.ctx.log("dbg", "publish from %s: t_newtran failed (retransmission?)" % src)
                return OK
        except AttributeError:  # pragma: no cover - tm not loaded
            pass
        apply_report = getattr(self.ctx.router, "apply_report", None)
        if apply_report is None:
            self.ctx.warn_once("apply_report", "status reports need a router with apply_report()")
            self._reply(500, "Server Internal Error")
            return OK
        expires, present = self._header_int("Expires")
        if not present:
            expires = self.ctx.settings.publish.default_expires
        elif expires is None:
            self.ctx.log("info", "publish from %s: 400 malformed Expires header" % src)
            self._reply(400, "Bad Request")
            return OK
        body = self.ctx.pv("$rb") or ""
        if_match = (self.ctx.pv("$hdr(SIP-If-Match)") or "").strip() or None
        auth = (self.ctx.pv("$hdr(%s)" % AUTH_HEADER) or "").strip() or None
        try:
            res = apply_report(body, expires=int(expires), source=src, auth=auth,
                               if_match=if_match)
        except ValueError as e:  # InvalidArgumentError: e.g. a number out of range
            self.ctx.count("publish_400")
            self._reply(400, "Bad Request")
            self._note_status("publish node=- code=400 reason=%s src=%s"
                              % (clean(e, 200).replace(" ", "_"), src), refused=True)
            return OK
        code = int(getattr(res, "code", 500))
        reason = getattr(res, "reason", "") or ""
        node = getattr(res, "node_id", None) or "-"
        if code == 200:
            etag = etag_value(getattr(res, "etag", None))
            granted = getattr(res, "expires", None)
            granted = int(expires if granted is None else granted)
            headers: Tuple[str, ...] = ("Expires: %d" % granted,)
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
        self._reply(code, DEFAULT_REASONS.get(code, "Error"))
        self._note_status("publish node=%s code=%d reason=%s src=%s"
                          % (node, code, reason_phrase(reason, code).replace(" ", "_"), src),
                          refused=True)
        return OK

    def _note_status(self, text: str, refused: bool = False) -> None:
        """A PUBLISH outcome: kept in ``recent``; logged when log_decisions
        is on, and always (rate-limited) for a refusal, whose detail the
        sender never sees."""
        self.ctx.recent.append((time.time(), text))
        if self.ctx.settings.log_decisions:
            self.ctx.log("info", text)
        elif refused:
            self.ctx.log_limited("publish_refused", text)

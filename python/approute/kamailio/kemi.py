"""The KEMI adapter (``cfgengine "python"``): Kamailio calls
``ksr_request_route`` and the named failure / reply / timer / event routes
on the handler object; each one does what ``examples/kamailio/kamailio.cfg``
does in its script and calls the same entry points as ``python_exec`` there
(``do_app_routing``, ``on_failure``...).  No routing decision is made here.
Every KEMI route returns 1."""

from __future__ import annotations

from typing import Any, Callable, Optional

from .context import NO_NODE, PASS, Context
from .probes import Probes


class KemiRoutes:
    """Mixin of ``Handler``: the KEMI routes over its native entry points."""

    KEMI_FAILURE = "ksr_approute_failure"
    KEMI_REPLY = "ksr_approute_reply"
    KEMI_BYE_REPLY = "ksr_approute_bye_reply"

    # provided by Handler
    ctx: Context
    probes: Probes
    do_app_routing: Callable[..., int]
    on_reply: Callable[..., int]
    on_bye: Callable[..., int]
    on_bye_reply: Callable[..., int]
    on_cancel: Callable[..., int]
    on_relay_error: Callable[..., int]
    on_timer: Callable[..., int]
    on_publish: Callable[..., int]
    on_probe_timer: Callable[..., int]
    on_probe_request: Callable[..., int]
    on_probe_reply: Callable[..., int]
    kemi_failure: Callable[..., int]  # on_failure arming KEMI_FAILURE

    def ksr_request_route(self, msg: Any = None, *args: Any) -> int:
        try:
            self._kemi_request()
        except Exception as e:
            self.ctx.log("err", "ksr_request_route failed: %s: %s" % (type(e).__name__, e))
            try:
                self.ctx.ksr.sl.sl_send_reply(500, "Routing Error")
            except Exception:
                pass
        return 1

    def _kemi_relay(self) -> None:
        if self.ctx.ksr.tm.t_relay() < 0:
            self.ctx.ksr.sl.sl_reply_error()

    def _kemi_request(self) -> None:
        ctx = self.ctx
        ksr = ctx.ksr
        # flood control when the config loads pike (see docs/security.md):
        # a source over its limit is dropped without an answer
        pike = getattr(ksr, "pike", None)
        if pike is not None and pike.pike_check_req() < 0:
            ctx.log_limited("pike", "pike: dropping requests from %s" % ctx.pv("$si"))
            return
        if ksr.maxfwd.process_maxfwd(10) < 0:
            ksr.sl.sl_send_reply(483, "Too Many Hops")
            return
        if ksr.sanity.sanity_check(17895, 7) < 0:
            ctx.log("warn", "malformed request from %s" % ctx.pv("$si"))
            return
        method = ctx.pv("$rm")
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
            self._kemi_in_dialog(method)
            return
        if method == "ACK":
            if ksr.tm.t_check_trans() > 0:
                self._kemi_relay()
            return
        if method == "OPTIONS" and ksr.is_myself_ruri() > 0 and not ctx.pv("$rU"):
            ksr.sl.sl_send_reply(200, "OK")
            return
        if method != "INVITE":
            ksr.sl.sl_send_reply(405, "Method Not Allowed")
            return
        ksr.hdr.remove("Route")
        ksr.rr.record_route()
        rc = self.do_app_routing()
        if rc < 0:
            code = int(ctx.pv("$avp(approute_code)") or 500)
            ksr.sl.sl_send_reply(code, ctx.pv("$avp(approute_reason)") or "Routing Error")
            return
        ksr.tm.t_on_failure(self.KEMI_FAILURE)
        ksr.tm.t_on_reply(self.KEMI_REPLY)
        if ksr.tm.t_relay() < 0:
            self.on_relay_error()
            ksr.sl.sl_reply_error()

    def _kemi_in_dialog(self, method: Optional[str]) -> None:
        """A request with a To tag."""
        ksr = self.ctx.ksr
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

    def ksr_approute_failure(self, msg: Any = None, *args: Any) -> int:
        rc = self.kemi_failure()
        ctx = self.ctx
        try:
            if rc == NO_NODE:
                ctx.ksr.tm.t_reply(503, ctx.pv("$avp(approute_reason)") or "No Node Available")
            elif rc < 0:
                ctx.ksr.tm.t_reply(500, "Routing Error")
        except Exception as e:
            ctx.log("err", "failure reply: %s: %s" % (type(e).__name__, e))
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
        if evname in (None, "tm:local-request") and self.probes.is_probe_request():
            self.on_probe_request()
        return 1

    def ksr_reply_route(self, msg: Any = None, *args: Any) -> int:
        return 1

    def ksr_onsend_route(self, msg: Any = None, *args: Any) -> int:
        return 1

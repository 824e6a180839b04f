"""A call after its INVITE was routed: the failure route (retry on another
node, or give up), the INVITE's replies (confirm the session, report the
node's result), BYE and its reply, CANCEL, a relay error, and the rtimer's
``sweep()``.  Final answers of the nodes feed ``router.report_result()``
(passive outlier detection); a local failure never counts against a node."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import approute as _ar

from .context import INTERNAL, KEY_REFUSALS, NO_NODE, OK, PASS, Context
from .sip import clean, retry_after_seconds, uri_addrs, via_overload


class CallDialog:
    """What happens to a routed call after its INVITE, for one handler."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._node_addrs: Dict[Tuple[str, int], str] = {}  # (ip, port) -> node id
        self._node_addrs_at = 0.0

    # ----- failure route: retry -------------------------------------------------

    def failure(self, route_name: Optional[str] = None) -> int:
        """A negative reply or a timeout: relays the INVITE to another node
        (arming ``route_name``, default settings.failure_route, again) or
        gives up (see the package docstring for the codes)."""
        ctx = self.ctx
        ksr = ctx.ksr
        s = ctx.settings
        if ctx.router is None:
            return ctx.fail(500, "Router Not Ready", INTERNAL)
        call_id = ctx.pv("$ci") or ""
        if ksr.tm.t_is_canceled() > 0:
            self.end(call_id, "canceled", answered=False)
            return PASS
        code_s = ctx.pv("$T_reply_code")
        try:
            code = int(code_s) if code_s else 0
        except ValueError:
            code = 0
        timeout = False
        try:
            timeout = ksr.tm.t_branch_timeout() > 0
        except Exception:
            pass
        failed_node = ctx.pv("$avp(approute_node)")
        # did the node answer at all?  The reply route marks every reply of
        # the node ($avp(approute_replied), see reply()); a failure with
        # neither a reply nor a timeout is local: the send failed (no
        # memory, no socket...) and tm made the answer up.  (tm's own
        # t_branch_replied() is not set for a final reply without a
        # provisional one, so it cannot tell.)
        replied = failed_node is not None and ctx.pv("$avp(approute_replied)") == failed_node
        local = not timeout and not replied
        if timeout or code == 0:
            code = 408
        if local:
            ctx.log_limited("local_failure", "call_id=%s: local failure %d towards %s: not "
                            "counted against the node" % (call_id, code, failed_node or "-"))
        elif s.report_results:
            # a 503 makes the node busy for its Retry-After (untrusted text:
            # a malformed one counts as none, health.busy_for applies)
            ra = retry_after_seconds(ctx.pv("$T_rpl($hdr(Retry-After))")) if code == 503 else None
            self.report_result(0 if timeout else code, failed_node, retry_after=ra)
        if timeout and failed_node and s.health_on_timeout:
            try:
                ctx.router.set_health(failed_node, s.health_on_timeout)
            except _ar.Error as e:
                ctx.log("warn", "set_health %s: %s" % (failed_node, e))
        try:
            d = ctx.router.retry(call_id, code=code)
        except _ar.NotFoundError:
            ctx.log("info", "retry call_id=%s code=%d: no session" % (call_id, code))
            return PASS
        ctx.note("retry", call_id, d, " code=%d from=%s" % (code, failed_node or "-"))
        if not d.ok:
            if d.reason == "retry_budget":
                # the app's retries for this second are spent: no further
                # node is tried; the caller may come back shortly
                ctx.log_limited("retry_budget", "call_id=%s: %s" % (clean(call_id, 80), clean(d.detail, 200)))
                ctx.ksr.hdr.append_to_reply("Retry-After: %d\r\n" % s.budget_retry_after)
                return ctx.fail(503, "Service Unavailable", NO_NODE)
            if code >= 500 or code == 408:
                if d.reason in KEY_REFUSALS:  # a strict key stays where its other calls are
                    # the room's node answered "full" (503): the room is full
                    return ctx.refuse_key(d, call_id, None, NO_NODE, full=code == 503)
                return ctx.fail(503, "No Node Available", NO_NODE)
            return PASS
        ksr.seturi(ctx.pv("$ru") or ctx.pv("$ou"))
        ksr.setdsturi(d.uri)
        ctx.set_avp("approute_node", d.node_id)
        if s.report_results:
            ctx.mark_sent()
        ksr.tm.t_on_failure(route_name or s.failure_route)
        if ksr.tm.t_relay() < 0:
            ctx.log("err", "relay to %s failed for call_id=%s" % (d.uri, call_id))
            self.end(call_id, "relay error", answered=False)
            return ctx.fail(500, "Relay Failed", INTERNAL)
        return OK

    # ----- replies to the INVITE ------------------------------------------------

    def reply(self) -> int:
        """Any reply of the node: marks that it answered; a 2xx to the INVITE
        confirms the session and reports the result (once per transaction)."""
        ctx = self.ctx
        router = ctx.router
        if router is None:
            return OK
        pv = ctx.ksr.pv
        status = str(pv.get("$rs") or "")
        node = pv.get("$avp(approute_node)")
        if node is not None and pv.get("$avp(approute_replied)") != node:
            # this node answered (failure(): not a local failure)
            pv.sets("$avp(approute_replied)", str(node))
        if node is not None:
            self.overload(str(node), pv.get("$hdr(Via)"))
        if not status.startswith("2"):
            return OK
        method = pv.get("$rm")  # $rm is the CSeq method on replies
        if method is not None and method != "INVITE":
            return OK
        call_id = str(pv.get("$ci") or "")
        try:
            router.confirm(call_id)
        except (_ar.NotFoundError, _ar.FailedPreconditionError) as e:
            ctx.log("dbg", "confirm call_id=%s: %s" % (call_id, e))
            return OK
        if not ctx.settings.report_results:
            return OK
        # a retransmitted 2xx runs this route again: report the result once.
        # $avp(approute_t0) (a transaction AVP) becomes "-" once reported.
        t0 = pv.get("$avp(approute_t0)")
        if t0 == "-":
            return OK
        pv.sets("$avp(approute_t0)", "-")
        try:
            code = int(status)
        except ValueError:
            code = 200
        self.report_result(code, str(node) if node else "", t0 or "")
        return OK

    def overload(self, node: str, via: Any) -> None:
        """RFC 7339: the overload control parameters of the top Via of the
        node's answer (ours, which the node marked), if any, to the router.
        Malformed ones are ignored (sip.via_overload)."""
        report = via_overload(via)
        if report is None:
            return
        fn = getattr(self.ctx.router, "report_overload", None)
        if fn is None:
            return
        try:
            fn(node, report.percent, report.validity_ms, report.seq)
        except Exception as e:  # a removed node, an old router: never fatal
            self.ctx.log("dbg", "report_overload %s: %s: %s" % (node, type(e).__name__, e))

    def report_result(self, code: int, node: Optional[str] = None, t0: Any = None,
                      retry_after: Optional[int] = None) -> None:
        """Feeds the node's final answer (0: none) to the router; ``node`` and
        ``t0``: the AVPs when the caller has already read them;
        ``retry_after``: a 503's Retry-After in seconds (None: none)."""
        ctx = self.ctx
        fn = getattr(ctx.router, "report_result", None)
        if fn is None:
            return
        if node is None:
            node = ctx.pv("$avp(approute_node)")
        if not node:
            return
        latency = 0.0
        if t0 is None:
            t0 = ctx.pv("$avp(approute_t0)")
        if t0 and t0 != "-":
            try:
                latency = max(0.0, (time.time() - float(t0)) * 1000.0)
            except ValueError:
                latency = 0.0
        try:
            if retry_after is None:
                fn(node, int(code), latency)
            else:
                fn(node, int(code), latency, retry_after=float(retry_after))
        except Exception as e:  # a removed node, an old router: never fatal
            ctx.log("dbg", "report_result %s %d: %s: %s" % (node, code, type(e).__name__, e))

    # ----- the end of a call ----------------------------------------------------

    def end(self, call_id: str, why: str, answered: bool = True) -> None:
        """Ends the session; an unanswered one is abandoned, so the claim a
        failed call made on its key goes at once (not after its grace)."""
        ctx = self.ctx
        router = ctx.router
        try:
            if answered:
                router.end(call_id)
            else:
                getattr(router, "abandon", router.end)(call_id)
        except _ar.NotFoundError:
            ctx.log("dbg", "end call_id=%s (%s): no session" % (call_id, why))
            return
        if ctx.settings.log_decisions:
            ctx.log("info", "end call_id=%s (%s)" % (call_id, why))

    def end_current(self, why: str, answered: bool = True) -> int:
        """Ends the session of the current message's Call-ID."""
        if self.ctx.router is not None:
            self.end(self.ctx.pv("$ci") or "", why, answered)
        return OK

    def cancel(self) -> int:
        """CANCEL: the session ends."""
        return self.end_current("cancel", answered=False)

    def relay_error(self) -> int:
        """t_relay() failed right after routing: the session ends."""
        return self.end_current("relay error", answered=False)

    def bye(self) -> int:
        """An in-dialog BYE, before it is relayed.  From a node (the node hung
        up): the session ends now (OK).  From anyone else: nothing yet
        (PASS); the script arms the BYE's reply route and bye_reply() ends
        the session when the session's node answers it 2xx.  A BYE sent
        elsewhere (a forged R-URI) never frees the node's capacity."""
        ctx = self.ctx
        if ctx.router is None:
            return OK
        node = self._node_at(ctx.pv("$si") or "", ctx.pv("$sp") or "")
        if node is not None and self._holds(node, ctx.pv("$ci") or ""):
            return self.end_current("bye from node %s" % node)
        return PASS  # the script arms the BYE's reply route (on_bye_reply)

    def bye_reply(self) -> int:
        """Reply route of a relayed BYE: a 2xx from the session's own node
        (the node has the BYE and let the call go) ends the session."""
        ctx = self.ctx
        if ctx.router is None:
            return OK
        status = ctx.pv("$rs") or ""
        if not status.startswith("2") or ctx.pv("$rm") not in (None, "BYE"):
            return OK
        call_id = ctx.pv("$ci") or ""
        src, port = ctx.pv("$si") or "", ctx.pv("$sp") or ""
        node = self._node_at(src, port)
        if node is None or not self._holds(node, call_id):
            ctx.log_limited("bye_elsewhere", "call_id=%s: BYE answered %s by %s:%s, not by "
                            "a node: the session stays" % (clean(call_id, 80), status, src, port))
            return OK
        return self.end_current("bye answered by node %s" % node)

    @staticmethod
    def _holds(node: str, call_id: str) -> bool:
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
        for n in self.ctx.router.nodes():
            for a in uri_addrs(getattr(n, "uri", "") or ""):
                addrs[a] = n.id
        self._node_addrs = addrs
        return addrs.get((ip, p))

    # ----- housekeeping -----------------------------------------------------------

    def sweep(self) -> int:
        """Periodic housekeeping (rtimer): expires sessions that outlived their
        lifetime (lost BYEs) and affinities past their grace time."""
        sweep = getattr(self.ctx.router, "sweep", None)
        if sweep is not None:
            n = sweep()
            if n:
                self.ctx.log("info", "sweep expired %d record(s)" % n)
        return OK

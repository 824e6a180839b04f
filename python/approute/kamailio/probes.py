"""Active health probes: SIP OPTIONS sent from Kamailio with
``uac_req_send()`` on the rtimer (one round every ``probe.interval``), their
final response timeout (``tm:local-request``), and their answers
(``uac:reply``) fed to ``router.report_probe(node, code, rtt_ms,
retry_after)``, code 0 for no answer, ``retry_after`` the Retry-After of a
503 (the node is busy, not down).  A failure of the proxy itself is never
counted against a node."""

from __future__ import annotations

import time
from typing import Optional

from .context import OK, Context
from .sip import PROBE_HEADER, clean, retry_after_seconds


class Probes:
    """The OPTIONS probes of one handler (only the rtimer process sends)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.last_round = 0.0  # monotonic time of the last round sent

    def tick(self) -> int:
        """rtimer tick (every second): a round of probes when one is due."""
        opts = self.ctx.settings.probe
        if not opts.enabled or self.ctx.router is None:
            return OK
        now = time.monotonic()
        # the rtimer ticks every second; a round is due once the interval has
        # passed (a little slack so that interval 1 means every tick)
        if self.last_round and now - self.last_round < opts.interval - 0.05:
            return OK
        if getattr(self.ctx.router, "report_probe", None) is None:
            self.ctx.warn_once("report_probe", "probes need a router with report_probe()")
            return OK
        self.last_round = now
        for n in self.ctx.router.nodes():
            if getattr(n, "state", "active") in opts.states:
                self._send(n.id, n.uri)
        return OK

    def _send(self, node_id: str, uri: str) -> bool:
        ksr = self.ctx.ksr
        pv = ksr.pv
        pv.sets("$uac_req(method)", "OPTIONS")
        pv.sets("$uac_req(ruri)", uri)
        pv.sets("$uac_req(turi)", uri)
        pv.sets("$uac_req(furi)", self.ctx.settings.probe.from_uri)
        pv.sets("$uac_req(hdrs)", "%s: %s\r\nMax-Forwards: 1\r\n" % (PROBE_HEADER, clean(node_id)))
        # node id and send time travel with the transaction to uac:reply
        pv.sets("$uac_req(evparam)", "%.6f|%s" % (time.time(), node_id))
        pv.seti("$uac_req(evroute)", 1)
        if ksr.uac.uac_req_send() < 0:
            # the proxy could not send (short of memory, no socket): that
            # says nothing about the node, so nothing is reported
            self.ctx.log_limited("probe_send", "probe %s (%s): uac_req_send failed locally; "
                                 "not counted against the node" % (node_id, uri))
            return False
        return True

    def request(self) -> int:
        """tm:local-request of a probe: bounds the wait for its final answer
        to probe.timeout (t_set_fr applies to this transaction)."""
        ms = int(round(self.ctx.settings.probe.timeout * 1000))
        self.ctx.ksr.tm.t_set_fr(0, ms)
        return OK

    def reply(self) -> int:
        """uac:reply: the probe's final answer, or its timeout."""
        param = self.ctx.pv("$uac_req(evparam)") or ""
        if "|" not in param:
            return OK  # not one of ours
        t0_s, node_id = param.split("|", 1)
        try:
            rtt = max(0.0, (time.time() - float(t0_s)) * 1000.0)
        except ValueError:
            return OK
        try:
            evtype = int(self.ctx.pv("$uac_req(evtype)") or 0)
            code = int(self.ctx.pv("$uac_req(evcode)") or 0)
        except ValueError:
            evtype, code = 2, 0
        # evtype 2: no reply from the node, tm made one up: 408 is the
        # timeout (the node's fault, code 0); anything else (477 send
        # failure, 500 no memory...) is local and says nothing about the node
        if evtype != 1:
            if code not in (0, 408):
                self.ctx.log_limited("probe_local", "probe %s: local failure %d; not counted "
                                     "against the node" % (node_id, code))
                return OK
            code = 0
        # the answer is the event route's message: a 503's Retry-After
        # (untrusted: a malformed one counts as none)
        ra = retry_after_seconds(self.ctx.pv("$hdr(Retry-After)")) if code == 503 else None
        self._result(node_id, code, rtt, ra)
        return OK

    def _result(self, node_id: str, code: int, rtt: float, retry_after: Optional[int] = None) -> None:
        fn = getattr(self.ctx.router, "report_probe", None)
        if fn is None:
            return
        try:
            if retry_after is None:
                fn(node_id, int(code), float(rtt))
            else:
                fn(node_id, int(code), float(rtt), retry_after=float(retry_after))
        except Exception as e:  # the node left meanwhile
            self.ctx.log("dbg", "report_probe %s: %s: %s" % (node_id, type(e).__name__, e))
            return
        self.ctx.log("dbg", "probe node=%s code=%d rtt_ms=%.1f" % (node_id, code, rtt))

    def is_probe_request(self) -> bool:
        """Whether the current request is one of our OPTIONS probes."""
        try:
            return (self.ctx.pv("$rm") == "OPTIONS"
                    and self.ctx.pv("$hdr(%s)" % PROBE_HEADER) is not None)
        except Exception:
            return False

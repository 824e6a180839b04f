"""The agent itself: the report loop (retransmissions, backoff, entity tags, the
graceful leave on SIGTERM) and the ``approute agent`` command."""

from __future__ import annotations

import argparse
import json
import logging
import random
import select
import signal
import socket
import sys
import time
import uuid
from typing import Any, Callable, Dict, Optional, Sequence, TextIO

from .collect import Collector
from .config import EXIT_ERROR, EXIT_OK, EXIT_USAGE, T2, AgentConfig, AgentError, log
from .message import Response, _token, build_publish, default_signer, parse_response


class Agent:
    """Sends the reports; ``run()`` until ``stop()`` (or SIGTERM), then leaves."""

    def __init__(self, cfg: AgentConfig, *, sign: Optional[Callable[..., str]] = None,
                 collect: Optional[Callable[[], Dict[str, Any]]] = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Optional[random.Random] = None):
        self.cfg = cfg
        self.sign = sign or default_signer()
        self.collect = collect or Collector(cfg)
        self.clock = clock
        self.rng = rng or random.Random()
        self.sock = socket.socket(socket.AF_INET6 if ":" in cfg.proxy[0] else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self.sock.bind(cfg.bind)
        self.sock.connect(cfg.proxy)  # only the proxy's datagrams reach us
        self.local = self.sock.getsockname()[:2]
        self.call_id = "%s@%s" % (uuid.uuid4().hex, self.local[0])
        self.from_tag = _token(12)
        self.aor = "sip:%s@%s" % (cfg.node, AgentConfig._uri_host(cfg.proxy[0]))
        self.cseq = 0
        self.seq = int(time.time() * 1000)  # grows across restarts too
        self.etag: Optional[str] = None
        self.lease_until = 0.0
        self.last_payload: Optional[Dict[str, Any]] = None
        self.failures = 0
        self.conflicts = 0
        self.accepted = 0
        self.last_response: Optional[Response] = None
        self._stop = False

    # ----- life cycle ---------------------------------------------------------

    def stop(self, *_: Any) -> None:
        self._stop = True

    @property
    def stopping(self) -> bool:
        return self._stop

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _wait(self, seconds: float) -> None:
        """Sleeps, waking early when asked to stop."""
        end = self.clock() + max(0.0, seconds)
        while not self._stop:
            left = end - self.clock()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def run(self, once: bool = False) -> int:
        """Reports until stopped; leaves gracefully.  ``once``: one report."""
        try:
            while not self._stop:
                delay = self.step()
                if once:
                    return EXIT_OK if self.last_response is not None and \
                        self.last_response.code == 200 else EXIT_ERROR
                self._wait(delay)
            self.leave()
            return EXIT_OK
        finally:
            self.close()

    # ----- one report -------------------------------------------------------------

    def backoff(self) -> float:
        base = min(self.cfg.backoff_max, self.cfg.backoff_initial * (2 ** max(0, self.failures - 1)))
        return float(base * self.rng.uniform(0.5, 1.0))

    def _body(self, payload: Dict[str, Any]) -> str:
        self.seq = max(self.seq + 1, int(time.time() * 1000))
        report = dict(payload)
        report["seq"] = self.seq
        return json.dumps(report, separators=(",", ":"), sort_keys=False)

    def step(self) -> float:
        """Sends one report; returns the delay until the next one."""
        now = self.clock()
        if self.etag is not None and now >= self.lease_until:
            log.info("lease ran out before a refresh got through: joining again")
            self.etag = None
        payload = self.collect()
        refresh = (self.etag is not None and self.cfg.refresh_unchanged
                   and payload == self.last_payload)
        body = None if refresh else self._body(payload)
        resp = self.publish(body, self.cfg.expires)
        self.last_response = resp
        if resp is None:
            if self._stop:
                return 0.0
            self.failures += 1
            delay = self.backoff()
            log.warning("no answer from %s:%d (attempt %d); retrying in %.1fs",
                        self.cfg.proxy[0], self.cfg.proxy[1], self.failures, delay)
            return delay
        if resp.code == 200:
            granted = resp.expires if resp.expires is not None else self.cfg.expires
            if resp.etag:
                self.etag = resp.etag
            self.lease_until = self.clock() + granted
            self.last_payload = payload
            self.failures = 0
            self.conflicts = 0
            self.accepted += 1
            log.debug("report accepted: etag=%s expires=%s", self.etag, granted)
            # refresh well before the granted lease runs out
            return max(0.05, min(self.cfg.interval, granted * 0.8 if granted > 0 else 1.0))
        if resp.code == 412:
            # the proxy does not know our entity tag (restart, lease expiry):
            # the next report is a full initial PUBLISH
            log.info("412 %s: sending an initial report", resp.reason)
            self.etag = None
            self.last_payload = None
            self.conflicts += 1
            if self.conflicts <= 1:
                return 0.0
            self.failures += 1
            return self.backoff()
        self.failures += 1
        delay = self.backoff()
        log.error("report refused: %d %s; retrying in %.1fs", resp.code, resp.reason, delay)
        return delay

    def leave(self) -> Optional[Response]:
        """Graceful leave: PUBLISH with Expires: 0 (when we hold a lease)."""
        if self.etag is None:
            return None
        self._stop = False  # let the last transaction run
        try:
            resp = self.publish(None, 0, timeout=min(self.cfg.transaction_timeout, 3.0))
        finally:
            self._stop = True
        self.last_response = resp
        if resp is not None and resp.code == 200:
            log.info("left: lease removed")
            self.etag = None
        else:
            log.warning("leave not confirmed: %s", resp)
        return resp

    # ----- one transaction ----------------------------------------------------------

    def message(self, body: Optional[str], expires: int, branch: str) -> bytes:
        self.cseq += 1
        auth = self.sign(body or "", keyid=self.cfg.keyid, secret=self.cfg.secret, node=self.cfg.node,
                         etag=self.etag or "", expires=expires)
        return build_publish(request_uri=self.cfg.publish_uri, via=self.local, branch=branch,
                             aor=self.aor, from_tag=self.from_tag, call_id=self.call_id,
                             cseq=self.cseq, expires=expires, body=body, etag=self.etag,
                             auth=auth)

    def publish(self, body: Optional[str], expires: int,
                timeout: Optional[float] = None) -> Optional[Response]:
        """One non-INVITE client transaction over UDP: sends, retransmits
        (T1 doubling up to T2), returns the final response or None."""
        branch = "z9hG4bK" + _token(20)
        data = self.message(body, expires, branch)
        timeout = self.cfg.transaction_timeout if timeout is None else timeout
        start = self.clock()
        deadline = start + timeout
        interval = self.cfg.t1
        next_send = start
        while not self._stop:
            now = self.clock()
            if now >= deadline:
                return None
            if now >= next_send:
                try:
                    self.sock.send(data)
                except OSError as e:  # unreachable network, no route...
                    log.debug("send: %s", e)
                next_send = now + interval
                interval = min(interval * 2, T2)
            wait = max(0.0, min(next_send, deadline) - self.clock())
            try:
                ready, _, _ = select.select([self.sock], [], [], min(wait, 0.1))
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            if not ready:
                continue
            try:
                packet = self.sock.recv(65535)
            except ConnectionRefusedError:  # ICMP port unreachable: keep trying
                continue
            except OSError as e:
                log.debug("recv: %s", e)
                continue
            resp = parse_response(packet, branch)
            if resp is None:
                continue
            if resp.code < 200:
                interval = T2  # provisional: keep the request alive, less often
                next_send = self.clock() + interval
                continue
            return resp
        return None



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", required=True,
                   help="agent configuration (YAML)")
    p.add_argument("--once", action="store_true",
                   help="send one report, print the answer and exit (0 when accepted)")
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print the report that would be sent and exit")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])



def run_from_args(args: argparse.Namespace, out: Optional[TextIO] = None,
                  err: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=err,
                        format="approute-agent: %(levelname)s %(message)s")
    try:
        cfg = AgentConfig.from_file(args.config)
    except AgentError as e:
        err.write("approute agent: error: %s\n" % e)
        return EXIT_ERROR
    if args.print_only:
        collect = Collector(cfg)
        time.sleep(0.2)  # a CPU delta needs two samples
        out.write(json.dumps(collect(), indent=2, sort_keys=True) + "\n")
        return EXIT_OK
    try:
        agent = Agent(cfg)
    except OSError as e:
        err.write("approute agent: error: socket: %s\n" % e)
        return EXIT_ERROR
    if args.once:
        time.sleep(0.2)
        rc = agent.run(once=True)
        out.write("%s\n" % (agent.last_response or "no answer"))
        return rc
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, agent.stop)
    log.info("reporting %s to %s:%d every %gs (lease %ds)", cfg.node, cfg.proxy[0],
             cfg.proxy[1], cfg.interval, cfg.expires)
    return agent.run()



def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="approute agent",
                                description="Report this node's status to the approute proxy.")
    add_arguments(p)
    try:
        args = p.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    return run_from_args(args)

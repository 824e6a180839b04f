#!/usr/bin/env python3
"""A conference node that enforces its capacity: a small SIP UAS on UDP.

    node.py --port 5081 --capacity 30 --log node1.log

It answers an INVITE with 200 OK while it holds fewer than --capacity calls,
and with 503 Service Unavailable once it is full (what an Asterisk whose
conference bridge is full does); a BYE ends the call (200 OK). OPTIONS get
200 (health probes, dispatcher pings). Retransmitted INVITEs and BYEs get
the answer they got the first time. Replies go back to the address the
request came from (the proxy), with the Via, From, To (plus a tag), Call-ID,
CSeq and Record-Route of the request, as RFC 3261 asks of a UAS.

SIPp cannot play this node: a SIPp scenario runs per call and cannot count
the calls of the others.

Each event is one line of --log, with the wall-clock time:
    <unix time> ACCEPT <call-id> <R-URI user> <calls held after>
    <unix time> BUSY <call-id> <R-URI user> <calls held>
    <unix time> BYE <call-id> <R-URI user> <calls held after>
It stops on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import sys
import time
from typing import Dict, List, Optional, Tuple

_LINE = re.compile(r"^([A-Z]+) (\S+) SIP/2\.0$")
_USER = re.compile(r"^sips?:([^@;>]+)@")


class Request:
    """The parts of a SIP request this node needs (start line and headers)."""

    def __init__(self, method: str, uri: str, headers: List[Tuple[str, str]]):
        self.method = method
        self.uri = uri
        self.headers = headers

    def all(self, name: str) -> List[str]:
        return [v for k, v in self.headers if k == name]

    def one(self, name: str) -> str:
        v = self.all(name)
        return v[0] if v else ""


_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}


def parse(data: bytes) -> Optional[Request]:
    """A request's start line and headers, or None for a reply or junk."""
    try:
        text = data.decode("utf-8", "replace")
    except Exception:
        return None
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    m = _LINE.match(head[0]) if head else None
    if m is None:
        return None
    headers: List[Tuple[str, str]] = []
    for line in head[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            k, v = headers[-1]
            headers[-1] = (k, v + " " + line.strip())
            continue
        if ":" not in line:
            continue
        k, v = line.split(":", 1)
        k = k.strip().lower()
        headers.append((_COMPACT.get(k, k), v.strip()))
    return Request(m.group(1), m.group(2), headers)


class Node:
    def __init__(self, port: int, capacity: int, log_path: str, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host, self.port = host, port
        self.capacity = capacity
        self.log = open(log_path, "a", buffering=1)
        self.calls: Dict[str, str] = {}          # call-id -> R-URI user (answered, not ended)
        self.answers: Dict[Tuple[str, str], bytes] = {}  # (call-id, CSeq) -> reply sent
        self.tag = 0

    def note(self, what: str, call_id: str, user: str) -> None:
        self.log.write("%.6f %s %s %s %d\n" % (time.time(), what, call_id, user or "-", len(self.calls)))

    def reply(self, req: Request, code: int, reason: str, to_tag: bool, body: str = "") -> bytes:
        lines = ["SIP/2.0 %d %s" % (code, reason)]
        lines += ["Via: %s" % v for v in req.all("via")]
        lines += ["Record-Route: %s" % v for v in req.all("record-route")]
        lines.append("From: %s" % req.one("from"))
        to = req.one("to")
        if to_tag and ";tag=" not in to:
            self.tag += 1
            to += ";tag=node%d-%d" % (self.port, self.tag)
        lines.append("To: %s" % to)
        lines.append("Call-ID: %s" % req.one("call-id"))
        lines.append("CSeq: %s" % req.one("cseq"))
        if code == 200 and req.method == "INVITE":
            lines.append("Contact: <sip:node@%s:%d>" % (self.host, self.port))
            lines.append("Content-Type: application/sdp")
        lines.append("Content-Length: %d" % len(body.encode()))
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def sdp(self) -> str:
        return ("v=0\r\no=node 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
                "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % (self.host, self.host))

    def handle(self, req: Request, addr) -> None:
        call_id = req.one("call-id")
        seen = self.answers.get((call_id, req.one("cseq")))
        if seen is not None and req.method != "ACK":  # a retransmission: the same answer
            self.sock.sendto(seen, addr)
            return
        m = _USER.match(req.uri)
        user = m.group(1) if m else ""
        if req.method == "INVITE":
            if len(self.calls) >= self.capacity:
                out = self.reply(req, 503, "Service Unavailable", True)
                self.note("BUSY", call_id, user)
            else:
                self.calls[call_id] = user
                out = self.reply(req, 200, "OK", True, self.sdp())
                self.note("ACCEPT", call_id, user)
        elif req.method == "ACK":
            return
        elif req.method in ("BYE", "CANCEL"):
            user = self.calls.pop(call_id, None) or user
            out = self.reply(req, 200, "OK", False)
            if req.method == "BYE":
                self.note("BYE", call_id, user)
        else:  # OPTIONS and anything else: we are here
            out = self.reply(req, 200, "OK", False)
        if len(self.answers) > 100000:
            self.answers.clear()
        self.answers[(call_id, req.one("cseq"))] = out
        self.sock.sendto(out, addr)

    def serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except InterruptedError:
                continue
            req = parse(data)
            if req is not None:
                self.handle(req, addr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--capacity", type=int, required=True, help="calls held at once; beyond: 503")
    ap.add_argument("--log", required=True)
    args = ap.parse_args(argv)
    node = Node(args.port, args.capacity, args.log, args.host)

    def stop(signum, frame):
        node.log.close()
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    node.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

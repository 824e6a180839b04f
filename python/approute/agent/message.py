"""The SIP side of a report: the signed PUBLISH request the agent sends and the
responses it reads (status line, SIP-ETag, Expires, Via branch)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Callable, Optional, Tuple, cast

from .config import AUTH_HEADER, CONTENT_TYPE, EVENT, USER_AGENT


def sign_report_py(body: str, *, keyid: str, secret: str, node: Optional[str] = None, etag: str = "",
                   expires: int = 3600, ts: Optional[int] = None) -> str:
    """Pure-Python twin of ``approute.sign_report``: the value of the
    X-Approute-Auth header, ``keyid=K,ts=T,sig=HEX`` where HEX is the
    HMAC-SHA256 under ``secret`` of ``"{ts}\\n{node}\\n{etag}\\n{expires}\\n{body}"``
    (node defaults to the body's ``node`` field)."""
    if ts is None:
        ts = int(time.time())
    if node is None:
        node = str(json.loads(body)["node"]) if body else ""
    data = "%d\n%s\n%s\n%d\n%s" % (ts, node, etag, int(expires), body)
    mac = hmac.new(secret.encode("utf-8"), data.encode("utf-8"), hashlib.sha256).hexdigest()
    return "keyid=%s,ts=%d,sig=%s" % (keyid, ts, mac)



def default_signer() -> Callable[..., str]:
    """``approute.sign_report`` when the installed core has it, else the
    pure-Python twin (same format)."""
    try:
        import approute
        fn = getattr(approute, "sign_report", None)
        if fn is not None:
            return cast(Callable[..., str], fn)
    except ImportError:  # pragma: no cover - the agent ships inside approute
        pass
    return sign_report_py



def _token(n: int = 16) -> str:
    return uuid.uuid4().hex[:n]



def build_publish(*, request_uri: str, via: Tuple[str, int], branch: str, aor: str,
                  from_tag: str, call_id: str, cseq: int, expires: int,
                  body: Optional[str], etag: Optional[str], auth: Optional[str],
                  user_agent: str = USER_AGENT) -> bytes:
    """The text of one PUBLISH request of the approute-status package."""
    host, port = via
    if ":" in host:
        host = "[%s]" % host
    payload = (body or "").encode("utf-8")
    lines = [
        "PUBLISH %s SIP/2.0" % request_uri,
        "Via: SIP/2.0/UDP %s:%d;branch=%s;rport" % (host, port, branch),
        "Max-Forwards: 70",
        "From: <%s>;tag=%s" % (aor, from_tag),
        "To: <%s>" % aor,
        "Call-ID: %s" % call_id,
        "CSeq: %d PUBLISH" % cseq,
        "Event: %s" % EVENT,
        "Expires: %d" % expires,
    ]
    if etag:
        lines.append("SIP-If-Match: %s" % etag)
    if auth:
        lines.append("%s: %s" % (AUTH_HEADER, auth))
    lines.append("User-Agent: %s" % user_agent)
    if payload:
        lines.append("Content-Type: %s" % CONTENT_TYPE)
    lines.append("Content-Length: %d" % len(payload))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload



class Response:
    """What the agent reads from a response: status and two headers."""

    def __init__(self, code: int, reason: str, etag: Optional[str] = None,
                 expires: Optional[int] = None):
        self.code, self.reason, self.etag, self.expires = code, reason, etag, expires

    def __repr__(self) -> str:
        return "Response(%d %s etag=%s expires=%s)" % (self.code, self.reason, self.etag,
                                                        self.expires)



_STATUS_RE = re.compile(r"^SIP/2\.0 ([1-6]\d\d) ?([^\r\n]*)")



def parse_response(data: bytes, branch: Optional[str] = None) -> Optional[Response]:
    """The status line, SIP-ETag and Expires of a response, or None when the
    datagram is not a response (to our transaction, if ``branch`` is given)."""
    text = data.decode("utf-8", "replace")
    m = _STATUS_RE.match(text)
    if not m:
        return None
    head = text.split("\r\n\r\n", 1)[0]
    if branch is not None and ("branch=" + branch) not in head:
        return None
    etag = expires = None
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == "sip-etag":
            etag = value.strip() or None
        elif name == "expires" and value.strip().isdigit():
            expires = int(value.strip())
    return Response(int(m.group(1)), m.group(2).strip(), etag, expires)

"""SIP text checks: what the handler reads from a request or writes into a
header, a reason phrase or a log line.  Pure functions of text (no Kamailio,
no router): printable one-line values, reason phrases the grammar allows,
entity tags, the values sent to Asterisk, node URIs as addresses, source
addresses against networks, and ``Refused``, the plain answer to a request
that fails one of these checks."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any, Dict, List, Optional, Tuple, Union

#: A network of ``trusted_sources`` / ``allow_sources``.
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Characters a value sent to Asterisk (X-Exec-App, X-Exec-App-Data) may
#: hold: a Stasis application name and its argument are split on commas and
#: read by the dialplan, so nothing but these.
SAFE_VALUE_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

#: The SIP event package of the status reports (docs/status-package.md).
STATUS_EVENT = "approute-status"
#: Header carrying the report's credential (see approute.sign_report).
AUTH_HEADER = "X-Approute-Auth"
#: Header that marks the proxy's own OPTIONS probes.
PROBE_HEADER = "X-Approute-Probe"

_UNPRINTABLE_RE = re.compile(r"[^\x20-\x7e]")


def clean(text: Any, limit: int = 120) -> str:
    """One line of printable text (log lines, reason phrases, header values):
    at most ``limit`` characters, each one outside ASCII 32..126 replaced by
    a space."""
    s = str(text)[:limit]
    if s.isascii() and s.isprintable():  # the usual case: nothing to replace
        return s
    return _UNPRINTABLE_RE.sub(" ", s)


# Characters a Reason-Phrase may not carry as such (RFC 3261 section 25.1:
# reserved / unreserved / escaped / UTF8 / SP / HTAB), and what replaces them.
_REASON_MAP = {'"': "'", "<": "(", ">": ")", "[": "(", "]": ")", "{": "(", "}": ")",
               "#": " ", "%": " ", "\\": "/", "^": " ", "`": "'", "|": "/"}
DEFAULT_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden",
                   412: "Conditional Request Failed", 413: "Request Entity Too Large",
                   414: "Request-URI Too Long", 415: "Unsupported Media Type",
                   423: "Interval Too Brief", 489: "Bad Event",
                   500: "Server Internal Error", 503: "Service Unavailable"}
_TOKEN_RE = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")


def reason_phrase(text: Any, code: int = 0, limit: int = 100) -> str:
    """A SIP Reason-Phrase from free text: one line, no characters the
    grammar forbids, at most ``limit`` characters; the standard phrase of
    ``code`` when nothing is left."""
    s = clean(text if text is not None else "", 400)
    s = "".join(_REASON_MAP.get(ch, ch) for ch in s)
    s = " ".join(s.split())[:limit].strip()
    return s or DEFAULT_REASONS.get(int(code), "Error")


def etag_value(etag: Any) -> Optional[str]:
    """An entity tag usable as a header value (a SIP token), or None."""
    s = str(etag or "").strip()
    return s if s and len(s) <= 128 and _TOKEN_RE.match(s) else None


_URI_HOST_RE = re.compile(r"^(sips?):(?:[^@;>]*@)?(\[[^\]]+\]|[^:;>?]+)(?::(\d+))?")
_resolved: Dict[str, List[str]] = {}


def uri_addrs(uri: str) -> List[Tuple[str, int]]:
    """(ip, port) pairs a node URI stands for (a host name is resolved once
    per process; port 5060, or 5061 for sips, when none is given)."""
    m = _URI_HOST_RE.match(uri.strip())
    if not m:
        return []
    host = m.group(2).strip("[]")
    port = int(m.group(3) or (5061 if m.group(1) == "sips" else 5060))
    ips = _resolved.get(host)
    if ips is None:
        try:
            ips = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                ips = sorted({str(ai[4][0]) for ai in socket.getaddrinfo(host, port)})
            except OSError:
                ips = []
        _resolved[host] = ips
    return [(ip, port) for ip in ips]


class Refused(Exception):
    """A request refused with a plain SIP answer; ``detail`` goes to the log."""

    def __init__(self, code: int, reason: str, detail: str):
        super().__init__(detail)
        self.code, self.reason, self.detail = code, reason, detail


def check_utf8(name: str, v: str) -> None:
    """Refuses a value that cannot be UTF-8 (a lone surrogate, as a
    ``surrogateescape`` decoding of bad bytes leaves): the core takes
    UTF-8 only, and such a value is a malformed request, not a crash."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(400, "Bad Request", "%s is not valid UTF-8" % name) from None


def in_networks(addr: str, nets: Tuple[Network, ...]) -> bool:
    """Whether the address ``addr`` (text, as $si gives it) is in ``nets``."""
    if not nets or not addr:
        return False
    try:
        ip = ipaddress.ip_address(addr.strip("[]"))
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in nets)


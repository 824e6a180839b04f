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



#: The longest Retry-After the handler passes on (the router cuts it further
#: to health.busy_max).
MAX_RETRY_AFTER = 86400
_RETRY_AFTER_RE = re.compile(r"^[ \t]*([0-9]{1,10})[ \t]*"          # delta-seconds
                             r"(?:\([^()\r\n]{0,200}\))?[ \t]*"     # [comment]
                             r"(?:;[^\r\n]{0,200})?$")               # *(;retry-param)


def retry_after_seconds(value: Any) -> Optional[int]:
    """The delta-seconds of a Retry-After header value (RFC 3261 section
    20.33: ``delta-seconds [comment] *(;retry-param)``), cut to
    MAX_RETRY_AFTER; None when there is none or it is malformed (a node's
    answer is untrusted input: anything else is ignored, never an error)."""
    if value is None:
        return None
    m = _RETRY_AFTER_RE.match(str(value)[:512])
    return min(int(m.group(1)), MAX_RETRY_AFTER) if m else None


class OverloadReport:
    """RFC 7339 overload control from the top Via of a node's answer."""

    __slots__ = ("percent", "validity_ms", "seq")

    def __init__(self, percent: int, validity_ms: int, seq: int):
        self.percent, self.validity_ms, self.seq = percent, validity_ms, seq

    def __repr__(self) -> str:
        return "OverloadReport(percent=%d, validity_ms=%d, seq=%d)" % (
            self.percent, self.validity_ms, self.seq)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OverloadReport) and (
            (self.percent, self.validity_ms, self.seq) == (other.percent, other.validity_ms, other.seq))


#: RFC 7339 sections 4.3 and 5.2: oc-validity when the answer names none
#: (milliseconds).
OC_DEFAULT_VALIDITY_MS = 500
#: The longest oc-validity passed on (a day; the router refuses longer; the
#: RFC sets no bound).
OC_MAX_VALIDITY_MS = 86_400_000
_VIA_PARAM_RE = re.compile(r'^([A-Za-z0-9.!%*_+`\'~-]{1,32})'                      # token
                           r'(?:[ \t]*=[ \t]*("[^"\\\r\n]{0,64}"|[^\s";,]{1,64}))?$')  # [= value]
_OC_SEQ_RE = re.compile(r"^([0-9]{1,12})(?:\.([0-9]{1,5}))?$")


def _via_params(via: str) -> Optional[Dict[str, str]]:
    """The parameters of the first via-parm of a Via header value, names
    lower-cased; None when it is malformed.  A quoted string never holds a
    separator (RFC 7339's only quoted value is oc-algo's algorithm list)."""
    first, inside = [], False
    for ch in via:
        if ch == '"':
            inside = not inside
        elif ch == "," and not inside:
            break
        first.append(ch)
    if inside:
        return None
    parts = "".join(first).split(";")
    params: Dict[str, str] = {}
    for p in parts[1:]:
        m = _VIA_PARAM_RE.match(p.strip())
        if not m:
            return None
        params[m.group(1).lower()] = m.group(2) or ""
    return params


def via_overload(via: Any) -> Optional[OverloadReport]:
    """RFC 7339 (loss algorithm) from the top Via of a node's answer:
    ``oc`` (0..100 %, section 7.1; 0 ends overload control), ``oc-validity``
    (ms, 500 when absent, section 4.3; 0 ends overload control, section
    5.7), ``oc-seq`` (section 9: ``seconds.fraction``, the integer alone
    accepted too as section 4.4 words it; as seconds x 100000 + the
    fraction in five digits, so that it orders as the text does; 0 when the
    node leaves it out) and ``oc-algo`` ("loss", the default, section 4.2).
    None when the Via carries no ``oc`` value (a non-zero oc-validity
    without it is discarded, section 4.3), names another algorithm, or is
    malformed: a node's answer is untrusted input.  What an equal or older
    oc-seq does is the router's (Router.report_overload)."""
    if via is None:
        return None
    text = str(via)
    if len(text) > 1024 or "oc" not in text:
        return None
    params = _via_params(text)
    if params is None or not params.get("oc"):
        return None
    oc, validity, seq_text = params["oc"], params.get("oc-validity"), params.get("oc-seq", "0")
    algo = params.get("oc-algo", '"loss"').strip('"').strip().lower()
    if algo != "loss" or not oc.isdigit() or len(oc) > 3 or int(oc) > 100:
        return None
    if validity is None or validity == "":
        validity_ms = OC_DEFAULT_VALIDITY_MS
    elif validity.isdigit() and len(validity) <= 12:
        validity_ms = min(int(validity), OC_MAX_VALIDITY_MS)
    else:
        return None
    m = _OC_SEQ_RE.match(seq_text)
    if not m:
        return None
    seq = int(m.group(1)) * 100000 + int((m.group(2) or "0").ljust(5, "0"))
    return OverloadReport(int(oc), validity_ms, seq)

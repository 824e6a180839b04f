"""A fake of Kamailio's KSR module for the handler's tests and fuzz harness
(the Kamailio + SIPp tests are tests/e2e): pseudo-variables are a dict,
headers a list, and everything the handler does to the message (headers
appended, replies, relays, probes sent, log lines) is recorded."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

#: The PVs of the default request: an INVITE from alice to the conference.
DEFAULT_PVS: Dict[str, Any] = {
    "$ci": "call-1", "$fU": "alice", "$fd": "acme.example.com",
    "$fu": "sip:alice@acme.example.com", "$tU": "conference",
    "$td": "service.example.com", "$tu": "sip:conference@service.example.com",
    "$rU": "conference", "$rd": "service.example.com",
    "$ru": "sip:conference@service.example.com", "$si": "127.0.0.1", "$rm": "INVITE"}


def _header_line(text: str) -> Tuple[str, str]:
    """'Name: value\\r\\n' as (name, value); one line, or AssertionError."""
    assert text.endswith("\r\n") and "\r\n" not in text[:-2], repr(text)
    k, v = text[:-2].split(":", 1)
    return k, v.strip()


class FakePV:
    def __init__(self, ksr: "FakeKSR"):
        self.ksr = ksr

    def get(self, name: str) -> Any:
        if name.startswith("$hdr("):
            h = name[5:-1].lower()
            for k, v in self.ksr.headers:
                if k.lower() == h:
                    return v
            return None
        return self.ksr.vars.get(name)

    def sets(self, name: str, value: Any) -> None:
        self.ksr.vars[name] = str(value)

    def seti(self, name: str, value: Any) -> None:
        self.ksr.vars[name] = int(value)


class FakeHdr:
    def __init__(self, ksr: "FakeKSR"):
        self.ksr = ksr

    def is_present(self, name: str) -> int:
        return 1 if any(k.lower() == name.lower() for k, _ in self.ksr.headers) else -1

    def remove(self, name: str) -> int:
        self.ksr.headers = [(k, v) for k, v in self.ksr.headers if k.lower() != name.lower()]
        return 1

    def append(self, text: str) -> int:
        self.ksr.appended_text.append(text)
        self.ksr.appended.append(_header_line(text))
        return 1

    def append_to_reply(self, text: str) -> int:
        self.ksr.reply_headers.append(_header_line(text))
        return 1


class FakeTM:
    def __init__(self, ksr: "FakeKSR"):
        self.ksr = ksr
        self.canceled = False
        self.timeout = False
        self.newtran = 1

    def t_is_canceled(self) -> int:
        return 1 if self.canceled else -1

    def t_branch_timeout(self) -> int:
        return 1 if self.timeout else -1

    def t_on_failure(self, name: str) -> int:
        self.ksr.calls.append(("t_on_failure", name))
        return 1

    def t_relay(self) -> int:
        self.ksr.calls.append(("t_relay", self.ksr.dst))
        return 1

    def t_reply(self, code: int, reason: str) -> int:
        self.ksr.calls.append(("t_reply", code, reason))
        return 1

    def t_newtran(self) -> int:
        self.ksr.calls.append(("t_newtran",))
        return self.newtran

    def t_set_fr(self, fr_inv: int, fr: int) -> int:
        self.ksr.calls.append(("t_set_fr", fr_inv, fr))
        return 1


class FakeSL:
    def __init__(self, ksr: "FakeKSR"):
        self.ksr = ksr

    def send_reply(self, code: int, reason: str) -> int:
        self.ksr.replies.append((code, reason, list(self.ksr.reply_headers)))
        self.ksr.reply_headers.clear()
        return 1

    sl_send_reply = send_reply


class FakeUAC:
    def __init__(self, ksr: "FakeKSR"):
        self.ksr = ksr
        self.fail = False

    def uac_req_send(self) -> int:
        req = {k[9:-1]: v for k, v in self.ksr.vars.items() if k.startswith("$uac_req(")}
        self.ksr.sent.append(req)
        return -1 if self.fail else 1


class FakeKSR:
    """KSR for one request: ``pvs`` over DEFAULT_PVS; ``headers``, as
    (name, value) pairs, are set by the test."""

    def __init__(self, **pvs: Any):
        self.vars: Dict[str, Any] = dict(DEFAULT_PVS)
        self.vars.update(pvs)
        self.headers: List[Tuple[str, str]] = []
        self.appended: List[Tuple[str, str]] = []   # headers added to the request
        self.appended_text: List[str] = []          # ... as the handler wrote them
        self.reply_headers: List[Tuple[str, str]] = []
        self.replies: List[Tuple[int, str, List[Tuple[str, str]]]] = []
        self.sent: List[Dict[str, Any]] = []        # uac_req_send() requests
        self.calls: List[Tuple[Any, ...]] = []
        self.logs: List[Tuple[str, str]] = []
        self.dst: Optional[str] = None
        self.pv = FakePV(self)
        self.hdr = FakeHdr(self)
        self.tm = FakeTM(self)
        self.sl = FakeSL(self)
        self.uac = FakeUAC(self)

    @classmethod
    def with_pvs(cls, pvs: Mapping[str, Any],
                 headers: Optional[Mapping[str, str]] = None) -> "FakeKSR":
        """Only the PVs given (any may be None) and these headers."""
        ksr = cls()
        ksr.vars = dict(pvs)
        ksr.headers = list((headers or {}).items())
        return ksr

    def setdsturi(self, uri: str) -> int:
        self.dst = uri
        return 1

    def seturi(self, uri: str) -> int:
        self.vars["$ru"] = uri
        return 1

    def err(self, s: str) -> None:
        self.logs.append(("err", s))

    def warn(self, s: str) -> None:
        self.logs.append(("warn", s))

    def info(self, s: str) -> None:
        self.logs.append(("info", s))

    def dbg(self, s: str) -> None:
        self.logs.append(("dbg", s))

"""The Asterisk Manager Interface as the agent uses it: one session kept open
across reports (CoreStatus for the channel count), and the error that says
Asterisk cannot be reached at all."""

from __future__ import annotations

import socket
import uuid
from typing import Any, Dict, Optional

from .config import AgentError


class AsteriskUnreachable(AgentError):
    """The channel source could not reach Asterisk at all (no control socket,
    nothing on the AMI port, no answer in time): the report then says
    ``"health": "down"``.  An Asterisk that answers with an error (a refused
    login, a missing permission, output that does not parse) is not this."""


#: what manager.conf must grant the agent's AMI user for CoreStatus
AMI_PERMISSION_HINT = ("the AMI user needs `write = reporting` (or `write = system`) "
                       "in manager.conf for CoreStatus")


class AmiClient:
    """One Asterisk Manager Interface session, kept open across reports: it
    logs in once (``Events: off``), asks ``CoreStatus`` at each report, and
    logs in again only when Asterisk closed the connection (a restart).
    ``close()`` logs off.  Not thread-safe: one report at a time."""

    def __init__(self, host: str, port: int, username: str, secret: str, timeout: float = 3.0):
        self.host, self.port, self.username, self.secret = host, port, username, secret
        self.timeout = timeout
        self.logins = 0  # sessions opened so far (one while Asterisk stays up)
        self._sock: Optional[socket.socket] = None
        self._file: Any = None
        self._tag = uuid.uuid4().hex[:8]
        self._n = 0

    def _where(self) -> str:
        return "AMI %s:%d" % (self.host, self.port)

    def _read_block(self) -> Dict[str, str]:
        block: Dict[str, str] = {}
        while True:
            line = self._file.readline()
            if not line:
                raise ConnectionError("connection closed by Asterisk")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                if block:
                    return block
                continue
            k, _, v = text.partition(":")
            block[k.strip().lower()] = v.strip()

    def _action(self, action: str, **fields: str) -> Dict[str, str]:
        """Sends one action; returns its response (events in between are skipped)."""
        assert self._sock is not None
        self._n += 1
        action_id = "%s-%d" % (self._tag, self._n)
        text = "Action: %s\r\nActionID: %s\r\n" % (action, action_id)
        text += "".join("%s: %s\r\n" % kv for kv in fields.items())
        self._sock.sendall((text + "\r\n").encode("utf-8"))
        while True:
            b = self._read_block()
            if b.get("actionid") == action_id and "response" in b:
                return b

    def _connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._sock.settimeout(self.timeout)
            self._file = self._sock.makefile("rb")
            banner = self._file.readline()
        except OSError as e:
            self._drop()
            raise AsteriskUnreachable("%s: %s" % (self._where(), e)) from e
        if not banner.startswith(b"Asterisk Call Manager"):
            self._drop()
            raise AgentError("%s: unexpected banner %r" % (self._where(), banner[:60]))
        try:
            b = self._action("Login", Username=self.username, Secret=self.secret, Events="off")
        except OSError as e:
            self._drop()
            raise AsteriskUnreachable("%s: login: %s" % (self._where(), e)) from e
        if b.get("response", "").lower() != "success":
            self._drop()
            raise AgentError("%s: login refused: %s" % (self._where(), b.get("message", "?")))
        self.logins += 1

    def _drop(self) -> None:
        for c in (self._file, self._sock):
            try:
                if c is not None:
                    c.close()
            except OSError:
                pass
        self._sock = self._file = None

    def core_status(self) -> Dict[str, float]:
        """``{"channels": CoreCurrentCalls}``.  AsteriskUnreachable when
        Asterisk cannot be reached; AgentError when it answers with an error
        (a missing permission names the manager.conf setting)."""
        for attempt in (1, 2):
            fresh = self._sock is None
            if fresh:
                self._connect()
            try:
                b = self._action("CoreStatus")
                break
            except OSError as e:
                self._drop()
                if fresh or attempt == 2:
                    raise AsteriskUnreachable("%s: CoreStatus: %s" % (self._where(), e)) from e
                # the kept session broke (Asterisk restarted): log in again once
        if b.get("response", "").lower() != "success" or "corecurrentcalls" not in b:
            msg = b.get("message", "?")
            hint = "; " + AMI_PERMISSION_HINT if "permission" in msg.lower() else ""
            raise AgentError("%s: CoreStatus refused: %s%s" % (self._where(), msg, hint))
        try:
            return {"channels": float(int(b["corecurrentcalls"]))}
        except ValueError:
            raise AgentError("%s: bad CoreCurrentCalls %r" % (self._where(), b["corecurrentcalls"])) from None

    def close(self) -> None:
        """Logs off (best effort) and closes the connection."""
        if self._sock is not None:
            try:
                self._sock.settimeout(min(self.timeout, 1.0))
                self._action("Logoff")
            except (OSError, AgentError):
                pass
        self._drop()


def ami_core_status(host: str, port: int, username: str, secret: str,
                    timeout: float = 3.0) -> Dict[str, float]:
    """One-shot: logs in to the Asterisk Manager Interface, asks
    ``CoreStatus`` and logs off; returns ``{"channels": CoreCurrentCalls}``.
    The agent itself keeps one session open (AmiClient)."""
    client = AmiClient(host, port, username, secret, timeout)
    try:
        return client.core_status()
    finally:
        client.close()

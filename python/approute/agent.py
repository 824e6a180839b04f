"""approute node agent: reports this server's status to the SIP proxy.

Runs beside an Asterisk server (``approute agent --config agent.yaml``, or
the systemd unit in ``examples/agent/``) and, every ``interval`` seconds,
sends a signed SIP PUBLISH of the ``approute-status`` event package
(docs/status-package.md) to the proxy over UDP:

* the body is the JSON report: node, URI, pool, state, weight, capacity,
  load (``cpu`` and ``mem`` from /proc, ``channels`` from Asterisk or
  another source, extra figures from a file), optional ``quality`` figures
  from a file, and a ``seq`` that only grows;
* ``Expires`` is the lease: the proxy keeps the node while reports keep
  coming; the first report is an initial PUBLISH, later ones carry the
  entity tag of the last 200 in ``SIP-If-Match`` (a body when the figures
  changed, none for a pure refresh);
* ``X-Approute-Auth: keyid=K,ts=T,sig=HEX`` is an HMAC-SHA256 over
  ``"{ts}\\n{node}\\n{etag}\\n{expires}\\n{body}"`` with the pool's shared key (see ``approute.sign_report``);
* a lost request is retransmitted (T1 doubling up to T2, RFC 3261
  section 17.1.2); a failed report is retried with exponential backoff and
  jitter; a 412 (the proxy forgot the entity tag) makes the next report a
  full initial one;
* SIGTERM (or SIGINT) sends a last PUBLISH with ``Expires: 0``: a graceful
  leave, the proxy routes no new calls to the node;
* when the channel source (``asterisk`` or ``ami``) cannot reach Asterisk,
  the report says ``"health": "down"``: the node stays a member (its lease
  is renewed) but takes no new calls, and the first report after Asterisk
  answers again brings it back.  With ``ami`` the agent keeps one Manager
  session open across reports.

Configuration (YAML; paths are relative to the file)::

    node: ast5                       # node id (required)
    uri: "sip:10.0.0.5:5060"         # where the proxy sends calls (required)
    pool: media
    weight: 10
    state: null                      # active | draining; omitted: the proxy's admin state is left alone
    capacity: {channels: 500, conference: 50}
    proxy: "10.0.0.1:5060"           # the proxy's SIP address, UDP (required)
    bind: "0.0.0.0:0"                # local address of the agent's socket ([::]:0 for IPv6)
    publish_uri: null                # Request-URI (default sip:NODE@PROXY)
    keyid: k1                        # key id of the pool's shared key
    secret_file: /etc/approute/agent.key   # or secret: "..." (not both)
    interval: 10                     # seconds between reports
    expires: 60                      # lease asked for, seconds
    refresh_unchanged: true          # figures unchanged: refresh without body
    t1: 0.5                          # retransmission timer (seconds)
    transaction_timeout: 8           # give a request up after this long
    backoff: {initial: 1, max: 60}   # retry delays after failed reports
    channels:                        # where the channel count comes from
      source: asterisk               # asterisk | ami | command | file | none
      command: ["asterisk", "-rx", "core show channels count"]   # with -C FILE for another config
      file: null                     # source file: integer or JSON object
      ami: {host: 127.0.0.1, port: 5038, username: approute, secret: "..."}
      timeout: 3
    load_file: null                  # JSON object merged into "load"
    quality_file: null               # JSON object sent as "quality"
    state_file: null                 # holds "draining" to drain from the node
    proc: /proc                      # where /proc/stat and /proc/meminfo are

The agent parses only the status line, ``SIP-ETag`` and ``Expires`` of the
responses (and checks the Via branch to ignore stray datagrams).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import random
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger("approute.agent")

EVENT = "approute-status"
AUTH_HEADER = "X-Approute-Auth"
CONTENT_TYPE = "application/json"
USER_AGENT = "approute-agent/0.1"
T2 = 4.0
_NODE_STATES = ("active", "draining")  # what a report may say (disabled is the operator's)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class AgentError(Exception):
    """A configuration or runtime error of the agent."""


# --------------------------------------------------------------------------
# signing

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
            return fn
    except ImportError:  # pragma: no cover - the agent ships inside approute
        pass
    return sign_report_py


# --------------------------------------------------------------------------
# configuration

def _hostport(text: Any, what: str, default_port: int) -> Tuple[str, int]:
    s = str(text).strip()
    m = re.match(r"^\[([0-9a-fA-F:.]+)\](?::(\d+))?$", s) or re.match(r"^([^:\s]+)(?::(\d+))?$", s)
    if not m:
        raise AgentError("%s: %r is not host[:port]" % (what, text))
    port = int(m.group(2)) if m.group(2) else default_port
    if not 0 <= port <= 65535:
        raise AgentError("%s: bad port %d" % (what, port))
    return m.group(1), port


def _num(data: Dict[str, Any], key: str, default: float, what: str, minimum: float = 0.0) -> float:
    v = data.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise AgentError("%s: must be a number" % what)
    if v < minimum:
        raise AgentError("%s: must be >= %s" % (what, minimum))
    return float(v)


def _path(base: str, p: Any) -> Optional[str]:
    if p in (None, ""):
        return None
    p = os.path.expanduser(str(p))
    return p if os.path.isabs(p) else os.path.join(base, p)


class ChannelsConfig:
    SOURCES = ("asterisk", "ami", "command", "file", "none")

    def __init__(self, spec: Any, base: str):
        if spec is None:
            spec = {"source": "none"}
        if isinstance(spec, str):
            spec = {"source": spec}
        if not isinstance(spec, dict):
            raise AgentError("channels: must be a mapping")
        unknown = set(spec) - {"source", "command", "file", "ami", "timeout"}
        if unknown:
            raise AgentError("channels: unknown option(s) %s" % ", ".join(sorted(unknown)))
        self.source = str(spec.get("source", "asterisk"))
        if self.source not in self.SOURCES:
            raise AgentError("channels.source: one of %s" % ", ".join(self.SOURCES))
        cmd = spec.get("command")
        if cmd is None and self.source == "asterisk":
            cmd = ["asterisk", "-rx", "core show channels count"]
        if isinstance(cmd, str):
            cmd = shlex.split(cmd)
        if cmd is not None and (not isinstance(cmd, list) or not cmd):
            raise AgentError("channels.command: a command line (list or string)")
        self.command: Optional[List[str]] = [str(c) for c in cmd] if cmd else None
        if self.source == "command" and not self.command:
            raise AgentError("channels.command: required with source: command")
        self.file = _path(base, spec.get("file"))
        if self.source == "file" and not self.file:
            raise AgentError("channels.file: required with source: file")
        ami = spec.get("ami") or {}
        if not isinstance(ami, dict):
            raise AgentError("channels.ami: must be a mapping")
        self.ami_host = str(ami.get("host", "127.0.0.1"))
        self.ami_port = int(ami.get("port", 5038))
        self.ami_username = str(ami.get("username", ""))
        self.ami_secret = str(ami.get("secret", ""))
        if self.source == "ami" and not self.ami_username:
            raise AgentError("channels.ami.username: required with source: ami")
        self.timeout = _num(spec, "timeout", 3.0, "channels.timeout", 0.1)


class AgentConfig:
    KNOWN = {"node", "uri", "pool", "weight", "state", "capacity", "proxy", "bind",
             "publish_uri", "keyid", "secret", "secret_file", "interval", "expires",
             "refresh_unchanged", "t1", "transaction_timeout", "backoff", "channels",
             "load_file", "quality_file", "proc", "state_file"}

    def __init__(self, data: Dict[str, Any], base_dir: str = "."):
        if not isinstance(data, dict):
            raise AgentError("the configuration must be a mapping")
        unknown = set(data) - self.KNOWN
        if unknown:
            raise AgentError("unknown setting(s): %s" % ", ".join(sorted(unknown)))
        for req in ("node", "uri", "proxy", "keyid"):
            if not data.get(req):
                raise AgentError("%s: required" % req)
        self.node = str(data["node"])
        if not re.match(r"^[A-Za-z0-9_.:-]{1,63}$", self.node):
            raise AgentError("node: %r: use letters, digits and _ . : - (at most 63)" % self.node)
        self.uri = str(data["uri"])
        if not re.match(r"^sips?:[^\s<>\"]+$", self.uri):
            raise AgentError("uri: %r is not a SIP URI" % self.uri)
        self.pool = None if data.get("pool") is None else str(data["pool"])
        self.weight = None if data.get("weight") is None else int(data["weight"])
        self.state = None if data.get("state") is None else str(data["state"])
        if self.state is not None and self.state not in _NODE_STATES:
            raise AgentError("state: one of %s" % ", ".join(_NODE_STATES))
        cap = data.get("capacity") or {}
        if not isinstance(cap, dict):
            raise AgentError("capacity: must be a mapping")
        self.capacity = {str(k): int(v) for k, v in cap.items()}
        self.proxy = _hostport(data["proxy"], "proxy", 5060)
        any_addr = "[::]:0" if ":" in self.proxy[0] else "0.0.0.0:0"
        self.bind = _hostport(data.get("bind") or any_addr, "bind", 0)
        self.publish_uri = str(data.get("publish_uri") or "sip:%s@%s:%d" % (
            self.node, self._uri_host(self.proxy[0]), self.proxy[1]))
        self.keyid = str(data["keyid"])
        if not re.match(r"^[A-Za-z0-9._~-]+$", self.keyid):
            raise AgentError("keyid: %r: use letters, digits and . _ ~ -" % self.keyid)
        secret, secret_file = data.get("secret"), _path(base_dir, data.get("secret_file"))
        if (secret is None) == (secret_file is None):
            raise AgentError("set exactly one of secret and secret_file")
        if secret_file is not None:
            try:
                with open(secret_file, "r", encoding="utf-8") as f:
                    secret = f.read().strip()
            except OSError as e:
                raise AgentError("secret_file: %s" % e)
        self.secret = str(secret)
        if not self.secret:
            raise AgentError("the secret is empty")
        self.interval = _num(data, "interval", 10, "interval", 0.05)
        self.expires = int(_num(data, "expires", 60, "expires", 1))
        if self.expires <= self.interval:
            raise AgentError("expires (%d) must be longer than interval (%g)"
                             % (self.expires, self.interval))
        self.refresh_unchanged = bool(data.get("refresh_unchanged", True))
        self.t1 = _num(data, "t1", 0.5, "t1", 0.01)
        self.transaction_timeout = _num(data, "transaction_timeout", 8, "transaction_timeout",
                                        0.05)
        backoff = data.get("backoff") or {}
        if not isinstance(backoff, dict):
            raise AgentError("backoff: must be a mapping")
        self.backoff_initial = _num(backoff, "initial", 1.0, "backoff.initial", 0.01)
        self.backoff_max = _num(backoff, "max", 60.0, "backoff.max", 0.01)
        self.channels = ChannelsConfig(data.get("channels", {"source": "none"}), base_dir)
        self.load_file = _path(base_dir, data.get("load_file"))
        self.quality_file = _path(base_dir, data.get("quality_file"))
        self.state_file = _path(base_dir, data.get("state_file"))
        self.proc = str(data.get("proc", "/proc"))

    @staticmethod
    def _uri_host(host: str) -> str:
        return "[%s]" % host if ":" in host else host

    @classmethod
    def from_file(cls, path: str) -> "AgentConfig":
        try:
            with open(path, "r", encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise AgentError("%s: %s" % (path, e.strerror or e))
        try:
            import yaml  # type: ignore
            data = yaml.safe_load(text)
        except ImportError:  # pragma: no cover - PyYAML is a dependency
            data = json.loads(text)
        except Exception as e:
            raise AgentError("%s: %s" % (path, e))
        try:
            return cls(data or {}, os.path.dirname(os.path.abspath(path)))
        except AgentError as e:
            raise AgentError("%s: %s" % (path, e))
        except (TypeError, ValueError) as e:
            raise AgentError("%s: bad value: %s" % (path, e))


# --------------------------------------------------------------------------
# metrics

class CpuSampler:
    """CPU utilisation (0..1) from the deltas of /proc/stat's ``cpu`` line."""

    #: fewer clock ticks (all CPUs together) than this between two samples
    #: say nothing useful: the figure is left out of that report
    MIN_TICKS = 10

    def __init__(self, proc: str = "/proc"):
        self.path = os.path.join(proc, "stat")
        self.prev = self._read()

    def _read(self) -> Optional[Tuple[int, int]]:
        try:
            with open(self.path, "r") as f:
                for line in f:
                    if line.startswith("cpu "):
                        v = [int(x) for x in line.split()[1:]]
                        # user nice system idle iowait irq softirq steal [guest guest_nice]
                        v = v[:8]  # guest time is already counted in user/nice
                        idle = v[3] + (v[4] if len(v) > 4 else 0)
                        return sum(v) - idle, sum(v)
        except (OSError, ValueError, IndexError):
            return None
        return None

    def sample(self) -> Optional[float]:
        cur = self._read()
        if cur is None or self.prev is None:
            self.prev = cur
            return None
        d_total = cur[1] - self.prev[1]
        if d_total < self.MIN_TICKS:
            return None  # keep the older sample: the next delta is longer
        prev, self.prev = self.prev, cur
        return min(1.0, max(0.0, (cur[0] - prev[0]) / float(d_total)))


def memory_usage(proc: str = "/proc") -> Optional[float]:
    """Used share of memory (0..1): 1 - MemAvailable / MemTotal."""
    values: Dict[str, int] = {}
    try:
        with open(os.path.join(proc, "meminfo"), "r") as f:
            for line in f:
                k, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    values[k.strip()] = int(parts[0])
    except OSError:
        return None
    total = values.get("MemTotal")
    avail = values.get("MemAvailable")
    if avail is None and "MemFree" in values:  # very old kernels
        avail = values["MemFree"] + values.get("Buffers", 0) + values.get("Cached", 0)
    if not total or avail is None:
        return None
    return min(1.0, max(0.0, 1.0 - avail / float(total)))


_COUNT_RE = re.compile(r"^\s*(\d+)\s+(active channels?|active calls?|calls? processed)\b",
                       re.I | re.M)


def parse_channel_output(text: str) -> Dict[str, float]:
    """Channel figures from ``core show channels count`` output (``12 active
    channels`` / ``5 active calls``), a bare integer, or a JSON object."""
    text = text.strip()
    if not text:
        raise AgentError("empty channel count")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise AgentError("channel count: bad JSON: %s" % e)
        out = {str(k): float(v) for k, v in data.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not out:
            raise AgentError("channel count: no numbers in the JSON object")
        return out
    if re.match(r"^\d+$", text):
        return {"channels": float(int(text))}
    out: Dict[str, float] = {}
    for m in _COUNT_RE.finditer(text):
        what = m.group(2).lower()
        if what.startswith("active channel"):
            out["channels"] = float(m.group(1))
        elif what.startswith("active call"):
            out["calls"] = float(m.group(1))
    if "channels" not in out:
        raise AgentError("channel count: cannot parse %r" % text[:80])
    return out


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
            raise AsteriskUnreachable("%s: %s" % (self._where(), e))
        if not banner.startswith(b"Asterisk Call Manager"):
            self._drop()
            raise AgentError("%s: unexpected banner %r" % (self._where(), banner[:60]))
        try:
            b = self._action("Login", Username=self.username, Secret=self.secret, Events="off")
        except OSError as e:
            self._drop()
            raise AsteriskUnreachable("%s: login: %s" % (self._where(), e))
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
                    raise AsteriskUnreachable("%s: CoreStatus: %s" % (self._where(), e))
                # the kept session broke (Asterisk restarted): log in again once
        if b.get("response", "").lower() != "success" or "corecurrentcalls" not in b:
            msg = b.get("message", "?")
            hint = "; " + AMI_PERMISSION_HINT if "permission" in msg.lower() else ""
            raise AgentError("%s: CoreStatus refused: %s%s" % (self._where(), msg, hint))
        try:
            return {"channels": float(int(b["corecurrentcalls"]))}
        except ValueError:
            raise AgentError("%s: bad CoreCurrentCalls %r" % (self._where(), b["corecurrentcalls"]))

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


def read_channels(cfg: ChannelsConfig, ami: Optional[AmiClient] = None) -> Dict[str, float]:
    """The channel figures from the configured source ({} for none).  With
    ``source: asterisk`` or ``ami``, a failure to reach Asterisk raises
    AsteriskUnreachable; ``ami``: the session to use (else a one-shot one)."""
    if cfg.source == "none":
        return {}
    if cfg.source in ("asterisk", "command"):
        # Only the asterisk source says whether Asterisk answers; any other
        # command's failure is just a missing figure.
        failed = AsteriskUnreachable if cfg.source == "asterisk" else AgentError
        try:
            p = subprocess.run(cfg.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, timeout=cfg.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise failed("%s: %s" % (" ".join(cfg.command or []), e))
        if p.returncode != 0:
            out = (p.stderr or p.stdout).decode("utf-8", "replace").strip()[:200]
            raise failed("%s: exit code %d: %s" % (" ".join(cfg.command or []), p.returncode, out))
        return parse_channel_output(p.stdout.decode("utf-8", "replace"))
    if cfg.source == "file":
        try:
            with open(cfg.file or "", "r", encoding="utf-8") as f:
                return parse_channel_output(f.read())
        except OSError as e:
            raise AgentError("channels.file: %s" % e)
    if ami is not None:
        return ami.core_status()
    return ami_core_status(cfg.ami_host, cfg.ami_port, cfg.ami_username, cfg.ami_secret,
                           cfg.timeout)


def _read_json_numbers(path: str, what: str) -> Dict[str, float]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise AgentError("%s: %s" % (what, e))
    if not isinstance(data, dict):
        raise AgentError("%s: must hold a JSON object" % what)
    return {str(k): v for k, v in data.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Collector:
    """Gathers one report's figures (everything but ``seq``)."""

    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.cpu = CpuSampler(cfg.proc)
        ch = cfg.channels
        #: the AMI session kept across reports (source: ami)
        self.ami: Optional[AmiClient] = (
            AmiClient(ch.ami_host, ch.ami_port, ch.ami_username, ch.ami_secret, ch.timeout)
            if ch.source == "ami" else None)
        #: True while the channel source cannot reach Asterisk: the reports
        #: then carry "health": "down" (no new calls; the node stays a member)
        self.asterisk_down = False
        self._channel_problem: Optional[str] = None

    def close(self) -> None:
        """Ends the AMI session, if any (Logoff)."""
        if self.ami is not None:
            self.ami.close()

    def _channels(self) -> Dict[str, float]:
        """The channel figures; sets ``asterisk_down``.  Logs a problem when
        it starts or changes, not at every report."""
        try:
            figures = read_channels(self.cfg.channels, self.ami)
        except AsteriskUnreachable as e:
            if not self.asterisk_down:
                log.error("cannot reach Asterisk (%s): reporting the node down (no new calls) "
                          "until it answers again", e)
            self.asterisk_down = True
            self._channel_problem = None
            return {}
        except AgentError as e:
            if self.asterisk_down:
                log.info("Asterisk answers again: reporting the node up")
            self.asterisk_down = False
            if str(e) != self._channel_problem:
                log.error("channels: %s (the report goes without channel figures)", e)
            else:
                log.debug("channels: %s", e)
            self._channel_problem = str(e)
            return {}
        if self.asterisk_down:
            log.info("Asterisk answers again: reporting the node up")
        if self._channel_problem is not None:
            log.info("channels: figures back")
        self.asterisk_down = False
        self._channel_problem = None
        return figures

    def state(self) -> Optional[str]:
        """``state_file``'s word (active or draining) when the file exists,
        else the configured state, else None (the report carries no state and
        the proxy keeps the node's admin state): drain a node from the node
        itself, or from the proxy with ``approute drain``."""
        path = self.cfg.state_file
        if not path:
            return self.cfg.state
        try:
            with open(path, "r", encoding="utf-8") as f:
                word = f.read().strip().lower()
        except FileNotFoundError:
            return self.cfg.state
        except OSError as e:
            log.warning("state_file: %s", e)
            return self.cfg.state
        if word not in _NODE_STATES:
            log.warning("state_file %s: %r is not active or draining", path, word[:20])
            return self.cfg.state
        return word

    def __call__(self) -> Dict[str, Any]:
        cfg = self.cfg
        load: Dict[str, Any] = {}
        cpu = self.cpu.sample()
        if cpu is not None:
            load["cpu"] = round(cpu, 3)
        mem = memory_usage(cfg.proc)
        if mem is not None:
            load["mem"] = round(mem, 3)
        load.update(self._channels())
        if cfg.load_file:
            try:
                load.update(_read_json_numbers(cfg.load_file, "load_file"))
            except AgentError as e:
                log.warning("%s", e)
        for k, v in list(load.items()):
            if isinstance(v, float) and v.is_integer() and k not in ("cpu", "mem"):
                load[k] = int(v)
        report: Dict[str, Any] = {"node": cfg.node, "uri": cfg.uri}
        if cfg.pool is not None:
            report["pool"] = cfg.pool
        state = self.state()
        if state is not None:
            report["state"] = state
        if cfg.weight is not None:
            report["weight"] = cfg.weight
        if cfg.capacity:
            report["capacity"] = dict(cfg.capacity)
        if self.asterisk_down:
            report["health"] = "down"
        report["load"] = load
        if cfg.quality_file:
            try:
                report["quality"] = _read_json_numbers(cfg.quality_file, "quality_file")
            except AgentError as e:
                log.warning("%s", e)
        return report


# --------------------------------------------------------------------------
# SIP messages

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


# --------------------------------------------------------------------------
# the agent

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
        close = getattr(self.collect, "close", None)
        if close is not None:
            close()  # the Collector's AMI session

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
        return base * self.rng.uniform(0.5, 1.0)

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


# --------------------------------------------------------------------------
# command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", required=True,
                   help="agent configuration (YAML)")
    p.add_argument("--once", action="store_true",
                   help="send one report, print the answer and exit (0 when accepted)")
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print the report that would be sent and exit")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])


def run_from_args(args: argparse.Namespace, out=None, err=None) -> int:
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
        try:
            out.write(json.dumps(collect(), indent=2, sort_keys=True) + "\n")
        finally:
            collect.close()
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The agent's configuration (agent.yaml, keys in the package docstring), its constants and errors."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from typing import Any, Dict, List, Optional, Tuple

log = logging.getLogger("approute.agent")



EVENT = "approute-status"


EVENT = "approute-status"
AUTH_HEADER = "X-Approute-Auth"


AUTH_HEADER = "X-Approute-Auth"
CONTENT_TYPE = "application/json"


CONTENT_TYPE = "application/json"
USER_AGENT = "approute-agent/0.1"


USER_AGENT = "approute-agent/0.1"
T2 = 4.0


T2 = 4.0
_NODE_STATES = ("active", "draining")  # what a report may say (disabled is the operator's)



EXIT_OK = 0


EXIT_OK = 0
EXIT_ERROR = 1


EXIT_ERROR = 1
EXIT_USAGE = 2



class AgentError(Exception):
    """A configuration or runtime error of the agent."""



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
                raise AgentError("secret_file: %s" % e) from e
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
            raise AgentError("%s: %s" % (path, e.strerror or e)) from e
        try:
            import yaml
            data = yaml.safe_load(text)
        except ImportError:  # pragma: no cover - PyYAML is a dependency
            data = json.loads(text)
        except Exception as e:
            raise AgentError("%s: %s" % (path, e)) from e
        try:
            return cls(data or {}, os.path.dirname(os.path.abspath(path)))
        except AgentError as e:
            raise AgentError("%s: %s" % (path, e)) from e
        except (TypeError, ValueError) as e:
            raise AgentError("%s: bad value: %s" % (path, e)) from e

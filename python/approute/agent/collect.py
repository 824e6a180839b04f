"""What the agent reports: CPU and memory from /proc, the channel count from Asterisk
(asterisk -rx, AMI), a command or a file, extra figures from files."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import uuid
from typing import Any, Dict, Optional, Tuple

from .config import _NODE_STATES, AgentConfig, AgentError, ChannelsConfig, log


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
            raise AgentError("channel count: bad JSON: %s" % e) from e
        numbers = {str(k): float(v) for k, v in data.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not numbers:
            raise AgentError("channel count: no numbers in the JSON object")
        return numbers
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



def ami_core_status(host: str, port: int, username: str, secret: str,
                    timeout: float = 3.0) -> Dict[str, float]:
    """Logs in to the Asterisk Manager Interface and asks ``CoreStatus``;
    returns ``{"channels": CoreCurrentCalls}``."""
    def read_block(f: Any) -> Dict[str, str]:
        block: Dict[str, str] = {}
        while True:
            line = f.readline()
            if not line:
                raise AgentError("AMI: connection closed")
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if block:
                    return block
                continue
            k, _, v = line.partition(":")
            block[k.strip().lower()] = v.strip()

    def until(f: Any, action_id: str) -> Dict[str, str]:
        while True:  # skip events that slipped through
            b = read_block(f)
            if b.get("actionid") == action_id and "response" in b:
                return b

    tag = uuid.uuid4().hex[:8]
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            f = s.makefile("rb")
            banner = f.readline()
            if not banner.startswith(b"Asterisk Call Manager"):
                raise AgentError("AMI: unexpected banner %r" % banner[:60])
            s.sendall(("Action: Login\r\nActionID: %s-1\r\nUsername: %s\r\nSecret: %s\r\n"
                       "Events: off\r\n\r\n" % (tag, username, secret)).encode())
            b = until(f, tag + "-1")
            if b.get("response", "").lower() != "success":
                raise AgentError("AMI: login refused: %s" % b.get("message", "?"))
            s.sendall(("Action: CoreStatus\r\nActionID: %s-2\r\n\r\n" % tag).encode())
            b = until(f, tag + "-2")
            try:
                s.sendall(("Action: Logoff\r\nActionID: %s-3\r\n\r\n" % tag).encode())
            except OSError:
                pass
    except (OSError, socket.timeout) as e:
        raise AgentError("AMI %s:%d: %s" % (host, port, e)) from e
    if b.get("response", "").lower() != "success" or "corecurrentcalls" not in b:
        raise AgentError("AMI: CoreStatus failed: %s" % b.get("message", "?"))
    try:
        return {"channels": float(int(b["corecurrentcalls"]))}
    except ValueError:
        raise AgentError("AMI: bad CoreCurrentCalls %r" % b["corecurrentcalls"]) from None



def read_channels(cfg: ChannelsConfig) -> Dict[str, float]:
    """The channel figures from the configured source ({} for none)."""
    if cfg.source == "none":
        return {}
    if cfg.source in ("asterisk", "command"):
        if not cfg.command:
            raise AgentError("channels: no command to run")
        try:
            p = subprocess.run(cfg.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, timeout=cfg.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AgentError("%s: %s" % (" ".join(cfg.command or []), e)) from e
        if p.returncode != 0:
            raise AgentError("%s: exit code %d: %s" % (
                " ".join(cfg.command or []), p.returncode,
                p.stderr.decode("utf-8", "replace").strip()[:200]))
        return parse_channel_output(p.stdout.decode("utf-8", "replace"))
    if cfg.source == "file":
        try:
            with open(cfg.file or "", "r", encoding="utf-8") as f:
                return parse_channel_output(f.read())
        except OSError as e:
            raise AgentError("channels.file: %s" % e) from e
    return ami_core_status(cfg.ami_host, cfg.ami_port, cfg.ami_username, cfg.ami_secret,
                           cfg.timeout)



def _read_json_numbers(path: str, what: str) -> Dict[str, float]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise AgentError("%s: %s" % (what, e)) from e
    if not isinstance(data, dict):
        raise AgentError("%s: must hold a JSON object" % what)
    return {str(k): v for k, v in data.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}



class Collector:
    """Gathers one report's figures (everything but ``seq``)."""

    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.cpu = CpuSampler(cfg.proc)

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
        try:
            load.update(read_channels(cfg.channels))
        except AgentError as e:
            log.warning("channels: %s", e)
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
        report["load"] = load
        if cfg.quality_file:
            try:
                report["quality"] = _read_json_numbers(cfg.quality_file, "quality_file")
            except AgentError as e:
                log.warning("%s", e)
        return report

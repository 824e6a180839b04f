"""End-to-end harness (used by conftest.py and the tests): Kamailio (app_python3 +
approute) in front of SIPp nodes.

Everything runs on 127.0.0.1 with free ports and per-test temporary
directories.  Processes are started by this harness and stopped by pid
(Kamailio runs in the foreground with -DD in its own session, so its pid is
the main process and its process group holds its workers).

Which node took a call is read from the SIPp node logs (each node logs
every INVITE it receives, with the Call-ID) and cross-checked with the
router's own state through ``approute.Router.attach``.

Requirements: kamailio (with app_python3), sipp, and an importable
``approute`` package in the Python running pytest.  Run with

    .venv/bin/python -m pytest tests/e2e -v   (after scripts/setup.sh)
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCENARIOS = HERE / "scenarios"
KAMAILIO_CFG = REPO / "examples" / "kamailio" / "kamailio.cfg"
KAMAILIO_KEMI_CFG = REPO / "examples" / "kamailio" / "kamailio-kemi.cfg"
HANDLER = REPO / "examples" / "kamailio" / "approute_handler.py"

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
#: node scenarios that answer calls with 200 (uas_options.xml also answers OPTIONS)
ANSWERING = ("uas_200.xml", "uas_options.xml", "uas_flaky.xml", "uas_oc50.xml")

try:
    import approute

    # the shared helpers, also used from here by the tests
    from approute._procs import LOCAL as LOCAL
    from approute._procs import Proc as Proc
    from approute._procs import free_udp_port as free_udp_port
    from approute._procs import sip_options as sip_options
    from approute._procs import site_dirs as site_dirs
    from approute._procs import wait_for as wait_for
except ImportError:  # pragma: no cover - reported by the fixture as a skip
    approute = None  # type: ignore[assignment]
    LOCAL = "127.0.0.1"


#: The router's conference app in the tests: round robin, affinity by the
#: caller's domain, 503 and timeouts retried. Tests add keys to it.
CONFERENCE_APP = """\
  conference:
    pool: media
    strategy: round_robin
    resource: conference
    affinity: {grace: 60}
    retry: {codes: [503, 408], max_attempts: 3}
"""


#: The pool secret of the status reports in the tests and benches: key id
#: STATUS_KEYID of pool media (status_config), signed with approute.sign_report.
STATUS_SECRET = "e2e-media-secret-0123456789"
STATUS_KEYID = "k1"


def status_config(probe_thresholds: bool = True) -> str:
    """The router's ``status:`` block (router_extra of E2E.write_config) that
    takes signed status reports: from 127.0.0.1 only, about nodes on
    127.0.0.0/8, pool media signed with STATUS_SECRET under STATUS_KEYID.
    probe_thresholds adds ``health.probe`` (down after 2 failed probes, up
    after 2 answered) for tests that watch probes and reports together."""
    text = ("status:\n"
            '  allow_sources: ["127.0.0.1/32"]\n'
            '  allow_uris: ["127.0.0.0/8"]\n'
            '  keys: {media: {%s: "%s"}}\n'
            "  replay_window: 30\n"
            "  max_expires: 600\n" % (STATUS_KEYID, STATUS_SECRET))
    if probe_thresholds:
        text += "health:\n  probe: {down_after: 2, up_after: 2}\n"
    return text


def example_router(nodes: Sequence[Tuple[str, str, int]]) -> str:
    """examples/kamailio/router.yaml as shipped, with these nodes (id, uri,
    conference seats) in place of its own."""
    text = (REPO / "examples" / "kamailio" / "router.yaml").read_text()
    listed = "".join('  - {id: %s, uri: "%s", pool: media, weight: 10, capacity: {conference: %d}}\n' % n
                     for n in nodes)
    text, count = re.subn(r"(?m)^nodes:\n(?:  .*\n|[ \t]*#.*\n)+", "nodes:\n" + listed, text)
    if count != 1:
        raise RuntimeError("examples/kamailio/router.yaml: no nodes: list to replace")
    return text


def missing_requirements() -> Optional[str]:
    """Why the e2e tests cannot run here, or None."""
    if approute is None:
        return "the approute package is not importable"
    if not os.path.exists(KAMAILIO) or not os.path.exists(SIPP):
        return "kamailio and sipp are required"
    return None


# --------------------------------------------------------------------------
# SIPp nodes and callers

class Node:
    """A SIPp UAS standing in for an Asterisk node."""

    def __init__(self, env: "E2E", node_id: str, scenario: str = "uas_200.xml",
                 inf: Optional[Sequence[str]] = None):
        self.env = env
        self.inf = list(inf) if inf is not None else None  # uas_flaky.xml: "ok" / "busy" per call
        self.id = node_id
        self.port = free_udp_port()
        self.uri = "sip:%s:%d" % (LOCAL, self.port)
        self.scenario = scenario
        self.logfile = env.dir / ("node-%s.log" % node_id)
        self.proc: Optional[Proc] = None

    def start(self) -> "Node":
        argv = [SIPP, "-sf", str(SCENARIOS / self.scenario), "-i", LOCAL, "-p", str(self.port),
                "-nostdin", "-trace_logs", "-log_file", str(self.logfile),
                "-trace_err", "-error_file", str(self.env.dir / ("node-%s.err" % self.id)),
                "-max_socket", "100"]
        if self.inf is not None:
            csv = self.env.dir / ("node-%s.csv" % self.id)
            csv.write_text("SEQUENTIAL\n" + "\n".join(self.inf) + "\n")
            argv += ["-inf", str(csv)]
        self.proc = Proc("node-" + self.id, argv, self.env.dir / ("node-%s.out" % self.id))
        self.env.procs.append(self.proc)
        time.sleep(0.1)
        return self

    def invites(self) -> List[Tuple[str, str, str]]:
        """(call_id, app, data) of every INVITE this node received."""
        out: List[Tuple[str, str, str]] = []
        if not self.logfile.exists():
            return out
        for line in self.logfile.read_text(errors="replace").splitlines():
            m = re.search(r"INVITE call_id=(\S+) app=(\S*) data=(\S*)", line)
            if m:
                out.append((m.group(1), m.group(2), m.group(3)))
        return out

    def call_ids(self) -> List[str]:
        return [c for c, _, _ in self.invites()]

    def options(self) -> int:
        """OPTIONS requests this node answered (uas_options.xml)."""
        if not self.logfile.exists():
            return 0
        return len(re.findall(r"^OPTIONS call_id=", self.logfile.read_text(errors="replace"),
                              re.M))

    def byes(self) -> List[str]:
        if not self.logfile.exists():
            return []
        return re.findall(r"BYE call_id=(\S+)", self.logfile.read_text(errors="replace"))


class CallResult:
    def __init__(self, call_id: str, status: int, caller: str):
        self.call_id = call_id
        self.status = status
        self.caller = caller  # user@domain
        self.domain = caller.split("@", 1)[-1]

    def __repr__(self) -> str:
        return "CallResult(%s, %d, %s)" % (self.call_id, self.status, self.caller)


_uac_seq = itertools.count(1)


class Call:
    def __init__(self, domain: str, user: str = "u", app: str = "conference",
                 data: str = "1000", hold_ms: int = 300, wait_ms: int = 0):
        self.domain, self.user, self.app, self.data, self.hold_ms = domain, user, app, data, hold_ms
        self.wait_ms = wait_ms  # after SIPp starts the call, before its INVITE


class UacRun:
    """One SIPp UAC process placing a list of calls."""

    def __init__(self, env: "E2E", calls: Sequence[Call], rate: float, limit: int,
                 timeout: float, scenario: str = "uac.xml", local_ip: str = LOCAL,
                 cid_str: Optional[str] = None, extra: Sequence[str] = ()):
        self.env = env
        self.calls = list(calls)
        self.timeout = timeout
        seq = next(_uac_seq)
        d = env.dir
        csv = d / ("calls-%d.csv" % seq)
        lines = ["SEQUENTIAL"]
        for c in self.calls:
            lines.append("%s;%s;%s;%s;%d;%d" % (c.user, c.domain, c.app, c.data, c.hold_ms, c.wait_ms))
        csv.write_text("\n".join(lines) + "\n")
        self.log = d / ("uac-%d.log" % seq)
        self.err = d / ("uac-%d.err" % seq)
        port = free_udp_port()
        argv = [SIPP, "%s:%d" % (LOCAL, env.port), "-sf", str(SCENARIOS / scenario),
                "-inf", str(csv), "-i", local_ip, "-p", str(port), "-m", str(len(self.calls)),
                "-r", str(max(1, int(round(rate)))), "-rp", "1000", "-l", str(limit),
                "-nostdin", "-trace_logs", "-log_file", str(self.log),
                "-trace_err", "-error_file", str(self.err),
                "-timeout", "%ds" % int(timeout), "-timeout_error", "-max_socket", "100", *extra]
        if cid_str is not None:  # SIPp's Call-ID pattern (%u call number, %p pid, %s address)
            argv += ["-cid_str", cid_str]
        self.started = time.monotonic()
        self.proc = Proc("uac-%d" % seq, argv, d / ("uac-%d.out" % seq))
        self.elapsed: Optional[float] = None

    def results(self) -> List[CallResult]:
        out = []
        if self.log.exists():
            for line in self.log.read_text(errors="replace").splitlines():
                m = re.search(r"RESULT call_id=(\S+) status=(\d+) from=(\S+)", line)
                if m:
                    out.append(CallResult(m.group(1), int(m.group(2)), m.group(3)))
        return out

    def wait(self) -> List[CallResult]:
        try:
            self.proc.p.wait(timeout=self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("SIPp UAC did not finish in %ss" % self.timeout) from None
        self.elapsed = time.monotonic() - self.started
        self.proc.stop()
        results = self.results()
        assert len(results) == len(self.calls), (
            "expected %d call results, got %d (uac rc=%s)\n%s" % (
                len(self.calls), len(results), self.proc.p.returncode,
                self.err.read_text(errors="replace")[-2000:] if self.err.exists() else ""))
        return results


# --------------------------------------------------------------------------
# the environment of one test

class E2E:
    def __init__(self, tmp: Path, request):
        self.dir = tmp
        self.request = request
        self.procs: List[Proc] = []
        self.nodes: Dict[str, Node] = {}
        self.shared = "approute-e2e-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
        self.port = free_udp_port()
        self.kamailio: Optional[Proc] = None
        self.kamailio_log = self.dir / "kamailio.log"
        self.rundir = self.dir / "run"
        self.rundir.mkdir(exist_ok=True)
        self.router_yaml = self.dir / "router.yaml"
        self.settings_yaml = self.dir / "approute-kamailio.yaml"
        self.fr_timer = 1000
        self._router: Any = None

    # ----- configuration ---------------------------------------------------

    def add_node(self, node_id: str, scenario: str = "uas_200.xml", start: bool = True,
                 inf: Optional[Sequence[str]] = None) -> Node:
        n = Node(self, node_id, scenario, inf)
        self.nodes[node_id] = n
        if start:
            n.start()
        return n

    def write_config(self, apps_yaml: Optional[str] = None, node_extra: str = "",
                     settings_extra: str = "", configured: Optional[Sequence[str]] = None,
                     router_extra: str = "") -> None:
        """Writes router.yaml and approute-kamailio.yaml.  ``configured``: the
        ids listed under nodes: (default all; nodes may also join by PUBLISH);
        ``router_extra``: more top-level router YAML (status:, health:)."""
        listed = [n for n in self.nodes.values() if configured is None or n.id in configured]
        nodes = "\n".join(
            '  - {id: %s, uri: "%s", pool: media, weight: 1%s}' % (n.id, n.uri, node_extra)
            for n in listed) or "  []"
        if apps_yaml is None:
            apps_yaml = CONFERENCE_APP + """\
  default:
    pool: media
    strategy: round_robin
    retry: {codes: [503, 408], max_attempts: 3}
"""
        self.router_yaml.write_text(
            "state: {max_nodes: 16, max_sessions: 1024, max_affinities: 1024}\n"
            "nodes:\n%s\napps:\n%s%s" % (nodes, apps_yaml, router_extra))
        self.settings_yaml.write_text(
            "router: %s\n"
            "shared: %s\n"
            "headers: {app: X-Exec-App, data: X-Exec-App-Data}\n"
            "match: [header, rules, ruri_user]\n"
            "rules:\n"
            "  - {ruri_user: '^room-(?P<room>[0-9]+)$', app: conference, data: '{room}'}\n"
            "apps:\n"
            "  conference: {key: '{from_domain}', exec_app: Conference}\n"
            "%s"
            # callers on 127.0.0.1 may send X-Exec-App(-Data); a test caller
            # from another loopback address (127.0.0.2) is an outsider
            "%s" % (self.router_yaml, self.shared, settings_extra,
                    "" if "trusted_sources" in settings_extra
                    else "trusted_sources: ['127.0.0.1/32']\n"))

    # ----- Kamailio ------------------------------------------------------------

    def start_kamailio(self, cfg: Path = KAMAILIO_CFG, children: int = 4,
                       timeout: float = 15.0, defines: Sequence[str] = ()) -> Proc:
        """Starts Kamailio with ``cfg``; ``defines``: more -A NAME[=VALUE]."""
        env = dict(os.environ)
        env["APPROUTE_KAMAILIO_CONFIG"] = str(self.settings_yaml)
        env["APPROUTE_SITE_DIRS"] = site_dirs()
        env.pop("PYTHONHOME", None)
        argv = [KAMAILIO, "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8",
                "-P", str(self.rundir / "kamailio.pid"), "-Y", str(self.rundir),
                "-A", "APPROUTE_LISTEN=udp:%s:%d" % (LOCAL, self.port),
                "-A", 'APPROUTE_HANDLER="%s"' % HANDLER,
                "-A", "APPROUTE_CHILDREN=%d" % children,
                "-A", "APPROUTE_FR_TIMER=%d" % self.fr_timer,
                "-A", "APPROUTE_FR_INV_TIMER=10000"]
        for d in defines:
            argv += ["-A", d]
        with open(self.kamailio_log, "ab") as f:
            f.write(("\n==== start %s\n" % " ".join(argv)).encode())
        self.kamailio = Proc("kamailio", argv, self.kamailio_log, env=env, cwd=str(self.dir))
        self.procs.append(self.kamailio)

        kamailio = self.kamailio

        def ready() -> bool:
            if not kamailio.alive():
                raise AssertionError("kamailio exited (rc=%s):\n%s"
                                     % (kamailio.p.returncode, self.log_tail()))
            return sip_options(self.port) is not None
        wait_for(ready, timeout, interval=0.2, what="kamailio to answer OPTIONS")
        return self.kamailio

    def stop_kamailio(self) -> None:
        if self.kamailio is not None:
            self.kamailio.stop()
            self.kamailio = None

    def log_tail(self, n: int = 60) -> str:
        if not self.kamailio_log.exists():
            return "(no kamailio log)"
        lines = self.kamailio_log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def decisions(self) -> List[Dict[str, Any]]:
        """approute decision lines from the Kamailio log, with worker pid."""
        out: List[Dict[str, Any]] = []
        if not self.kamailio_log.exists():
            return out
        pat = re.compile(r"^\s*\d+\((\d+)\).*approute: (route|retry) (.*)$")
        for line in self.kamailio_log.read_text(errors="replace").splitlines():
            m = pat.match(line)
            if not m:
                continue
            d: Dict[str, Any] = {"pid": int(m.group(1)), "what": m.group(2)}
            for kv in m.group(3).split():
                if "=" in kv:
                    k, v = kv.split("=", 1)
                    d.setdefault(k, v)
            out.append(d)
        return out

    # ----- router state -------------------------------------------------------

    @property
    def router(self):
        if self._router is None:
            self._router = approute.Router.attach(self.shared)
        return self._router

    def node_sessions(self, node_id: str) -> int:
        st = self.router.node(node_id)
        return sum(int(v) for v in dict(st.sessions).values())

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Waits until the router holds no sessions."""
        wait_for(lambda: int(self.router.stats()["sessions"]) == 0, timeout,
                 what="all sessions to end (stats=%r)" % (self.safe_stats(),))

    def safe_stats(self):
        try:
            return self.router.stats()
        except Exception as e:  # pragma: no cover - diagnostics only
            return repr(e)

    # ----- callers --------------------------------------------------------------

    def run_calls(self, calls: Sequence[Call], rate: float = 10.0, limit: int = 50,
                  timeout: float = 60.0, scenario: str = "uac.xml",
                  local_ip: str = LOCAL, cid_str: Optional[str] = None) -> List[CallResult]:
        """Places the calls through Kamailio with one SIPp UAC; waits for all."""
        return self.start_calls(calls, rate, limit, timeout, scenario, local_ip, cid_str).wait()

    def start_calls(self, calls: Sequence[Call], rate: float = 10.0, limit: int = 50,
                    timeout: float = 60.0, scenario: str = "uac.xml",
                    local_ip: str = LOCAL, cid_str: Optional[str] = None,
                    extra: Sequence[str] = ()) -> "UacRun":
        """Starts a SIPp UAC placing the calls; returns without waiting.
        ``local_ip``: the caller's address (any of 127.0.0.0/8); ``cid_str``:
        SIPp's Call-ID pattern (default ``%u-%p@%s``); ``extra``: more SIPp
        arguments."""
        run = UacRun(self, calls, rate, limit, timeout, scenario, local_ip, cid_str, extra)
        self.procs.append(run.proc)
        return run

    def node_of(self, call_id: str, answered_only: bool = True) -> Optional[str]:
        """The node that answered (uas_200) the call, from the node logs."""
        hits = [n.id for n in self.nodes.values() if call_id in n.call_ids()
                and (not answered_only or n.scenario in ANSWERING)]
        assert len(hits) <= 1, "call %s answered by several nodes: %s" % (call_id, hits)
        return hits[0] if hits else None

    def tried_nodes(self, call_id: str) -> List[str]:
        """Every node that received the call's INVITE (with repetitions)."""
        out = []
        for n in self.nodes.values():
            out.extend([n.id] * n.call_ids().count(call_id))
        return out

    # ----- teardown -------------------------------------------------------------

    def close(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop(timeout=5)
            except Exception:
                pass
        self.procs.clear()
        self._router = None
        try:
            approute.Router.unlink(self.shared)
        except Exception:
            pass

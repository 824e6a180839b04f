"""approute demo: Kamailio + approute in front of three SIPp "Asterisk" nodes.

Everything runs on 127.0.0.1 with free ports in a temporary directory, and
stops and cleans up by itself:

* three SIPp UAS processes play the Asterisk nodes ast1..ast3; ast3 is
  sometimes too loaded and answers 503, so approute retries elsewhere;
* Kamailio runs examples/kamailio/kamailio.cfg (or the KEMI variant) with
  the approute handler and a shared-memory router;
* one SIPp UAC places calls from several domains (conference app,
  affinity by caller domain) for --duration seconds;
* at 40% of the run ast2 is drained (keeps its calls, takes no new
  domains), at 70% it is enabled again;
* a live table shows nodes, sessions, affinities and recent decisions,
  read from the router's shared state (Router.attach) and Kamailio's log.

Run it from a checkout:  scripts/demo.sh   (or python -m approute.demo --repo .)
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional
from typing import Counter as CounterT

# absolute: scripts/demo.sh runs this file as a script
from approute._procs import LOCAL, Proc, free_udp_port, sip_options, site_dirs

DOMAINS = ["acme.example.com", "globex.example.com", "initech.example.com",
           "umbrella.example.com", "hooli.example.com", "stark.example.com"]

_DECISION_RE = re.compile(r"^\s*\d+\((\d+)\).*approute: ((?:route|retry) .*)$")


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.repo = Path(args.repo).resolve()
        self.scenarios = self.repo / "tests" / "e2e" / "scenarios"
        self.examples = self.repo / "examples" / "kamailio"
        self.dir = Path(tempfile.mkdtemp(prefix="approute-demo-"))
        self.shared = "approute-demo-%d" % os.getpid()
        self.procs: List[Proc] = []
        self.nodes: Dict[str, Dict[str, Any]] = {}
        self.kamailio: Optional[Proc] = None
        self.kamailio_log = self.dir / "kamailio.log"
        self.events: Deque[str] = deque(maxlen=6)
        self.decisions: Deque[str] = deque(maxlen=args.recent)
        self.counts: CounterT[str] = Counter()
        self._log_pos = 0
        self.router: Any = None  # attached once Kamailio is up
        self.t0 = time.monotonic()
        self.tty = sys.stdout.isatty() and not args.no_live

    # ----- setup -----------------------------------------------------------

    def check(self) -> Optional[str]:
        for tool in (self.args.kamailio, self.args.sipp):
            if not shutil.which(tool) and not os.path.exists(tool):
                return "%s not found" % tool
        for f in (self.scenarios / "uac.xml", self.scenarios / "uas_200.xml",
                  self.scenarios / "uas_flaky.xml", self.examples / "kamailio.cfg",
                  self.examples / "approute_handler.py"):
            if not f.exists():
                return "%s not found (is --repo a checkout of approute?)" % f
        return None

    def write_configs(self) -> None:
        lines = ["state: {max_nodes: 16, max_sessions: 4096, max_affinities: 4096}", "nodes:"]
        for nid, n in self.nodes.items():
            lines.append('  - {id: %s, uri: "sip:%s:%d", pool: media, weight: 1, '
                         'capacity: {conference: %d}}' % (nid, LOCAL, n["port"], self.args.capacity))
        lines += [
            "apps:",
            "  conference:",
            "    pool: media",
            "    strategy: %s" % self.args.strategy,
            "    resource: conference",
            "    affinity: {grace: 30}",
            "    retry: {codes: [503, 408], max_attempts: 3}",
            "    session: {lifetime: 600}",
            "  default:",
            "    pool: media",
            "    strategy: round_robin",
            "    retry: {codes: [503, 408], max_attempts: 3}",
        ]
        (self.dir / "router.yaml").write_text("\n".join(lines) + "\n")
        (self.dir / "approute-kamailio.yaml").write_text(
            "router: router.yaml\n"
            "shared: %s\n"
            "match: [header, rules, ruri_user]\n"
            "rules:\n"
            "  - {ruri_user: '^room-(?P<room>[0-9]+)$', app: conference, data: '{room}'}\n"
            "apps:\n"
            "  conference: {key: '{from_domain}', exec_app: Conference}\n" % self.shared)

    def start_nodes(self) -> None:
        rnd = random.Random(self.args.seed)
        for i in range(1, self.args.nodes + 1):
            nid = "ast%d" % i
            self.nodes[nid] = {"port": free_udp_port(),
                               "flaky": i == self.args.nodes and self.args.busy > 0}
        for nid, n in self.nodes.items():
            log = self.dir / ("%s.log" % nid)
            n["log"] = log
            argv = [self.args.sipp, "-i", LOCAL, "-p", str(n["port"]), "-nostdin",
                    "-trace_logs", "-log_file", str(log), "-max_socket", "200"]
            if n["flaky"]:
                inf = self.dir / ("%s-busy.csv" % nid)
                rows = ["busy" if rnd.random() < self.args.busy else "ok" for _ in range(5000)]
                inf.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
                argv += ["-sf", str(self.scenarios / "uas_flaky.xml"), "-inf", str(inf)]
            else:
                argv += ["-sf", str(self.scenarios / "uas_200.xml")]
            self.procs.append(Proc(nid, argv, self.dir / ("%s.out" % nid)))

    def start_kamailio(self) -> None:
        self.port = free_udp_port()
        run = self.dir / "run"
        run.mkdir(exist_ok=True)
        cfg = self.examples / ("kamailio-kemi.cfg" if self.args.kemi else "kamailio.cfg")
        env = dict(os.environ)
        env["APPROUTE_KAMAILIO_CONFIG"] = str(self.dir / "approute-kamailio.yaml")
        env["APPROUTE_SITE_DIRS"] = site_dirs()
        argv = [self.args.kamailio, "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8",
                "-P", str(run / "kamailio.pid"), "-Y", str(run),
                "-A", "APPROUTE_LISTEN=udp:%s:%d" % (LOCAL, self.port),
                "-A", 'APPROUTE_HANDLER="%s"' % (self.examples / "approute_handler.py"),
                "-A", "APPROUTE_CHILDREN=4", "-A", "APPROUTE_FR_TIMER=1000"]
        self.kamailio = Proc("kamailio", argv, self.kamailio_log, env=env)
        self.procs.append(self.kamailio)
        deadline = time.monotonic() + 15
        while sip_options(self.port) is None:
            if not self.kamailio.alive() or time.monotonic() > deadline:
                tail = self.kamailio_log.read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError("Kamailio did not start:\n" + "\n".join(tail))
            time.sleep(0.2)
        import approute
        self.router = approute.Router.attach(self.shared)

    def start_callers(self) -> Proc:
        rnd = random.Random(self.args.seed + 1)
        total = max(1, int(self.args.duration * self.args.rate))
        weights = [6, 4, 3, 2, 2, 1]
        rows = ["SEQUENTIAL"]
        for i in range(total):
            dom = rnd.choices(DOMAINS, weights)[0]
            room = 1000 + DOMAINS.index(dom)
            hold = rnd.randint(self.args.hold_min, self.args.hold_max)
            if rnd.random() < 0.3:  # some callers dial the room directly
                rows.append("u%d;%s;room-%d;;%d" % (i, dom, room, hold))
            else:
                rows.append("u%d;%s;conference;%d;%d" % (i, dom, room, hold))
        inf = self.dir / "calls.csv"
        inf.write_text("\n".join(rows) + "\n")
        self.uac_log = self.dir / "uac.log"
        self.total_calls = total
        argv = [self.args.sipp, "%s:%d" % (LOCAL, self.port), "-sf",
                str(self.scenarios / "uac.xml"), "-inf", str(inf), "-i", LOCAL,
                "-p", str(free_udp_port()), "-m", str(total),
                "-r", str(max(1, int(round(self.args.rate)))), "-rp", "1000",
                "-nostdin", "-trace_logs", "-log_file", str(self.uac_log),
                "-timeout", "%ds" % int(self.args.duration + self.args.hold_max / 1000 + 30),
                "-max_socket", "200"]
        p = Proc("uac", argv, self.dir / "uac.out")
        self.procs.append(p)
        return p

    # ----- observation -----------------------------------------------------

    def read_decisions(self) -> None:
        try:
            with open(self.kamailio_log, "r", errors="replace") as f:
                f.seek(self._log_pos)
                data = f.read()
                self._log_pos = f.tell()
        except OSError:
            return
        for line in data.splitlines():
            m = _DECISION_RE.match(line)
            if not m:
                continue
            text = m.group(2)
            fields = dict(kv.split("=", 1) for kv in text.split()[1:] if "=" in kv)
            what = text.split()[0]
            reason = fields.get("reason", "?")
            self.counts["%s:%s" % (what, reason)] += 1
            short = "%-5s %-9s %-22s -> %-5s %s" % (
                what, reason, fields.get("key", fields.get("from", ""))[:22],
                fields.get("node", "-"), ("code=" + fields["code"]) if "code" in fields else "")
            self.decisions.append("[w%s] %s" % (m.group(1), short))

    def answered_by_node(self) -> Dict[str, int]:
        out = {}
        for nid, n in self.nodes.items():
            try:
                text = n["log"].read_text(errors="replace")
            except OSError:
                text = ""
            out[nid] = text.count("INVITE call_id=") - text.count("BUSY call_id=")
        return out

    def results(self) -> CounterT[int]:
        """Final status code -> calls, from the caller's log."""
        c: CounterT[int] = Counter()
        try:
            for line in self.uac_log.read_text(errors="replace").splitlines():
                m = re.search(r"RESULT call_id=\S+ status=(\d+)", line)
                if m:
                    c[int(m.group(1))] += 1
        except OSError:
            pass
        return c

    def render(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self.t0
        stats = self.router.stats()
        out = []
        out.append("approute demo  %5.1fs/%ds  Kamailio udp:%s:%d  segment %s" % (
            elapsed, self.args.duration, LOCAL, self.port, self.shared))
        res = self.results()
        out.append("calls placed %d/%d   answered %d   failed %d   live sessions %d   "
                   "affinities %d" % (sum(res.values()), self.total_calls, res.get(200, 0),
                                      sum(v for k, v in res.items() if k != 200),
                                      stats.get("sessions", 0), stats.get("affinities", 0)))
        out.append("")
        answered = self.answered_by_node()
        out.append("%-6s %-9s %-7s %9s %10s %9s  %s" % (
            "NODE", "STATE", "HEALTH", "SESSIONS", "ANSWERED", "ROUTED", "URI"))
        for n in self.router.nodes():
            sessions = sum(int(v) for v in dict(n.sessions).values())
            bar = "#" * min(sessions, 30)
            out.append("%-6s %-9s %-7s %9d %10d %9s  %s %s" % (
                n.id, n.state, n.health, sessions, answered.get(n.id, 0),
                getattr(n, "routed_total", "-"), n.uri,
                ("(503 sometimes)" if self.nodes.get(n.id, {}).get("flaky") else "") + " " + bar))
        out.append("")
        out.append("decisions: " + "  ".join("%s=%d" % kv for kv in sorted(self.counts.items())))
        out.append("recent decisions (worker, what, why, key, node):")
        for d in list(self.decisions)[-self.args.recent:]:
            out.append("  " + d)
        if self.events:
            out.append("")
            out.append("events:")
            for e in self.events:
                out.append("  " + e)
        return "\n".join(out)

    def event(self, text: str) -> None:
        self.events.append("%5.1fs  %s" % (time.monotonic() - self.t0, text))
        if not self.tty:
            print(">> " + text, flush=True)

    # ----- run -------------------------------------------------------------

    def run(self) -> int:
        why = self.check()
        if why:
            print("demo: " + why, file=sys.stderr)
            return 2
        print("approute demo: working in %s" % self.dir, flush=True)
        self.start_nodes()
        self.write_configs()
        self.start_kamailio()
        self.t0 = time.monotonic()
        uac = self.start_callers()
        self.event("callers started: %d calls at %.1f/s from %d domains"
                   % (self.total_calls, self.args.rate, len(DOMAINS)))
        drained = enabled = False
        drain_node = "ast2" if "ast2" in self.nodes else None
        last_plain = 0.0
        while uac.alive():
            elapsed = time.monotonic() - self.t0
            if drain_node and not drained and elapsed >= 0.4 * self.args.duration:
                self.router.set_state(drain_node, "draining")
                self.event("%s drained: keeps its calls and domains, takes no new ones"
                           % drain_node)
                drained = True
            if drain_node and drained and not enabled and elapsed >= 0.7 * self.args.duration:
                self.router.set_state(drain_node, "active")
                self.event("%s enabled again" % drain_node)
                enabled = True
            self.read_decisions()
            if self.tty:
                sys.stdout.write("\x1b[H\x1b[2J" + self.render() + "\n")
                sys.stdout.flush()
            elif elapsed - last_plain >= 2.0:
                last_plain = elapsed
                print(self.render().split("\n\n")[0] + "\n", flush=True)
            time.sleep(self.args.refresh)
        # all calls placed and finished: the counts must be back to zero
        deadline = time.monotonic() + 10
        while int(self.router.stats().get("sessions", 0)) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.read_decisions()
        final = self.render(final=True)
        if self.tty:
            sys.stdout.write("\x1b[H\x1b[2J")
        print(final)
        return self.summary()

    def summary(self) -> int:
        res = self.results()
        stats = self.router.stats()
        answered = self.answered_by_node()
        # which nodes answered each domain (from the UAS logs and the UAC log)
        node_of: Dict[str, str] = {}
        for nid, n in self.nodes.items():
            text = n["log"].read_text(errors="replace") if n["log"].exists() else ""
            busy = set(re.findall(r"BUSY call_id=(\S+)", text))
            for cid in re.findall(r"INVITE call_id=(\S+)", text):
                if cid not in busy:
                    node_of[cid] = nid
        per_domain: Dict[str, CounterT[str]] = defaultdict(Counter)
        for line in self.uac_log.read_text(errors="replace").splitlines():
            m = re.search(r"RESULT call_id=(\S+) status=200 from=\S+@(\S+)", line)
            if m and m.group(1) in node_of:
                per_domain[m.group(2)][node_of[m.group(1)]] += 1
        print("\n==== summary")
        print("calls: %d placed, %s" % (sum(res.values()), ", ".join(
            "%d x %d" % (v, k) for k, v in sorted(res.items()))))
        print("answered per node: " + ", ".join("%s=%d" % kv for kv in sorted(answered.items())))
        print("decisions: " + ", ".join("%s=%d" % kv for kv in sorted(self.counts.items())))
        print("calls per domain and node (affinity by caller domain):")
        for dom in sorted(per_domain):
            print("  %-22s %s" % (dom, ", ".join("%s=%d" % kv
                                                 for kv in sorted(per_domain[dom].items()))))
        print("router after the run: sessions=%s affinities=%s (kept for their grace time)"
              % (stats.get("sessions"), stats.get("affinities")))
        ok = int(stats.get("sessions", 1)) == 0 and sum(res.values()) == self.total_calls
        print("result: %s" % ("OK - every call ended and no session is left"
                              if ok else "PROBLEM - see %s" % self.dir))
        if not ok:
            self.args.keep = True
        return 0 if ok else 1

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:
                pass
        self.router = None
        try:
            import approute
            approute.Router.unlink(self.shared)
        except Exception:
            pass
        if self.args.keep:
            print("demo files kept in %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="approute-demo", description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parent
    default_repo = here.parent.parent if (here.parent.parent / "examples").exists() else Path.cwd()
    p.add_argument("--repo", default=str(default_repo),
                   help="approute checkout (examples/ and tests/e2e/scenarios/)")
    p.add_argument("--duration", type=int, default=20, help="seconds of calls (default 20)")
    p.add_argument("--rate", type=float, default=4.0, help="new calls per second (default 4)")
    p.add_argument("--hold-min", type=int, default=1000, help="shortest call, ms")
    p.add_argument("--hold-max", type=int, default=6000, help="longest call, ms")
    p.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    p.add_argument("--busy", type=float, default=0.25,
                   help="share of calls the last node refuses with 503 (default 0.25)")
    p.add_argument("--capacity", type=int, default=40, help="conference capacity per node")
    p.add_argument("--strategy", default="least_loaded", help="strategy for new domains")
    p.add_argument("--kemi", action="store_true", help="use the KEMI config")
    p.add_argument("--kamailio", default=shutil.which("kamailio") or "/usr/sbin/kamailio")
    p.add_argument("--sipp", default=shutil.which("sipp") or "/usr/bin/sipp")
    p.add_argument("--refresh", type=float, default=0.5, help="table refresh, seconds")
    p.add_argument("--recent", type=int, default=8, help="recent decisions shown")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-live", action="store_true", help="plain periodic output")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    demo = Demo(args)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        return demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as e:
        print("demo failed: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        demo.args.keep = True
        return 1
    finally:
        demo.cleanup()


if __name__ == "__main__":
    # Run as a script from a checkout: use this tree's pure-Python modules
    # together with the installed compiled core.
    try:
        import approute as _approute
        _here = str(Path(__file__).resolve().parent)
        if _here not in list(_approute.__path__):
            _approute.__path__.insert(0, _here)
    except ImportError:
        print("demo: the approute package is not importable", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())

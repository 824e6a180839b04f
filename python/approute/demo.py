"""approute demo: Kamailio + approute in front of three SIPp "Asterisk" nodes, hosting conference rooms.

Everything runs on 127.0.0.1 with free ports in a temporary directory, and
stops and cleans up by itself:

* three SIPp UAS processes play the Asterisk nodes ast1..ast3, each with
  --capacity conference seats (known to the router);
* Kamailio runs examples/kamailio/kamailio.cfg (or the KEMI variant) with
  the approute handler and a shared-memory router, configured as the
  examples are for rooms: the room (sip:conf-<room>@...) is the key, strict
  (a room's participants all land on its node, or are refused with 486 Busy
  Here once that node is full), the caller's domain is the preference for a
  new room, and a headroom keeps seats free in open rooms;
* one SIPp UAC plays the rooms: they open over --duration seconds, their
  participants call in from several domains over the room's life and hang
  up when it closes; the first room is a big one, so that its node fills up
  and a participant is refused;
* at 40% of the run ast2 is drained (keeps its rooms, opens no new ones),
  at 70% it is enabled again;
* a live table shows nodes, their rooms and recent decisions, read from the
  router's shared state (Router.attach) and Kamailio's log; the summary
  explains every participant's placement or refusal, room by room.

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
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple
from typing import Counter as CounterT

# absolute: scripts/demo.sh runs this file as a script
from approute import demo_explain as explain
from approute._procs import LOCAL, Proc, free_udp_port, sip_options, site_dirs

DOMAINS = ["acme.example.com", "globex.example.com", "initech.example.com",
           "umbrella.example.com", "hooli.example.com", "stark.example.com"]


def room_schedule(rnd: random.Random, rate: float, start: float, until: float,
                  life: Tuple[float, float], size: Tuple[int, int], domains: Sequence[str],
                  weights: Optional[Sequence[float]] = None, home_share: float = 0.7,
                  join_span: float = 1.0, first_room: int = 1001,
                  close_by: Optional[float] = None) -> List[Tuple[float, int, str, float]]:
    """Conference rooms: they open at ``rate`` per second (Poisson) from
    ``start`` until ``until``, live ``life`` seconds (uniform; cut so that
    every room has closed by ``close_by`` when given) and get ``size``
    participants (uniform); the first calls when the room opens, the
    others at uniform times over ``join_span`` of its life, from the
    room's home domain (drawn from ``domains`` by ``weights``) with
    probability ``home_share``, else from any; all stay until it closes.
    Returns (second, room, domain, seconds held) per participant, by time.
    (The demo and bench/rooms/run.py play these.)"""
    out: List[Tuple[float, int, str, float]] = []
    t, room = start, first_room - 1
    while True:
        t += rnd.expovariate(rate)
        if t >= until:
            break
        room += 1
        span = rnd.uniform(*life)
        if close_by is not None:
            span = max(0.0, min(span, close_by - t))
        home = rnd.choices(list(domains), weights)[0]
        for j in range(rnd.randint(*size)):
            at = t if j == 0 else t + rnd.random() * span * join_span
            dom = home if rnd.random() < home_share else rnd.choice(list(domains))
            out.append((at, room, dom, t + span - at))
    out.sort()
    return out


def demo_plan(duration: float, rate: float, capacity: int, hold_min: int, hold_max: int,
              seed: int) -> List[Tuple[float, int, str, int]]:
    """The demo's participants (Demo.plan): (second, room, domain, hold ms),
    by time, every call placed and ended within ``duration`` seconds."""
    out = []
    end = float(duration)
    life = max(hold_max / 1000.0, 4.0)
    for i in range(capacity + 2):  # the big first room
        t = 0.5 + i * 0.4
        if t >= end:
            break
        out.append((t, 1001, DOMAINS[i % 4], int(max(0.1, min(0.5 + life + 2.0, end) - t) * 1000)))
    # rooms open at `rate` until a second before the end; those opened late
    # are cut short so that they close by the end
    rooms = room_schedule(random.Random(seed + 1), rate, 1.0, max(1.0, end - 1.0),
                          (hold_min / 1000.0, hold_max / 1000.0), (2, 4), DOMAINS,
                          weights=[6, 4, 3, 2, 2, 1], join_span=0.8, first_room=1002, close_by=end)
    out += [(t, room, dom, int(held * 1000)) for t, room, dom, held in rooms]
    out.sort()
    return out


def per_window(times: Sequence[float], duration: float, windows: int = 4) -> List[int]:
    """How many of ``times`` (seconds into the run) fall in each of ``windows``
    equal parts of ``duration``; a time past the end counts in the last."""
    out = [0] * windows
    for t in times:
        i = int(t * windows / duration) if duration > 0 else 0
        out[min(max(i, 0), windows - 1)] += 1
    return out


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
        self.by_call: Dict[str, List[explain.Step]] = defaultdict(list)  # call-id -> decisions
        self.placed_at: Dict[str, float] = {}  # call-id -> seconds into the run when first routed
        self.drained_at: Optional[float] = None  # seconds into the run
        self.enabled_at: Optional[float] = None
        self.planned: List[Tuple[float, int, str, int]] = []
        self.lead = 0.0
        self._log_pos = 0
        self.router: Any = None  # attached once Kamailio is up
        self.t0 = time.monotonic()
        self.calls_done_at = 0.0
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
        # examples/kamailio/router.yaml's conference app (strict rooms with a
        # headroom), this demo's nodes and capacities
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
            "    affinity: {grace: 30, strict: true, headroom: %s}" % self.args.headroom,
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
            "  - {ruri_user: '^conf-(?P<room>[0-9]+)$', app: conference, data: '{room}'}\n"
            "apps:\n"
            "  conference: {key: '{app_data}', prefer: '{from_domain}', exec_app: Conference}\n"
            "log_decisions: true\n" % self.shared)

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

    def plan(self) -> List[Tuple[float, int, str, int]]:
        """(second, room, domain, hold ms) per participant, all within
        --duration seconds: the calls are placed across the run and every
        room has closed by its end. The first room is big (capacity + 2
        participants from four domains within a few seconds), so its node
        fills; then rooms open at --rate per second until a second before
        the end, live --hold-min..--hold-max ms (cut short at the end of the
        run), 2 to 4 participants each, mostly from
        the room's home domain; everybody stays until the room closes."""
        return demo_plan(self.args.duration, self.args.rate, self.args.capacity,
                         self.args.hold_min, self.args.hold_max, self.args.seed)

    def start_callers(self) -> Proc:
        launch = 50  # SIPp starts every call at once; each waits for its second
        plan = self.plan()
        lead = max([k / launch - p[0] for k, p in enumerate(plan)] + [0.0]) + 0.2
        rows = ["SEQUENTIAL"]
        for k, (t, room, dom, hold) in enumerate(plan):
            wait = int((t + lead - k / launch) * 1000)
            rows.append("p%d;%s;conf-%d;%d;%d;%d" % (k, dom, room, room, max(hold, 100), max(wait, 0)))
        inf = self.dir / "calls.csv"
        inf.write_text("\n".join(rows) + "\n")
        self.uac_log = self.dir / "uac.log"
        self.planned = plan
        self.lead = lead
        self.total_calls = len(plan)
        self.rooms_planned = len({p[1] for p in plan})
        end = max(p[0] + p[3] / 1000.0 for p in plan) + lead
        argv = [self.args.sipp, "%s:%d" % (LOCAL, self.port), "-sf",
                str(self.scenarios / "uac.xml"), "-inf", str(inf), "-i", LOCAL,
                "-p", str(free_udp_port()), "-m", str(len(plan)),
                "-r", str(launch), "-rp", "1000", "-l", str(len(plan) + 10),
                "-nostdin", "-trace_logs", "-log_file", str(self.uac_log),
                "-timeout", "%ds" % int(end + 30), "-max_socket", "200"]
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
            got = explain.parse_decision(line)
            if got is None:
                continue
            worker, fields, step = got
            what, reason = step[0], step[1]
            self.counts["%s:%s" % (what, reason)] += 1
            cid = fields.get("call_id", "")
            if cid not in self.by_call and what == "route":
                # when the demo saw the call routed (to within --refresh)
                self.placed_at[cid] = time.monotonic() - self.t0
            self.by_call[cid].append(step)
            short = "%-5s %-9s %-22s -> %-5s %s" % (
                what, reason, fields.get("key", fields.get("from", ""))[:22],
                fields.get("node", "-"), ("code=" + fields["code"]) if "code" in fields else "")
            self.decisions.append("[w%s] %s" % (worker, short))

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
        phase = "calls" if elapsed <= self.args.duration + self.lead else "last hang-ups"
        out.append("approute demo  %5.1fs of %ds (%s)  Kamailio udp:%s:%d  segment %s" % (
            elapsed, self.args.duration, phase, LOCAL, self.port, self.shared))
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
        rooms: Dict[str, List[str]] = defaultdict(list)
        try:
            for a in self.router.affinities(app="conference"):
                if a.sessions:
                    rooms[a.node_id or "-"].append("%s(%d)" % (a.key, a.sessions))
        except Exception:
            pass
        out.append("")
        out.append("live rooms (participants) per node:")
        for nid in sorted(self.nodes):
            out.append("  %-5s %s" % (nid, " ".join(sorted(rooms.get(nid, []))) or "-"))
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
        self.event("callers started: %d participants of %d rooms from %d domains"
                   % (self.total_calls, self.rooms_planned, len(DOMAINS)))
        drained = enabled = False
        drain_node = "ast2" if "ast2" in self.nodes else None
        last_plain = -self.args.print_every  # the first table at once
        while uac.alive():
            elapsed = time.monotonic() - self.t0
            if drain_node and not drained and elapsed >= 0.4 * self.args.duration:
                self.router.set_state(drain_node, "draining")
                self.drained_at = elapsed
                self.event("%s drained: keeps its rooms and their participants, opens no new room"
                           % drain_node)
                drained = True
            if drain_node and drained and not enabled and elapsed >= 0.7 * self.args.duration:
                self.router.set_state(drain_node, "active")
                self.enabled_at = elapsed
                self.event("%s enabled again" % drain_node)
                enabled = True
            self.read_decisions()
            if self.tty:
                sys.stdout.write("\x1b[H\x1b[2J" + self.render() + "\n")
                sys.stdout.flush()
            elif elapsed - last_plain >= self.args.print_every:
                # no terminal (a file, a pipe): the whole table at intervals
                last_plain = elapsed
                print(self.render() + "\n", flush=True)
            time.sleep(self.args.refresh)
        self.calls_done_at = time.monotonic() - self.t0
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
        # which node answered each call (the nodes' own logs)
        node_of: Dict[str, str] = {}
        for nid, n in self.nodes.items():
            text = n["log"].read_text(errors="replace") if n["log"].exists() else ""
            busy = set(re.findall(r"BUSY call_id=(\S+)", text))
            for cid in re.findall(r"INVITE call_id=(\S+)", text):
                if cid not in busy:
                    node_of[cid] = nid
        # each participant, room by room, in the order they called
        rooms: Dict[str, List[Tuple[str, int, str]]] = defaultdict(list)
        span: Dict[str, Tuple[float, float]] = {}  # call-id -> planned (start, end) s
        for line in self.uac_log.read_text(errors="replace").splitlines():
            m = re.search(r"RESULT call_id=(\S+) status=(\d+) from=p(\d+)@(\S+) ruri=conf-(\d+)", line)
            if m:
                rooms[m.group(5)].append((m.group(1), int(m.group(2)), m.group(4)))
                k = int(m.group(3))
                if k < len(self.planned):
                    t, _, _, hold = self.planned[k]
                    span[m.group(1)] = (t, t + max(hold, 100) / 1000.0)
        for parts in rooms.values():
            parts.sort(key=lambda p: span.get(p[0], (0.0, 0.0)))
        print("\n==== summary")
        print("participants: %d placed, %s" % (sum(res.values()), ", ".join(
            "%d x %d" % (v, k) for k, v in sorted(res.items()))))
        print("answered per node: " + ", ".join("%s=%d" % kv for kv in sorted(answered.items())))
        print("decisions: " + ", ".join("%s=%d" % kv for kv in sorted(self.counts.items())))
        print("rooms (the room is a strict key, the caller's domain a preference; "
              "capacity %d per node, headroom %s):" % (self.args.capacity, self.args.headroom))
        split, refused, unexplained = [], 0, 0
        drain: Optional[explain.Drain] = None
        if self.drained_at is not None:
            drain = ("ast2", self.drained_at, self.enabled_at if self.enabled_at is not None else -1.0)
        moves: List[explain.RoomMove] = []
        reopened: List[str] = []  # rooms whose first call a 503 sent to another node
        for room in sorted(rooms, key=int):
            parts = rooms[room]
            nodes = sorted({node_of[c] for c, st, _ in parts if st == 200 and c in node_of})
            answered_calls = [span[c] + (c,) for c, st, _ in parts if st == 200 and c in span]
            room_moved, room_split = explain.room_moves(answered_calls, node_of, self.by_call, drain)
            if explain.opened_after_503(answered_calls, self.by_call):
                reopened.append(room)
            moves += [(room,) + mv for mv in room_moved]
            if room_split:
                split.append(room)
            doms = sorted({d.split(".")[0] for _, _, d in parts})
            print("  room %s: %s, %d participants from %s" % (
                room, "on " + ", ".join(nodes) if nodes else "never opened", len(parts), ", ".join(doms)))
            for cid, st, dom in parts:
                words = explain.participant_words(self.by_call.get(cid, []))
                if not words:
                    unexplained += 1
                    words.append("no decision in Kamailio's log")
                if st != 200:
                    refused += 1
                print("    %-22s %s -> %s" % (dom, "answered on %s" % node_of.get(cid, "?") if st == 200
                                              else "refused %d" % st, "; ".join(words)))
        print("split rooms (participants on two nodes): %s" % (", ".join(split) if split else "none"))
        # every time a room's next participant went to another node than the one before, and why
        print("\n".join(explain.moves_report(moves, reopened)))
        # the clock: calls planned within --duration, and when the demo saw them routed
        seen = sorted(self.placed_at.values())
        d = float(self.args.duration)
        quarters = per_window([t - self.lead for t in seen], d)
        late = sum(1 for t in seen if t - self.lead > d + 1.0)
        print("clock: --duration %d: calls ran %.1fs (from the first INVITE to the last hang-up, "
              "%.1fs of SIPp start-up lead); participants routed per quarter of %ds: %s; after "
              "the end: %d" % (self.args.duration, self.calls_done_at, self.lead, self.args.duration,
                              ", ".join(str(q) for q in quarters), late))
        print("refused participants: %d (the caller heard the reason phrase; the detail is in "
              "Kamailio's log)" % refused)
        print("router after the run: sessions=%s affinities=%s (rooms kept for their grace time)"
              % (stats.get("sessions"), stats.get("affinities")))
        if "key_refusals" in stats or "headroom_refusals" in stats:
            print("router's own counts: key refusals %s, new keys turned away by headroom %s"
                  % (stats.get("key_refusals") or {}, stats.get("headroom_refusals") or {}))
        ok = (int(stats.get("sessions", 1)) == 0 and sum(res.values()) == self.total_calls
              and not split and unexplained == 0 and all(m[5] != "unexplained" for m in moves))
        print("result: %s" % ("OK - no room split over two nodes, every room move explained, every call "
                              "ended and no session is left"
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
    p.add_argument("--duration", type=int, default=20,
                   help="seconds of calls: rooms open and close, and every call is placed and hung "
                        "up, within them (default 20)")
    p.add_argument("--rate", type=float, default=0.6, help="rooms opened per second (default 0.6)")
    p.add_argument("--hold-min", type=int, default=4000, help="shortest room life, ms")
    p.add_argument("--hold-max", type=int, default=10000, help="longest room life, ms")
    p.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    p.add_argument("--busy", type=float, default=0.0,
                   help="share of calls the last node refuses with 503 (default 0)")
    p.add_argument("--capacity", type=int, default=8, help="conference seats per node (default 8)")
    p.add_argument("--headroom", type=float, default=0.2,
                   help="affinity.headroom: a node opens rooms below (1 - headroom) x capacity (default 0.2)")
    p.add_argument("--strategy", default="least_loaded", help="strategy for new domains")
    p.add_argument("--kemi", action="store_true", help="use the KEMI config")
    p.add_argument("--kamailio", default=shutil.which("kamailio") or "/usr/sbin/kamailio")
    p.add_argument("--sipp", default=shutil.which("sipp") or "/usr/bin/sipp")
    p.add_argument("--refresh", type=float, default=0.5, help="table refresh, seconds")
    p.add_argument("--recent", type=int, default=8, help="recent decisions shown")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-live", action="store_true", help="plain periodic output")
    p.add_argument("--print-every", type=float, default=5.0, metavar="S",
                   help="without a terminal (or with --no-live): print the table every S seconds "
                        "(default 5)")
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

#!/usr/bin/env python3
"""Conference rooms through a real Kamailio: approute against the dispatcher.

    .venv/bin/python bench/rooms/run.py            # the three variants, the table

One room workload (seeded: rooms open, participants call in over the room's
life from several domains, everybody hangs up when the room closes) is
played by SIPp through a real Kamailio in front of conference nodes that
enforce their capacity (bench/rooms/node.py: 503 once full), three times:

  ds-hash   Kamailio's dispatcher as its users configure it for rooms:
            ds_select_dst("1", "7") with hash_pvar $rU (a hash over the
            R-URI user, sip:conf-<room>@...: every participant of a room
            to the same node), failover to the next destination on 503
            (bench/kamailio/dispatcher.cfg, -A DS_HASH_RURI_USER).
  ds-load   the dispatcher's call-load algorithm 10 (the destination with
            the fewest active calls; duid and maxload = the node's
            capacity in dispatcher.list), failover on 503 (-A DS_CALL_LOAD).
  approute  examples/kamailio/kamailio.cfg and approute-kamailio.yaml as
            shipped (the room is the key, the caller's domain the
            preference), and router.yaml too (least_loaded, strict keys, a
            headroom: --headroom), with these nodes and their capacity.

Every variant gets fresh nodes and a fresh Kamailio (--children workers).
Per variant it reports: participants (calls placed), calls completed (200),
split rooms (rooms that had live participants on two nodes at one moment,
from the nodes' own logs), participants refused (a final answer other than
200), split into those whose room was live and those opening a new room,
503 bounces the nodes sent the proxy, max / mean load (calls held by a node,
sampled every 100 ms: the most any node held, and the time-averaged mean
over the nodes), and Kamailio's CPU time (user + system of all its
processes, /proc) per participant.

Everything runs on 127.0.0.1 with free ports in a temporary directory;
every process is started here and stopped by its pid.
"""

from __future__ import annotations

import argparse
import bisect
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KAMAILIO_CFG = REPO / "examples" / "kamailio" / "kamailio.cfg"
EXAMPLE_SETTINGS = REPO / "examples" / "kamailio" / "approute-kamailio.yaml"
DISPATCHER_CFG = REPO / "bench" / "kamailio" / "dispatcher.cfg"
UAC_XML = REPO / "tests" / "e2e" / "scenarios" / "uac.xml"
NODE_PY = HERE / "node.py"
LOCAL = "127.0.0.1"

# The Kamailio CPU bench's pieces: processes, ports, CPU samples, the package overlay.
from approute._procs import Proc, free_udp_port, sip_options  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from e2e_harness import example_router  # noqa: E402  (the example router.yaml with other nodes)

_spec = importlib.util.spec_from_file_location("kambench", REPO / "bench" / "kamailio" / "run.py")
kambench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kambench)  # type: ignore[union-attr]

KAMAILIO = kambench.KAMAILIO
SIPP = kambench.SIPP
VARIANTS = ("ds-hash", "ds-load", "approute")


# --------------------------------------------------------------------------
# the workload

class Participant:
    def __init__(self, t: float, room: int, domain: str, hold: float):
        self.t, self.room, self.domain, self.hold = t, room, domain, hold


def workload(args) -> List[Participant]:
    """Rooms open (Poisson, --room-rate per second, for --duration seconds),
    live --life-min..--life-max seconds; --participants MIN..MAX join each,
    the first when it opens, the others at uniform times over its life, from
    the room's home domain (--home-share) or any of --domains; all stay
    until the room closes."""
    from approute.demo import room_schedule
    domains = ["d%d.example.com" % i for i in range(1, args.domains + 1)]
    rooms = room_schedule(random.Random(args.seed), args.room_rate, 0.0, args.duration,
                          (args.life_min, args.life_max), (args.participants_min, args.participants_max),
                          domains, home_share=args.home_share)
    return [Participant(t, room, dom, held) for t, room, dom, held in rooms]


# --------------------------------------------------------------------------
# one variant

class Run:
    def __init__(self, args, variant: str, tmp: Path, calls: List[Participant]):
        self.args, self.variant, self.calls = args, variant, calls
        self.dir = tmp / variant
        self.dir.mkdir(parents=True)
        self.procs: List[Proc] = []
        self.nodes: List[Tuple[str, int, Path]] = []
        self.shared: Optional[str] = None

    def start_nodes(self) -> None:
        for i in range(1, self.args.nodes + 1):
            port = free_udp_port()
            log = self.dir / ("node%d.log" % i)
            argv = [sys.executable, str(NODE_PY), "--port", str(port), "--capacity", str(self.args.capacity),
                    "--log", str(log)]
            self.procs.append(Proc("node%d" % i, argv, self.dir / ("node%d.out" % i)))
            self.nodes.append(("ast%d" % i, port, log))
        deadline = time.monotonic() + 10
        for _, port, _ in self.nodes:
            while sip_options(port) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("node on port %d did not answer OPTIONS" % port)
                time.sleep(0.05)

    def approute_configs(self) -> Path:
        a = self.args
        # examples/kamailio/router.yaml with these nodes and --headroom
        text = example_router([(nid, "sip:%s:%d" % (LOCAL, port), a.capacity) for nid, port, _ in self.nodes])
        text, count = re.subn(r"headroom: [0-9.]+", "headroom: %s" % a.headroom, text)
        if count != 1:
            raise RuntimeError("examples/kamailio/router.yaml: no affinity headroom to set")
        router = self.dir / "router.yaml"
        router.write_text(text)
        self.shared = "approute-rooms-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
        text = EXAMPLE_SETTINGS.read_text()
        text = re.sub(r"(?m)^router: .*$", "router: %s" % router, text)
        text = re.sub(r"(?m)^shared: .*$", "shared: %s" % self.shared, text)
        # no probes: the dispatcher variants send no pings either
        text = re.sub(r"(?m)^  interval: .*$", "  interval: 0", text)
        settings = self.dir / "approute-kamailio.yaml"
        settings.write_text(text)
        return settings

    def start_kamailio(self) -> Tuple[Proc, int]:
        a = self.args
        port = free_udp_port()
        run = self.dir / "run"
        run.mkdir()
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        common = ["-DD", "-E", "-m", "64", "-M", "8", "-P", str(run / "kamailio.pid"), "-Y", str(run)]
        if self.variant == "approute":
            site_dirs, _ = kambench.approute_overlay(self.dir, "repo")
            env["APPROUTE_KAMAILIO_CONFIG"] = str(self.approute_configs())
            env["APPROUTE_SITE_DIRS"] = site_dirs
            argv = [KAMAILIO, "-f", str(KAMAILIO_CFG)] + common + [
                "-A", "APPROUTE_LISTEN=udp:%s:%d" % (LOCAL, port),
                "-A", 'APPROUTE_HANDLER="%s"' % (REPO / "examples" / "kamailio" / "approute_handler.py"),
                "-A", "APPROUTE_CHILDREN=%d" % a.children,
                "-A", "APPROUTE_FR_TIMER=2000", "-A", "APPROUTE_FR_INV_TIMER=30000"]
        else:
            listing = self.dir / "dispatcher.list"
            if self.variant == "ds-hash":
                listing.write_text("".join("1 sip:%s:%d 0 0\n" % (LOCAL, p) for _, p, _ in self.nodes))
                extra = ["-A", 'DS_ALG="7"', "-A", "DS_HASH_RURI_USER"]
            else:
                listing.write_text("".join("1 sip:%s:%d 0 0 duid=%s;maxload=%d\n"
                                           % (LOCAL, p, nid, a.capacity) for nid, p, _ in self.nodes))
                extra = ["-A", 'DS_ALG="10"', "-A", "DS_CALL_LOAD"]
            argv = [KAMAILIO, "-f", str(DISPATCHER_CFG)] + common + [
                "-A", "DS_LISTEN=udp:%s:%d" % (LOCAL, port),
                "-A", 'DS_LIST="%s"' % listing,
                "-A", "DS_CHILDREN=%d" % a.children, "-A", "DS_PING_INTERVAL=0",
                "-A", "DS_FR_TIMER=2000", "-A", "DS_FR_INV_TIMER=30000"] + extra
        log = self.dir / "kamailio.log"
        log.write_text("==== %s\n" % " ".join(argv))
        k = Proc("kamailio-" + self.variant, argv, log, env=env, cwd=str(run))
        self.procs.append(k)
        deadline = time.monotonic() + 20
        while sip_options(port) is None:
            if not k.alive():
                raise RuntimeError("kamailio (%s) exited:\n%s"
                                   % (self.variant, log.read_text(errors="replace")[-3000:]))
            if time.monotonic() > deadline:
                raise RuntimeError("kamailio (%s) did not answer OPTIONS; see %s" % (self.variant, log))
            time.sleep(0.2)
        return k, port

    def play(self, port: int) -> Tuple[float, float, Path]:
        """SIPp starts every call at --launch-rate and each waits for its
        arrival time before its INVITE (uac.xml's wait field); returns the
        wall clock of the workload's second 0, the SIPp wall time and its log."""
        a = self.args
        lead = max([k / a.launch_rate - p.t for k, p in enumerate(self.calls)] + [0.0]) + 0.5
        rows = ["SEQUENTIAL"]
        for k, p in enumerate(self.calls):
            wait = p.t + lead - k / a.launch_rate
            rows.append("u%d;%s;conf-%d;%d;%d;%d" % (k, p.domain, p.room, p.room, int(p.hold * 1000),
                                                    max(0, int(wait * 1000))))
        csv = self.dir / "calls.csv"
        csv.write_text("\n".join(rows) + "\n")
        log = self.dir / "uac.log"
        timeout = int(lead + max(p.t + p.hold for p in self.calls) + 30)
        argv = [SIPP, "%s:%d" % (LOCAL, port), "-sf", str(UAC_XML), "-inf", str(csv), "-i", LOCAL,
                "-p", str(free_udp_port()), "-m", str(len(self.calls)),
                "-r", str(a.launch_rate), "-rp", "1000",
                "-l", str(len(self.calls) + 10), "-nostdin", "-trace_logs", "-log_file", str(log),
                "-trace_err", "-error_file", str(self.dir / "uac.err"), "-timeout", "%ds" % timeout,
                "-timeout_error", "-max_socket", "1000"]
        t0 = time.time()
        p = Proc("uac", argv, self.dir / "uac.out")
        self.procs.append(p)
        try:
            p.p.wait(timeout=timeout + 15)
        except subprocess.TimeoutExpired:
            pass
        wall = time.time() - t0
        p.stop()
        self.procs.remove(p)
        return t0 + lead, wall, log

    def execute(self) -> Dict:
        try:
            self.start_nodes()
            k, port = self.start_kamailio()
            time.sleep(1.0)
            idle0 = kambench.cpu_sample(k.pid)  # Kamailio's own timers, no calls
            time.sleep(self.args.idle)
            before = kambench.cpu_sample(k.pid)
            t_zero, wall, uac_log = self.play(port)
            time.sleep(self.args.settle)
            after = kambench.cpu_sample(k.pid)
            if not k.alive():
                raise RuntimeError("kamailio (%s) died during the run; see %s" % (self.variant, self.dir))
            sessions = None
            if self.shared:
                import approute
                sessions = int(approute.Router.attach(self.shared).stats()["sessions"])
        finally:
            for p in reversed(self.procs):
                p.stop(timeout=5)
            self.procs.clear()
            if self.shared:
                try:
                    import approute
                    approute.Router.unlink(self.shared)
                except Exception:
                    pass
        res = analyse(self.calls, t_zero, uac_log, [(nid, log) for nid, _, log in self.nodes],
                      self.args.capacity)
        cpu = kambench.cpu_delta(before, after)
        idle = kambench.cpu_delta(idle0, before)["cpu"] / self.args.idle  # CPU s per s, idle
        n = max(1, len(self.calls))
        res.update({"variant": self.variant, "wall": wall, "cpu_s": cpu["cpu"], "idle_cpu_per_s": idle,
                    "cpu_us_per_call": cpu["cpu"] / n * 1e6,

                    "sessions_left": sessions, "dir": str(self.dir)})
        return res


# --------------------------------------------------------------------------
# what happened (from the nodes' and the caller's logs)

def analyse(calls: List[Participant], t_zero: float, uac_log: Path, nodes: List[Tuple[str, Path]],
            capacity: int) -> Dict:
    # each answered call: node, start, end (the node's own clock)
    live: Dict[str, Tuple[str, str, float]] = {}
    intervals: Dict[str, List[Tuple[float, float, str]]] = defaultdict(list)  # room -> (start, end, node)
    per_node: Dict[str, List[Tuple[float, int]]] = defaultdict(list)          # node -> (t, +1/-1)
    bounces = 0
    t_last = 0.0
    for nid, log in nodes:
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            f = line.split()
            if len(f) < 4:
                continue
            t, what, cid, user = float(f[0]), f[1], f[2], f[3]
            t_last = max(t_last, t)
            if what == "BUSY":
                bounces += 1
            elif what == "ACCEPT":
                live[cid] = (nid, user, t)
                per_node[nid].append((t, 1))
            elif what == "BYE" and cid in live:
                n, u, t0 = live.pop(cid)
                intervals[u].append((t0, t, n))
                per_node[nid].append((t, -1))
    for n, u, t0 in live.values():  # never ended (counted to the end)
        intervals[u].append((t0, float("inf"), n))
    # split rooms: two nodes holding live participants of a room at once
    split = 0
    for ivs in intervals.values():
        events = sorted([(s, 1, n) for s, e, n in ivs] + [(e, -1, n) for s, e, n in ivs],
                        key=lambda x: (x[0], x[1]))
        held: Dict[str, int] = defaultdict(int)
        for _, d, n in events:
            held[n] += d
            if sum(1 for v in held.values() if v > 0) > 1:
                split += 1
                break
    # the caller's outcomes; a refused participant whose room was live then
    # (on any node) is "refused in its room", otherwise "new room refused"
    status: Dict[int, int] = {}
    for line in uac_log.read_text(errors="replace").splitlines() if uac_log.exists() else []:
        m = re.search(r"RESULT call_id=(\d+)-\S+ status=(\d+)", line)
        if m:
            status[int(m.group(1))] = int(m.group(2))
    completed = sum(1 for s in status.values() if s == 200)
    refused_in_room = refused_new = 0
    codes: Dict[int, int] = defaultdict(int)
    for n, s in status.items():
        if s == 200 or not 1 <= n <= len(calls):
            continue
        codes[s] += 1
        p = calls[n - 1]
        at = t_zero + p.t
        if any(s0 <= at < e0 for s0, e0, _ in intervals.get("conf-%d" % p.room, [])):
            refused_in_room += 1
        else:
            refused_new += 1
    # load per node, sampled every 100 ms over the run
    starts = [t for ev in per_node.values() for t, _ in ev]
    max_load, mean_load, ratio = 0, 0.0, 0.0
    if starts:
        t, end = min(starts), t_last
        series = {n: sorted(ev) for n, ev in per_node.items()}
        cums = {}
        for n, ev in series.items():
            acc, c = [], 0
            for _, d in ev:
                c += d
                acc.append(c)
            cums[n] = ([x for x, _ in ev], acc)
        means, ratios = [], []
        while t <= end:
            loads = []
            for nid, _ in nodes:
                ts, acc = cums.get(nid, ([], []))
                i = bisect.bisect_right(ts, t)
                loads.append(acc[i - 1] if i else 0)
            max_load = max(max_load, max(loads))
            m = sum(loads) / len(loads)
            if m > 0:
                means.append(m)
                ratios.append(max(loads) / m)
            t += 0.1
        mean_load = sum(means) / len(means) if means else 0.0
        ratio = sum(ratios) / len(ratios) if ratios else 0.0
    return {"participants": len(calls), "rooms": len({p.room for p in calls}), "results": len(status),
            "completed": completed, "split_rooms": split, "refused_in_room": refused_in_room,
            "refused_new_room": refused_new, "refusal_codes": dict(sorted(codes.items())),
            "bounces_503": bounces, "max_load": max_load, "capacity": capacity,
            "mean_load": mean_load, "max_over_mean": ratio}


# --------------------------------------------------------------------------
# report

LABELS = {
    "ds-hash": "dispatcher, hash over the room (alg 7 on $rU) + failover on 503",
    "ds-load": "dispatcher, call load (alg 10, maxload = capacity) + failover on 503",
    "approute": "approute: strict rooms, domain preference, headroom %s",
}


def table(results: List[Dict], args) -> str:
    L = ["| variant | participants | completed | split rooms | refused in their room | new rooms refused "
         "| refusal codes | 503 bounces at the proxy | max load (capacity %d) | mean load | max/mean "
         "| Kamailio CPU us/participant | Kamailio idle CPU ms/s |" % args.capacity,
         "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        label = LABELS[r["variant"]]
        if r["variant"] == "approute":
            label = label % args.headroom
        L.append("| %s | %d | %d | **%d** | %d | %d | %s | %d | %d | %.1f | %.2f | %.0f | %.1f |" % (
            label, r["participants"], r["completed"], r["split_rooms"], r["refused_in_room"],
            r["refused_new_room"], ", ".join("%d x%d" % kv for kv in r["refusal_codes"].items()) or "-",
            r["bounces_503"], r["max_load"], r["mean_load"], r["max_over_mean"], r["cpu_us_per_call"],
            r["idle_cpu_per_s"] * 1e3))
    L.append("")
    L.append("Kamailio CPU: user + system time of all its processes from the first call to --settle s "
             "after the last, over the participants; idle: the same processes' CPU per second without "
             "calls, measured for --idle s before the load (its timers; already in the first figure)")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=VARIANTS, help="run only this variant (repeatable)")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--capacity", type=int, default=30,
                    help="calls a node holds; beyond it answers 503 (default 30)")
    ap.add_argument("--duration", type=float, default=60, help="seconds over which rooms open (default 60)")
    ap.add_argument("--room-rate", type=float, default=1.6, help="rooms opened per second (default 1.6)")
    ap.add_argument("--life-min", type=float, default=10)
    ap.add_argument("--life-max", type=float, default=25)
    ap.add_argument("--participants-min", type=int, default=2)
    ap.add_argument("--participants-max", type=int, default=8)
    ap.add_argument("--domains", type=int, default=8)
    ap.add_argument("--home-share", type=float, default=0.7)
    ap.add_argument("--headroom", type=float, default=0.2, help="approute's affinity.headroom (default 0.2)")
    ap.add_argument("--children", type=int, default=4, help="Kamailio UDP workers (default 4)")
    ap.add_argument("--launch-rate", type=int, default=200, help="SIPp call starts per second (default 200)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds after the last call before CPU is read")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measured before the load")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)
    for exe in (KAMAILIO, SIPP):
        if not os.path.exists(exe):
            print("missing %s (run scripts/setup.sh)" % exe, file=sys.stderr)
            return 2
    calls = workload(args)
    tmp = Path(tempfile.mkdtemp(prefix="approute-rooms-"))
    results = []
    try:
        for v in args.only or VARIANTS:
            r = Run(args, v, tmp, calls).execute()
            results.append(r)
            print("%-8s %d/%d completed, split rooms %d, refused %d in room + %d new, 503 bounces %d, "
                  "max load %d, CPU %.0f us/participant" % (
                      v, r["completed"], r["participants"], r["split_rooms"], r["refused_in_room"],
                      r["refused_new_room"], r["bounces_503"], r["max_load"], r["cpu_us_per_call"]),
                  flush=True)
    finally:
        if args.keep:
            print("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    mach = kambench.machine()
    print()
    print("machine: %s, %s cores; %s, SIPp %s; loadavg at start %s" % (
        mach["cpu"], mach["cores"], mach["kamailio"], mach["sipp"], mach["loadavg"]))
    print("command: %s" % " ".join(["bench/rooms/run.py"] + (sys.argv[1:] if argv is None else list(argv))))
    print("workload: %d rooms, %d participants over %.0f s (seed %d), %d nodes of capacity %d, %d domains" % (
        results[0]["rooms"], results[0]["participants"], args.duration, args.seed, args.nodes, args.capacity,
        args.domains))
    print()
    print(table(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": mach, "args": vars(args), "results": results},
                                              indent=1))
    bad = [r for r in results if r["results"] != r["participants"]]
    for r in bad:
        print("WARNING %s: %d of %d call results in the caller's log"
              % (r["variant"], r["results"], r["participants"]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A soak: two real Kamailio proxies with the example configuration share one
redis-server through ``cluster:`` and route SIPp traffic at a steady rate for
``--minutes`` while, on a fixed timeline (fractions of the run):

* two nodes join by status report (SIP PUBLISH, one to each proxy), one of
  them leaves (``Expires: 0``) and comes back, then the other;
* one configured node answers 503 to a random 10% of its INVITEs (the proxy
  retries the call on another node);
* the redis-server is stopped and started again on the same port (empty);
* one worker of kam1 (a child of its main process, started by this soak) is
  SIGKILLed: Kamailio's main process then shuts the whole instance down
  (it terminates on SIGCHLD), and the soak starts kam1 again on the same
  port and segment name; what happened is printed.

Every minute it prints the calls placed and completed (per one-minute SIPp
caller run and proxy), whether the counts equal the live sessions (each
proxy's node counts in its own segment against its session table, and the
deployment's counts in Redis against both proxies' sessions; read while
calls run, so a check retries for up to 3 s until one read agrees), and
the RSS of every process. At the start and the end: the RSS of every
process; every 5 minutes: route() latency p50/p99 at each proxy (from
``router.stats()["route_seconds"]``, power-of-two bucket bounds); at the
end: the sessions left (must be 0 at both proxies and in Redis).

Not in CI. Short form: ``--minutes 3`` (the timeline shrinks with it).

    .venv/bin/python bench/soak/run.py --minutes 30 --rate 4 --json soak.json

Everything on 127.0.0.1, free ports, a temporary directory; every process
started here is stopped by its pid. Exit status 0 when every check held.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from e2e_harness import (  # noqa: E402
    CONFERENCE_APP,
    E2E,
    LOCAL,
    Call,
    Proc,
    UacRun,
    missing_requirements,
    status_config,
)

STATUS = status_config(probe_thresholds=False)

# The e2e conference app (affinity by the caller's domain, 503 retried) with
# a short session lifetime: a call whose proxy died mid-dialog is forgotten
# after it instead of after the example's 4 h.
APPS = CONFERENCE_APP.rstrip("\n") + "\n    session: {lifetime: %d}\n" + """\
  default:
    pool: media
    strategy: least_loaded
    retry: {codes: [503, 408], max_attempts: 3}
    session: {lifetime: %d}
"""


def log(msg: str) -> None:
    sys.stdout.write("%s %s\n" % (time.strftime("%H:%M:%S", time.gmtime()), msg))
    sys.stdout.flush()


# --------------------------------------------------------------------------
# processes and memory

def children_of(pid: int) -> List[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(out)


def rss_kb(pid: int) -> int:
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def quantile_us(buckets: Sequence[Tuple[float, int]], q: float) -> Optional[float]:
    """The upper bound (us) of the bucket holding quantile q of a
    histogram given as (upper bound s, count in that bucket) pairs; minus
    the last finite bound when the quantile is above it."""
    total = sum(c for _, c in buckets)
    if total <= 0:
        return None
    seen, last = 0, 0.0
    for le, c in buckets:
        seen += c
        if seen >= q * total:
            return le * 1e6 if le != float("inf") else -last * 1e6  # negative: above the last bound
        last = le
    return -last * 1e6


def percentiles(ms: Sequence[float]) -> Dict[str, Any]:
    """p50 / p99 / max in us of response times given in ms."""
    v = sorted(ms)
    if not v:
        return {"n": 0}
    def at(q: float) -> int:
        return int(round(v[min(len(v) - 1, int(q * len(v)))] * 1000))
    return {"n": len(v), "p50_us": at(0.50), "p99_us": at(0.99), "max_us": int(round(v[-1] * 1000))}


def histogram(stats: Dict[str, Any]) -> List[Tuple[float, int]]:
    """route_seconds of router.stats() as cumulative (upper bound, count)."""
    h = stats.get("route_seconds") or {}
    b = h.get("buckets", h) if isinstance(h, dict) else h
    items = sorted(((float(k), int(v)) for k, v in (b.items() if isinstance(b, dict) else b)),
                   key=lambda kv: kv[0])
    return items


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args = args
        self.tmp = tmp
        self.rng = random.Random(args.seed)
        self.kam1 = E2E(self._dir("kam1"), None)
        self.kam2 = E2E(self._dir("kam2"), None)
        self.kam2.nodes = self.kam1.nodes
        self.redis: Optional[Proc] = None
        self.redis_url = ""
        self.deployment = "soak-%d" % os.getpid()
        self.failures: List[str] = []
        self.events: List[str] = []
        self.minutes: List[Dict[str, Any]] = []
        self.windows: List[Dict[str, Any]] = []
        self.runs: List[Tuple[str, UacRun, int]] = []  # (proxy, run, minute)
        self.rtt: Dict[str, List[Tuple[float, float]]] = {}
        self.t0_mono = time.monotonic()
        self.totals = {"placed": 0, "completed": 0, "failed": 0, "unanswered": 0}

    def _dir(self, name: str) -> Path:
        d = self.tmp / name
        d.mkdir()
        return d

    # ----- setup ---------------------------------------------------------------

    def start(self) -> None:
        from approute._procs import start_redis
        self.redis, self.redis_url = start_redis(self.tmp / "redis")
        for i in (1, 2):
            self.kam1.add_node("n%d" % i)
        busy = ["busy" if self.rng.random() < 0.10 else "ok" for _ in range(20000)]
        self.kam1.add_node("n3", scenario="uas_flaky.xml", inf=busy)
        for j in ("j1", "j2"):
            self.kam1.add_node(j)  # SIPp UAS up; in the proxies only once it reports
        for env, proxy in ((self.kam1, "kam1"), (self.kam2, "kam2")):
            env.write_config(
                settings_extra="default_app: default\n",
                apps_yaml=APPS % (self.args.lifetime, self.args.lifetime),
                node_extra=", capacity: {conference: %d}" % self.args.capacity,
                configured=["n1", "n2", "n3"],
                router_extra=("cluster: {redis: \"%s\", name: %s, proxy: %s, timeout_ms: 50}\n"
                              % (self.redis_url, self.deployment, proxy)) + STATUS)
            env.start_kamailio(children=self.args.children)
        from test_status_e2e import Publisher
        self.pubs = {"j1": Publisher(self.kam1, "j1"), "j2": Publisher(self.kam2, "j2")}
        self.joined = {"j1": False, "j2": False}

    def close(self) -> None:
        for p in getattr(self, "pubs", {}).values():
            p.close()
        self.kam2.nodes = {}
        self.kam2.close()
        self.kam1.close()
        if self.redis is not None:
            self.redis.stop()

    # ----- events --------------------------------------------------------------

    def event(self, what: str) -> None:
        log("EVENT " + what)
        self.events.append("%s %s" % (time.strftime("%H:%M:%S", time.gmtime()), what))

    def publish(self, node: str, leave: bool = False) -> None:
        pub = self.pubs[node]
        try:
            if leave:
                r = pub.send(None, expires=0)
                self.joined[node] = False
            elif self.joined[node]:
                r = pub.send(pub.body(), expires=60)
            else:
                r = pub.send(pub.body(), expires=60, etag=None)
                self.joined[node] = r.code == 200
            if r.code != 200:
                self.failures.append("PUBLISH %s %s answered %d" % (node, "leave" if leave else "", r.code))
                log("PUBLISH %s answered %d" % (node, r.code))
        except AssertionError as e:  # no answer: the proxy was down
            log("PUBLISH %s: %s" % (node, e))
            self.joined[node] = False if not leave else self.joined[node]

    def restart_redis(self) -> None:
        assert self.redis is not None
        argv = self.redis.argv
        self.redis.stop()
        time.sleep(1.0)
        self.redis = Proc("redis", argv, self.tmp / "redis" / "redis.out")
        port = int(argv[argv.index("--port") + 1])
        for _ in range(100):
            try:
                socket.create_connection((LOCAL, port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.event("redis-server restarted empty (pid %d)" % self.redis.pid)

    def kill_worker(self) -> None:
        env = self.kam1
        assert env.kamailio is not None
        main = env.kamailio.pid
        kids = children_of(main)
        victim = kids[len(kids) // 2]
        self.event("SIGKILL kam1 worker pid %d (main %d, %d children)" % (victim, main, len(kids)))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and env.kamailio.alive():
            time.sleep(0.1)
        if env.kamailio.alive():
            self.event("kam1 main process %d still up after its worker died; children now %s"
                       % (main, children_of(main)))
            return
        self.event("kam1 main process %d exited (rc %s) after its worker died; starting kam1 again"
                   % (main, env.kamailio.p.returncode))
        env.kamailio = None
        env._router = None
        t0 = time.monotonic()
        env.start_kamailio(children=self.args.children)
        self.event("kam1 answers OPTIONS again %.1f s later (pid %d)"
                   % (time.monotonic() - t0, env.kamailio.pid))

    # ----- traffic -------------------------------------------------------------

    def start_minute(self, minute: int) -> None:
        n = int(round(self.args.rate * 60))
        for name, env in (("kam1", self.kam1), ("kam2", self.kam2)):
            calls = []
            for _ in range(n):
                hold = self.rng.randint(self.args.hold_ms // 2, self.args.hold_ms * 3 // 2)
                if self.rng.random() < 0.5:
                    calls.append(Call("d%d.example.com" % self.rng.randrange(self.args.keys),
                                      user=name, hold_ms=hold))
                else:
                    # no app of that name: the router's default app (default_app)
                    calls.append(Call("plain.example.com", user=name, app="plain", hold_ms=hold))
            run = env.start_calls(calls, rate=self.args.rate, limit=200, timeout=60 + self.args.hold_ms / 250,
                                  scenario=str(HERE / "uac_rtd.xml"), extra=["-trace_rtt", "-rtt_freq", "1"])
            self.runs.append((name, run, minute))

    def collect(self, final: bool = False) -> List[str]:
        lines = []
        keep = []
        for name, run, minute in self.runs:
            if run.proc.alive() and not final:
                keep.append((name, run, minute))
                continue
            if run.proc.alive():
                try:
                    run.proc.p.wait(timeout=run.timeout + 10)
                except Exception:
                    pass
            run.proc.stop()
            res = run.results()
            ok = sum(1 for r in res if r.status == 200)
            codes: Dict[int, int] = {}
            for r in res:
                if r.status != 200:
                    codes[r.status] = codes.get(r.status, 0) + 1
            unanswered = len(run.calls) - len(res)
            self.totals["placed"] += len(run.calls)
            self.totals["completed"] += ok
            self.totals["failed"] += len(res) - ok
            self.totals["unanswered"] += unanswered
            rtt = self.read_rtt(run)
            self.rtt.setdefault(name, []).extend(rtt)
            q = percentiles([ms for _, ms in rtt])
            lines.append("%s minute %d: placed %d completed %d failed %s unanswered %d; INVITE->100 %s"
                         % (name, minute, len(run.calls), ok, codes or 0, unanswered, q))
        self.runs = keep
        return lines

    def read_rtt(self, run: UacRun) -> List[Tuple[float, float]]:
        """(ms since the soak began, INVITE->100 ms) of every call of a
        caller run that got a 100 Trying (SIPp -trace_rtt:
        uac_rtd_<pid>_rtt.csv in the cwd, its times since SIPp started,
        whole ms: SIPp's clock ticks in ms, so this is a coarse view)."""
        base = (run.started - self.t0_mono) * 1000
        out = []
        f = Path("uac_rtd_%d_rtt.csv" % run.proc.pid)
        if f.exists():
            for line in f.read_text(errors="replace").splitlines():
                parts = line.split(";")
                try:
                    out.append((base + float(parts[0]), float(parts[1])))
                except (IndexError, ValueError):
                    continue  # the header
        return out

    # ----- checks --------------------------------------------------------------

    def routers(self):
        return [(n, e.router) for n, e in (("kam1", self.kam1), ("kam2", self.kam2))]

    def check_counts(self) -> Dict[str, Any]:
        """The deployment's counts (every live proxy's share in Redis,
        summed over the nodes) against the live sessions of both proxies'
        session tables. Calls start and end between the reads, and an end
        reaches Redis with its proxy's next republish (at most once a second,
        at a route, an end or a sweep), so the check sweeps both proxies'
        segments (as their timers do) and reads again, up to 5 s, until one
        read agrees; the smallest difference seen (deployment - live) is
        kept."""
        out: Dict[str, Any] = {}
        deadline = time.monotonic() + 5.0
        tries, best = 0, None
        while True:
            tries += 1
            try:
                for _, r in self.routers():
                    r.sweep()
                live = 0
                for name, r in self.routers():
                    n = int(r.stats()["sessions"])
                    out["%s_sessions" % name] = n
                    live += n
                dep = sum(int(v) for n in self.kam2.router.nodes() for v in dict(n.sessions).values())
                out.update(deployment=dep, live=live)
                if best is None or abs(dep - live) < abs(best):
                    best = dep - live
                if dep == live:
                    break
            except Exception as e:  # a proxy restarting: read again
                out["error"] = repr(e)
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        out.update(equal=best == 0, tries=tries, smallest_difference=best)
        return out

    def processes(self) -> Dict[str, List[Tuple[int, int]]]:
        """name -> [(pid, RSS kB)] of every process started here (and this one)."""
        procs: Dict[str, List[Tuple[int, int]]] = {}
        for name, env in (("kam1", self.kam1), ("kam2", self.kam2)):
            if env.kamailio is not None and env.kamailio.alive():
                pids = [env.kamailio.pid] + children_of(env.kamailio.pid)
                procs[name] = [(p, rss_kb(p)) for p in pids]
        if self.redis is not None:
            procs["redis"] = [(self.redis.pid, rss_kb(self.redis.pid))]
        procs["nodes"] = [(n.proc.pid, rss_kb(n.proc.pid)) for n in self.kam1.nodes.values() if n.proc]
        procs["callers"] = [(run.proc.pid, rss_kb(run.proc.pid))
                            for _, run, _ in self.runs if run.proc.alive()]
        procs["soak"] = [(os.getpid(), rss_kb(os.getpid()))]
        return procs

    @staticmethod
    def rss_line(procs: Dict[str, List[Tuple[int, int]]]) -> str:
        return "  ".join("%s %.1f MB (%d procs, max %.1f)" % (
            k, sum(r for _, r in v) / 1024, len(v), max((r for _, r in v), default=0) / 1024)
            for k, v in procs.items())

    def latency_snapshot(self) -> Dict[str, List[Tuple[float, int]]]:
        snap = {}
        for name, r in self.routers():
            try:
                snap[name] = histogram(r.stats())
            except Exception:
                snap[name] = []
        return snap

    @staticmethod
    def window(a: List[Tuple[float, int]], b: List[Tuple[float, int]]) -> Dict[str, Any]:
        def per_bucket(h):
            prev, out = 0, []
            for le, cum in h:
                out.append((le, cum - prev))
                prev = cum
            return out
        if not b:
            return {"calls": 0}
        da = dict(per_bucket(a)) if a else {}
        diff = [(le, c - da.get(le, 0)) for le, c in per_bucket(b)]
        if any(c < 0 for _, c in diff):  # the segment was made anew (a restart): since then
            diff = per_bucket(b)
        return {"calls": sum(c for _, c in diff), "p50_us": quantile_us(diff, 0.5),
                "p99_us": quantile_us(diff, 0.99)}

    # ----- the run -------------------------------------------------------------

    def timeline(self) -> List[Tuple[float, str]]:
        return sorted([
            (0.05, "join j1"), (0.10, "join j2"), (0.25, "leave j1"), (0.35, "join j1"),
            (0.45, "restart redis"), (0.60, "kill worker"), (0.70, "leave j2"), (0.80, "join j2"),
        ])

    def run(self) -> int:
        args = self.args
        total_s = args.minutes * 60.0
        self.start()
        t0 = self.t0_mono = time.monotonic()
        start_procs = self.processes()
        self.start_rss = start_procs
        log("START rss: " + self.rss_line(start_procs))
        for k, v in start_procs.items():
            log("  start %s: %s" % (k, ", ".join("%d=%.1fMB" % (p, r / 1024) for p, r in v)))
        todo = [(f * total_s, what) for f, what in self.timeline()]
        next_minute, next_refresh = 0, 20.0
        lat_prev = self.latency_snapshot()
        next_window = 300.0 if total_s >= 600 else total_s / 2
        window_len = next_window
        while True:
            now = time.monotonic() - t0
            if next_minute * 60.0 <= now and next_minute * 60.0 < total_s:
                self.start_minute(next_minute)
                if next_minute > 0:
                    self.report_minute(next_minute)
                next_minute += 1
            while todo and todo[0][0] <= now:
                _, what = todo.pop(0)
                self.event(what)
                verb, obj = what.split(" ", 1)
                if verb == "join":
                    self.publish(obj)
                elif verb == "leave":
                    self.publish(obj, leave=True)
                elif what == "restart redis":
                    self.restart_redis()
                elif what == "kill worker":
                    self.kill_worker()
            if now >= next_refresh:
                for j, on in list(self.joined.items()):
                    if on:
                        self.publish(j)
                next_refresh += 20.0
            if now >= next_window and next_window <= total_s + 1:
                snap = self.latency_snapshot()
                row = {"until_min": round(next_window / 60, 1)}
                for name in snap:
                    w = self.window(lat_prev.get(name, []), snap[name])
                    row[name] = w
                self.windows.append(row)
                log("LATENCY until minute %.1f: %s" % (next_window / 60, json.dumps(row)))
                lat_prev = snap
                next_window += window_len
            for p in (self.kam1, self.kam2):
                if p.kamailio is not None and not p.kamailio.alive():
                    self.failures.append("a Kamailio exited unasked: " + p.log_tail(20))
                    log("a Kamailio exited unasked")
                    return self.finish(t0)
            if now >= total_s:
                break
            time.sleep(0.2)
        self.report_minute(next_minute)
        return self.finish(t0)

    def report_minute(self, minute: int) -> None:
        for line in self.collect():
            log("CALLS " + line)
        counts = self.check_counts()
        procs = self.processes()
        row = {"minute": minute, "counts": counts, "totals": dict(self.totals),
               "rss_mb": {k: round(sum(r for _, r in v) / 1024, 1) for k, v in procs.items()}}
        self.minutes.append(row)
        if not counts.get("equal"):
            log("COUNTS differ at minute %d: %s" % (minute, counts))
        log("MINUTE %d totals %s counts %s" % (minute, self.totals, counts))
        log("  rss: " + self.rss_line(procs))

    def finish(self, t0: float) -> int:
        log("traffic over; waiting for the last calls")
        for line in self.collect(final=True):
            log("CALLS " + line)
        # The last calls' ends reach Redis with the next republish (a sweep).
        left: Dict[str, Any] = {}
        deadline = time.monotonic() + self.args.lifetime + 30
        while True:
            try:
                for _, r in self.routers():
                    r.sweep()
                left = {name: int(r.stats()["sessions"]) for name, r in self.routers()}
                left["redis"] = sum(int(v) for n in self.kam1.router.nodes()
                                    for v in dict(n.sessions).values())
            except Exception as e:
                left = {"error": repr(e)}
            if all(v == 0 for v in left.values() if isinstance(v, int)) and "error" not in left:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(1.0)
        snap = self.latency_snapshot()
        end_procs = self.processes()
        log("END rss: " + self.rss_line(end_procs))
        for k, v in end_procs.items():
            log("  end %s: %s" % (k, ", ".join("%d=%.1fMB" % (p, r / 1024) for p, r in v)))
        whole = {name: self.window([], snap[name]) for name in snap}
        span = 300.0 if self.args.minutes >= 10 else self.args.minutes * 60 / 2
        self.rtt_windows = []
        nwin = int((self.args.minutes * 60 + span - 1) // span)
        for w in range(nwin):
            row: Dict[str, Any] = {"from_min": round(w * span / 60, 1),
                                   "to_min": round((w + 1) * span / 60, 1)}
            for name, samples in sorted(self.rtt.items()):
                lo, hi = w * span * 1000, (w + 1) * span * 1000
                row[name] = percentiles([ms for t, ms in samples if lo <= t < hi])
            self.rtt_windows.append(row)
            shown = {k: v for k, v in row.items() if "min" not in k}
            log("INVITE->100 minutes %s-%s: %s" % (row["from_min"], row["to_min"], json.dumps(shown)))
        log("LATENCY whole run (since each segment was made): %s" % json.dumps(whole))
        log("SESSIONS LEFT %s" % left)
        unequal = [m["minute"] for m in self.minutes if not m["counts"].get("equal")]
        log("TOTALS %s; minutes whose counts differed: %s; %.1f min" % (
            self.totals, unequal or "none", (time.monotonic() - t0) / 60))
        if any(v != 0 for v in left.values() if isinstance(v, int)) or "error" in left:
            self.failures.append("sessions left at the end: %s" % left)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps({
                "args": vars(self.args), "events": self.events, "minutes": self.minutes,
                "windows": self.windows, "invite_100_windows": self.rtt_windows, "whole": whole,
                "left": left, "totals": self.totals,
                "start_rss": getattr(self, "start_rss", None),
                "end_rss": end_procs, "failures": self.failures}, indent=1))
        for f in self.failures:
            log("FAILURE " + f)
        return 1 if self.failures else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="traffic time (default 30)")
    ap.add_argument("--rate", type=float, default=4.0, help="calls per second at each proxy (default 4)")
    ap.add_argument("--hold-ms", type=int, default=3000, help="mean hold time, ms (0.5x..1.5x); 3000")
    ap.add_argument("--keys", type=int, default=40, help="affinity keys (caller domains), default 40")
    ap.add_argument("--capacity", type=int, default=40, help="conference seats per configured node")
    ap.add_argument("--children", type=int, default=4, help="Kamailio UDP workers per proxy")
    ap.add_argument("--lifetime", type=int, default=120,
                    help="session lifetime (s): a dialog lost with a proxy is forgotten after it")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the figures to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = ap.parse_args(argv)
    if args.json:
        args.json = str(Path(args.json).resolve())
    why = missing_requirements()
    if why:
        print("soak: " + why, file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="approute-soak-"))
    os.chdir(tmp)  # SIPp writes its response-time files (-trace_rtt) in the cwd
    soak = Soak(args, tmp)
    try:
        return soak.run()
    finally:
        soak.close()
        if args.keep:
            log("logs kept in %s" % tmp)
        else:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/work/main/.venv/bin/python
"""Kamailio CPU time per routed call: approute (python_exec) versus dispatcher.

Side by side, with the same SIPp load through the same pool of three SIPp
UAS nodes, alternating A B A B ...:

  A  approute: examples/kamailio/kamailio.cfg as shipped (python_exec
     handlers, app_python3 + approute.kamailio), router app ``default``
     (round_robin, no affinity; the R-URI user ``bench`` is not a listed app)
     or, with --app conference, the ``conference`` app (least_loaded +
     affinity on the From domain, as in examples/kamailio/router.yaml).
     With --cluster, A's router.yaml also has a ``cluster:`` section on a
     redis-server started here (loopback TCP): the cluster placement, whose
     Redis round trips are then in the figure; the redis-server's own CPU
     is reported apart (it is another process, often another host).
  B  dispatcher: bench/kamailio/dispatcher.cfg, the same script with
     ds_select_dst("1", "4") (round robin) / ds_next_dst() instead of the
     Python calls.

For every run a fresh Kamailio (same worker count) is started, warmed up
with a short load, then the CPU time (utime + stime from /proc/<pid>/stat)
of its main process and all its descendants is read before and after the
measured load (SIPp: --calls calls at --rate calls/s, each INVITE / 200 /
ACK / hold / BYE / 200 through the proxy).  The window ends --settle seconds
after the last call, so the tm wait timer has freed the transactions of the
load; the same window is used for both variants.  The schedstat run time
(/proc/<pid>/schedstat, nanoseconds) is recorded as a cross-check.

Everything runs on 127.0.0.1 with free ports and a temporary directory;
every process is started here and stopped by its pid (each in its own
session).  Usage (from the repository root, after scripts/setup.sh):

    .venv/bin/python bench/kamailio/run.py                  # 3 x A + 3 x B, 3000 calls at 200 cps
    .venv/bin/python bench/kamailio/run.py --runs 4 --calls 5000 --rate 250
    .venv/bin/python bench/kamailio/run.py --profile        # A only: time spent in the Python handler
    .venv/bin/python bench/kamailio/run.py --profile cprofile   # A only: cProfile of the handler

The approute package that Kamailio loads is the repository's python/approute
(with the compiled _core of the installed package), so edits to
python/approute/kamailio/ are measured without reinstalling; use
--source installed for the .venv copy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# processes and ports (free ports, processes in their own session stopped by
# pid, a one-shot OPTIONS to see Kamailio is up, redis-server)
from approute._procs import LOCAL, Proc, free_udp_port, sip_options, start_redis

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KAMAILIO_CFG = REPO / "examples" / "kamailio" / "kamailio.cfg"
EXAMPLE_SETTINGS = REPO / "examples" / "kamailio" / "approute-kamailio.yaml"
DISPATCHER_CFG = HERE / "dispatcher.cfg"
UAC_XML = HERE / "uac.xml"
UAS_XML = HERE / "uas.xml"
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> Optional[List[str]]:
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces; fields after ')'
    return text[text.rfind(")") + 2:].split()


def descendants(root: int) -> List[int]:
    """root and every process below it (by ppid)."""
    kids: Dict[int, List[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = _stat_fields(int(d))
        if f is not None:
            kids.setdefault(int(f[1]), []).append(int(d))
    out, stack = [root], [root]
    while stack:
        for c in kids.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def cpu_sample(root: int) -> Dict[int, Tuple[int, int, int]]:
    """pid -> (utime ticks, stime ticks, schedstat run time ns) for root's tree."""
    out = {}
    for pid in descendants(root):
        f = _stat_fields(pid)
        if f is None:
            continue
        # fields[0] is field 3 (state): utime is field 14, stime field 15
        ut, st = int(f[11]), int(f[12])
        try:
            with open("/proc/%d/schedstat" % pid) as fh:
                ns = int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            ns = 0
        out[pid] = (ut, st, ns)
    return out


def host_cpu() -> Tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])                          # guest time is already in user
    return total - idle, total


def cpu_delta(before, after) -> Dict[str, float]:
    """Sums over the processes of the 'after' sample (a process that is new
    counts from zero); seconds."""
    ut = st = ns = 0
    per = []
    for pid, (u, s, n) in after.items():
        b = before.get(pid, (0, 0, 0))
        du, ds, dn = u - b[0], s - b[1], n - b[2]
        ut += du
        st += ds
        ns += dn
        per.append((du + ds, pid))
    gone = sorted(set(before) - set(after))
    per.sort(reverse=True)
    return {"user": ut / CLK_TCK, "sys": st / CLK_TCK, "cpu": (ut + st) / CLK_TCK,
            "sched": ns / 1e9, "procs": len(after), "gone": gone,
            "top": [(pid, t / CLK_TCK) for t, pid in per[:6]]}


# --------------------------------------------------------------------------
# the bench

def approute_overlay(tmp: Path, source: str) -> Tuple[str, str]:
    """Site dirs for the embedded interpreter; returns (site_dirs, package dir).

    source "repo": a package directory made of the repository's
    python/approute/*.py plus the installed compiled _core, so the handler
    measured is the working tree's."""
    import approute  # the installed package (compiled _core)
    inst = Path(approute.__file__).resolve().parent
    site_pkgs = str(inst.parent)
    if source == "installed":
        return site_pkgs, str(inst)
    ov = tmp / "site" / "approute"
    ov.mkdir(parents=True)
    for f in (REPO / "python" / "approute").iterdir():
        if (f.suffix in (".py", ".pyi") or f.name == "py.typed"
                or (f.is_dir() and (f / "__init__.py").exists())):  # subpackages
            os.symlink(f, ov / f.name)
    for f in inst.iterdir():
        if f.name.startswith("_core") and f.suffix == ".so":
            os.symlink(f, ov / f.name)
    return os.pathsep.join([str(ov.parent), site_pkgs]), str(ov)


PROFILE_HANDLER = '''\
"""bench/kamailio --profile: the example handler with its python_exec entry
points wrapped.  mode "timing": the thread's CPU time (time.thread_time) around each call;
mode "cprofile": cProfile.  Each worker dumps its figures every %(every)d
calls (Kamailio workers do not run atexit handlers)."""
import os, site, json, time, cProfile
for _d in os.environ.get("APPROUTE_SITE_DIRS", "").split(os.pathsep):
    if _d:
        site.addsitedir(_d)
import approute.kamailio as _k

_OUT = %(out)r
_MODE = %(mode)r
_prof = None
_n = 0
_t = {}   # entry point -> [calls, seconds]


def _dump():
    base = os.path.join(_OUT, "worker-%%d" %% os.getpid())
    if _MODE == "cprofile":
        _prof.dump_stats(base + ".pstats")
    else:
        with open(base + ".json.tmp", "w") as f:
            json.dump(_t, f)
        os.replace(base + ".json.tmp", base + ".json")


def _wrap(name):
    orig = getattr(_k.Handler, name)
    pc = time.thread_time

    def f(self, *a):
        global _prof, _n
        if _MODE == "cprofile":
            if _prof is None:
                _prof = cProfile.Profile()
            _prof.enable()
            try:
                return orig(self, *a)
            finally:
                _prof.disable()
                _n += 1
                if _n %% %(every)d == 0:
                    _dump()
        t0 = pc()
        try:
            return orig(self, *a)
        finally:
            dt = pc() - t0
            e = _t.setdefault(name, [0, 0.0])
            e[0] += 1
            e[1] += dt
            _n += 1
            if _n %% %(every)d == 0:
                _dump()
    f.__name__ = name
    setattr(_k.Handler, name, f)


for _name in ("do_app_routing", "on_reply", "on_bye", "on_failure", "on_cancel", "on_timer",
              "on_probe_timer", "on_probe_request", "on_probe_reply"):
    if hasattr(_k.Handler, _name):
        _wrap(_name)

mod_init = _k.mod_init
'''


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="approute-kambench-"))
        self.procs: List[Proc] = []
        self.nodes: List[Tuple[str, int]] = []
        self.site_dirs, self.pkg_dir = approute_overlay(self.tmp, args.source)
        self.shm_names: List[str] = []
        self.ds_ping = 0
        self.redis: Optional[Proc] = None
        self.redis_url = ""

    def start_redis(self) -> None:
        """A redis-server on a free loopback port in the temporary directory
        (no persistence), for --cluster; stopped by its pid in close()."""
        try:
            self.redis, self.redis_url = start_redis(self.tmp / "redis")
        except FileNotFoundError as e:
            raise RuntimeError("--cluster needs redis-server: %s" % e) from e
        self.procs.append(self.redis)

    # ----- pool --------------------------------------------------------------

    def start_nodes(self) -> None:
        for i in range(1, 4):
            port = free_udp_port()
            argv = [SIPP, "-sf", str(UAS_XML), "-i", LOCAL, "-p", str(port), "-nostdin",
                    "-trace_err", "-error_file", str(self.tmp / ("node%d.err" % i))]
            self.procs.append(Proc("node%d" % i, argv, self.tmp / ("node%d.out" % i)))
            self.nodes.append(("ast%d" % i, port))
        time.sleep(0.3)
        for p in self.procs:
            if not p.alive():
                raise RuntimeError("SIPp node %s exited; see %s" % (p.name, p.log))

    def write_configs(self) -> None:
        # --capacity N: every node gets N of each app's resource, far above
        # the load (nothing refused), so that each reservation is checked
        # against the capacity (with cluster:, in the deployment).
        cap = (", capacity: {calls: %d, conference: %d}" % (self.args.capacity, self.args.capacity)
               if self.args.capacity else "")
        nodes = "\n".join('  - {id: %s, uri: "sip:%s:%d", pool: media, weight: 10%s}'
                          % (nid, LOCAL, port, cap) for nid, port in self.nodes)
        # examples/kamailio/router.yaml's apps (capacities left out unless --capacity: the load
        # must never be refused).  The bench calls R-URI user "bench" -> the
        # `default` app (round_robin); --app conference: "conf-1" -> conference.
        (self.tmp / "router.yaml").write_text(
            "state: {max_nodes: 64, max_sessions: 65536, max_affinities: 65536}\n"
            "nodes:\n%s\n"
            "apps:\n"
            "  conference:\n"
            "    pool: media\n"
            "    strategy: least_loaded\n"
            "    resource: conference\n"
            "    affinity: {grace: 300}\n"
            "    retry: {codes: [503, 486, 408], max_attempts: 3}\n"
            "    session: {lifetime: 14400}\n"
            "  default:\n"
            "    pool: media\n"
            "    strategy: round_robin\n"
            "    retry: {codes: [503, 408], max_attempts: 3}\n" % nodes
            + ("cluster: {redis: \"%s\", name: kambench, proxy: kam1, timeout_ms: 50%s}\n"
               % (self.redis_url, "" if self.args.reserve_block is None
                  else ", reserve_block: %d" % self.args.reserve_block)
               if self.args.cluster else ""))
        # examples/kamailio/approute-kamailio.yaml with the router file and the
        # segment name replaced (and log_decisions when asked).
        text = EXAMPLE_SETTINGS.read_text()
        text = re.sub(r"(?m)^router: .*$", "router: %s" % (self.tmp / "router.yaml"), text)
        # R-URI user "bench" names no app: it goes to the router's `default`
        # app only through default_app (the example's is null: 404).
        text = re.sub(r"(?m)^default_app: .*$", "default_app: default", text)
        self.settings_text = text
        # approute's active probes (probe: in the example settings, sent when the
        # example kamailio.cfg has the probe timer): the dispatcher variant
        # pings the nodes at the same interval (ds_ping_interval, seconds).
        self.ds_ping = 0
        if "on_probe_timer" in KAMAILIO_CFG.read_text():
            try:
                import yaml
                probe = (yaml.safe_load(text) or {}).get("probe")
            except Exception:
                probe = None
            if isinstance(probe, dict):
                interval = probe.get("interval", 5)
                if isinstance(interval, (int, float)) and interval > 0:
                    self.ds_ping = max(1, int(round(interval)))
        (self.tmp / "dispatcher.list").write_text(
            "".join("1 sip:%s:%d 0 0\n" % (LOCAL, port) for _, port in self.nodes))

    def settings_for(self, shared: str) -> Path:
        text = re.sub(r"(?m)^shared: .*$", "shared: %s" % shared, self.settings_text)
        if self.args.log_decisions != "default":
            text += "\nlog_decisions: %s\n" % ("true" if self.args.log_decisions == "on" else "false")
        p = self.tmp / ("approute-kamailio-%s.yaml" % shared)
        p.write_text(text)
        return p

    # ----- Kamailio ---------------------------------------------------------

    def start_kamailio(self, variant: str, rundir: Path, port: int) -> Tuple[Proc, Optional[str]]:
        a = self.args
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        rundir.mkdir(parents=True)
        common = ["-DD", "-E", "-m", "64", "-M", "8", "-P", str(rundir / "kamailio.pid"),
                  "-Y", str(rundir)]
        shared = None
        if variant == "A":
            shared = "approute-kambench-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
            self.shm_names.append(shared)
            env["APPROUTE_KAMAILIO_CONFIG"] = str(self.settings_for(shared))
            env["APPROUTE_SITE_DIRS"] = self.site_dirs
            handler = REPO / "examples" / "kamailio" / "approute_handler.py"
            if a.profile:
                prof_dir = rundir / "profile"
                prof_dir.mkdir()
                handler = rundir / "profile_handler.py"
                handler.write_text(PROFILE_HANDLER % {"out": str(prof_dir), "every": 100,
                                                      "mode": a.profile})
            argv = [KAMAILIO, "-f", str(KAMAILIO_CFG)] + common + [
                "-A", "APPROUTE_LISTEN=udp:%s:%d" % (LOCAL, port),
                "-A", 'APPROUTE_HANDLER="%s"' % handler,
                "-A", "APPROUTE_CHILDREN=%d" % a.children,
                "-A", "APPROUTE_FR_TIMER=2000", "-A", "APPROUTE_FR_INV_TIMER=30000"]
        else:
            argv = [KAMAILIO, "-f", str(DISPATCHER_CFG)] + common + [
                "-A", "DS_LISTEN=udp:%s:%d" % (LOCAL, port),
                "-A", 'DS_LIST="%s"' % (self.tmp / "dispatcher.list"),
                "-A", "DS_CHILDREN=%d" % a.children,
                "-A", "DS_PING_INTERVAL=%d" % self.ds_ping,
                "-A", "DS_FR_TIMER=2000", "-A", "DS_FR_INV_TIMER=30000"]
        log = rundir / "kamailio.log"
        log.write_text("==== %s\n" % " ".join(argv))
        k = Proc("kamailio-" + variant, argv, log, env=env, cwd=str(rundir))
        self.procs.append(k)
        deadline = time.monotonic() + 20
        while sip_options(port) is None:
            if not k.alive():
                raise RuntimeError("kamailio (%s) exited rc=%s:\n%s" % (
                    variant, k.p.returncode, log.read_text(errors="replace")[-3000:]))
            if time.monotonic() > deadline:
                raise RuntimeError("kamailio (%s) did not answer OPTIONS; see %s" % (variant, log))
            time.sleep(0.2)
        return k, shared

    # ----- load ---------------------------------------------------------------

    def uac(self, rundir: Path, name: str, port: int, calls: int, rate: int) -> Dict:
        a = self.args
        service = "conf-1" if a.app == "conference" else "bench"
        stat = rundir / ("%s-stat.csv" % name)
        argv = [SIPP, "%s:%d" % (LOCAL, port), "-sf", str(UAC_XML), "-s", service,
                "-i", LOCAL, "-p", str(free_udp_port()), "-m", str(calls),
                "-r", str(rate), "-rp", "1000", "-l", str(max(50, rate * 4)),
                "-d", str(a.hold_ms), "-nostdin", "-timeout", "%ds" % a.timeout,
                "-timeout_error", "-trace_err", "-error_file", str(rundir / ("%s.err" % name)),
                "-trace_stat", "-stf", str(stat), "-fd", "3600"]
        t0 = time.monotonic()
        p = Proc("uac-" + name, argv, rundir / ("%s.out" % name))
        self.procs.append(p)
        try:
            p.p.wait(timeout=a.timeout + 15)
        except subprocess.TimeoutExpired:
            pass
        wall = time.monotonic() - t0
        rc = p.stop()
        self.procs.remove(p)
        ok = failed = -1
        if stat.exists():
            rows = [r.split(";") for r in stat.read_text(errors="replace").splitlines() if r.strip()]
            if len(rows) >= 2:
                head, last = rows[0], rows[-1]
                try:
                    ok = int(last[head.index("SuccessfulCall(C)")])
                    failed = int(last[head.index("FailedCall(C)")])
                except (ValueError, IndexError):
                    pass
        return {"rc": rc, "wall": wall, "ok": ok, "failed": failed}

    # ----- one measured run ---------------------------------------------------

    def run_one(self, n: int, variant: str) -> Dict:
        a = self.args
        rundir = self.tmp / ("run%02d-%s" % (n, variant))
        port = free_udp_port()
        k, shared = self.start_kamailio(variant, rundir, port)
        try:
            if a.warmup:
                w = self.uac(rundir, "warmup", port, a.warmup, min(a.rate, 100))
                # A call or two lost to SIPp's retransmission timing on a
                # busy machine (flagged in measured runs too) is no reason to
                # give up; most of the warm-up failing is.
                if w["ok"] < a.warmup * 0.98:
                    raise RuntimeError("warm-up: %s of %d calls succeeded (%s); see %s"
                                       % (w["ok"], a.warmup, w, rundir))
            time.sleep(a.settle)
            before = cpu_sample(k.pid)
            r0 = cpu_sample(self.redis.pid) if self.redis else {}
            h0 = host_cpu()
            load = self.uac(rundir, "load", port, a.calls, a.rate)
            time.sleep(a.settle)
            after = cpu_sample(k.pid)
            r1 = cpu_sample(self.redis.pid) if self.redis else {}
            h1 = host_cpu()
            time.sleep(a.idle)
            idle_end = cpu_sample(k.pid)
            if not k.alive():
                raise RuntimeError("kamailio (%s) died during the run; see %s" % (variant, rundir))
            sessions = None
            if shared is not None:
                import approute
                try:
                    sessions = int(approute.Router.attach(shared).stats()["sessions"])
                except Exception as e:  # pragma: no cover - diagnostics only
                    sessions = repr(e)
        finally:
            k.stop()
            self.procs.remove(k)
            if shared is not None:
                self._unlink(shared)
        d = cpu_delta(before, after)
        idle = cpu_delta(after, idle_end)
        # share of the machine's CPUs busy during the window, and the part of
        # it that was not this Kamailio (SIPp, other users of the machine)
        hb, ht = h1[0] - h0[0], h1[1] - h0[1]
        host_busy = 100.0 * hb / ht if ht else 0.0
        other_busy = max(0.0, 100.0 * (hb - d["cpu"] * CLK_TCK) / ht) if ht else 0.0
        calls = load["ok"] if load["ok"] > 0 else a.calls
        res = {
            "run": n, "variant": variant, "calls": a.calls, "ok": load["ok"],
            "failed": load["failed"], "sipp_rc": load["rc"], "wall": load["wall"],
            "window": load["wall"] + a.settle,
            "user": d["user"], "sys": d["sys"], "cpu": d["cpu"], "sched": d["sched"],
            "us_per_call": d["cpu"] / calls * 1e6, "sched_us_per_call": d["sched"] / calls * 1e6,
            "procs": d["procs"], "gone": d["gone"], "top": d["top"],
            "idle_ms_per_s": idle["cpu"] / a.idle * 1e3 if a.idle else None,
            "host_busy": host_busy, "other_busy": other_busy,
            "sessions_left": sessions, "dir": str(rundir),
            "redis_us_per_call": cpu_delta(r0, r1)["cpu"] / calls * 1e6 if self.redis else None,
        }
        if res["ok"] != a.calls or res["failed"] not in (0, -1):
            res["warning"] = "only %s of %d calls succeeded (%s failed)" % (
                res["ok"], a.calls, res["failed"])
        return res

    def _unlink(self, shared: str) -> None:
        try:
            import approute
            approute.Router.unlink(shared)
        except Exception:
            pass
        if shared in self.shm_names:
            self.shm_names.remove(shared)

    def close(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop(timeout=5)
            except Exception:
                pass
        self.procs.clear()
        for s in list(self.shm_names):
            self._unlink(s)
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# report

def machine() -> Dict[str, str]:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0].strip()
        except Exception:
            return "?"
    osname = "?"
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    git = first_line(["git", "-C", str(REPO), "log", "-1", "--format=%h %cI"])
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--",
         "examples/kamailio/kamailio.cfg", "examples/kamailio/approute-kamailio.yaml",
         "examples/kamailio/approute_handler.py", "python/approute"],
        capture_output=True, text=True).stdout.split()
    dirty = sorted({d for d in dirty if "/" in d})
    return {"cpu": cpu, "cores": str(os.cpu_count()), "os": osname,
            "git": git + (" + uncommitted changes in " + ", ".join(dirty) if dirty else ""),
            "kernel": platform.release(), "kamailio": first_line([KAMAILIO, "-v"]),
            "sipp": first_line([SIPP, "-v"]).replace("SIPp ", ""),
            "python": platform.python_version(),
            "loadavg": open("/proc/loadavg").read().split()[0:3].__str__()}


def report(results: List[Dict], args, mach: Dict[str, str], command: str, ds_ping: int = 0) -> str:
    L = []
    L.append("machine: %s, %s cores, %s, kernel %s"
             % (mach["cpu"], mach["cores"], mach["os"], mach["kernel"]))
    L.append("         %s, SIPp %s, Python %s; loadavg at start %s" % (
        mach["kamailio"], mach["sipp"], mach["python"], mach["loadavg"]))
    L.append("tree: %s" % mach["git"])
    L.append("command: %s" % command)
    L.append("load: %d calls per run at %d cps, hold %d ms, %d warm-up calls, %d workers, "
             "window = load + %.0f s settle; A = approute (kamailio.cfg, app %s%s), "
             "B = dispatcher (dispatcher.cfg, ds_select_dst(\"1\",\"4\"))%s" % (
                 args.calls, args.rate, args.hold_ms, args.warmup, args.children, args.settle,
                 "conference: least_loaded + affinity" if args.app == "conference"
                 else "default: round_robin, no affinity",
                 "" if args.log_decisions == "default" else ", log_decisions " + args.log_decisions,
                 "; A with cluster: (redis-server on loopback TCP, its CPU apart)" if args.cluster else "")
             + ("; both probe the nodes with OPTIONS every %d s" % ds_ping if ds_ping else ""))
    L.append("")
    L.append("| run | variant | calls ok | load s | CPU s (user+sys) | user s | sys s | CPU us/call "
             "| schedstat us/call | idle ms/s | host busy % | other % |")
    L.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        L.append("| %d | %s | %s | %.1f | %.2f | %.2f | %.2f | %.0f | %.0f | %s | %.0f | %.0f |" % (
            r["run"], "A approute" if r["variant"] == "A" else "B dispatcher",
            r["ok"], r["wall"], r["cpu"], r["user"], r["sys"], r["us_per_call"],
            r["sched_us_per_call"],
            "%.1f" % r["idle_ms_per_s"] if r["idle_ms_per_s"] is not None else "-",
            r["host_busy"], r["other_busy"]))
    L.append("")
    L.append("host busy %: all CPUs of the machine during the window; other %: the part that was "
             "not this Kamailio (SIPp, other users)")
    L.append("")
    A = [r for r in results if r["variant"] == "A"]
    B = [r for r in results if r["variant"] == "B"]
    if A and B:
        ma = statistics.median(r["us_per_call"] for r in A)
        mb = statistics.median(r["us_per_call"] for r in B)
        sa = statistics.median(r["sched_us_per_call"] for r in A)
        sb = statistics.median(r["sched_us_per_call"] for r in B)
        L.append("median CPU per call: A approute %.0f us, B dispatcher %.0f us -> "
                 "ratio A/B %.2fx (target <= 1.25x)" % (ma, mb, ma / mb))
        L.append("schedstat cross-check: A %.0f us, B %.0f us -> %.2fx" % (sa, sb, sa / sb))
        pairs = [a["us_per_call"] / b["us_per_call"] for a, b in zip(A, B)]
        L.append("per-pair ratios A/B: %s (median %.2fx); extra CPU of approute per call: %.0f us"
                 % (", ".join("%.2f" % x for x in pairs), statistics.median(pairs), ma - mb))
    elif A:
        L.append("median CPU per call: A approute %.0f us" % statistics.median(r["us_per_call"] for r in A))
    if A and args.cluster:
        L.append("redis-server CPU per call during A's windows (not in A's figure): median %.0f us (%s)" % (
            statistics.median(r["redis_us_per_call"] for r in A),
            ", ".join("%.0f" % r["redis_us_per_call"] for r in A)))
    warnings = [r for r in results if r.get("warning") or r.get("gone")
                or r.get("sessions_left") not in (None, 0)]
    for r in warnings:
        L.append("WARNING run %d %s: %s gone=%s sessions_left=%s (%s)" % (
            r["run"], r["variant"], r.get("warning", ""), r["gone"], r["sessions_left"], r["dir"]))
    return "\n".join(L)


def profile_report(results: List[Dict], mode: str, top: int = 30) -> str:
    dirs = [Path(r["dir"], "profile") for r in results]
    if mode == "timing":
        tot: Dict[str, List[float]] = {}
        n = 0
        for d in dirs:
            for f in sorted(d.glob("worker-*.json")):
                n += 1
                for name, (calls, secs) in json.loads(f.read_text()).items():
                    e = tot.setdefault(name, [0, 0.0])
                    e[0] += calls
                    e[1] += secs
        if not tot:
            return "(no profile data)"
        L = ["CPU time inside the Python handler (time.thread_time around its python_exec entry "
             "points; %d worker dumps, warm-up included, up to each worker's last dump):" % n,
             "| entry point | calls | CPU us per call of it |",
             "| --- | ---: | ---: |"]
        whole = 0.0  # the entry points a call goes through (not timers, probes)
        for name, (c, secs) in sorted(tot.items(), key=lambda kv: -kv[1][1]):
            L.append("| %s | %d | %.1f |" % (name, c, secs / c * 1e6))
            if name in ("do_app_routing", "on_reply", "on_bye", "on_failure", "on_cancel"):
                whole += secs
        routed = sum(c for name, (c, _) in tot.items() if name == "do_app_routing") or 1
        L.append("| per routed call (routing, reply, BYE, failure, CANCEL) | %d | %.1f |"
                 % (routed, whole / routed * 1e6))
        return "\n".join(L)
    import io
    import pstats
    files = []
    for d in dirs:
        files += sorted(d.glob("worker-*.pstats"))
    if not files:
        return "(no profile data)"
    st = pstats.Stats(str(files[0]), stream=io.StringIO())
    for f in files[1:]:
        st.add(str(f))
    out = io.StringIO()
    st.stream = out
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return "cProfile of the handler (%d worker dumps; calls up to each worker's last dump):\n%s" % (
        len(files), out.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3,
                    help="runs per variant, alternating A B A B ... (default 3)")
    ap.add_argument("--calls", type=int, default=3000, help="calls per measured run (default 3000)")
    ap.add_argument("--rate", type=int, default=200, help="calls per second (default 200)")
    ap.add_argument("--hold-ms", type=int, default=100, help="hold time before BYE, ms (default 100)")
    ap.add_argument("--warmup", type=int, default=200,
                    help="warm-up calls before each measurement (default 200)")
    ap.add_argument("--children", type=int, default=4, help="Kamailio UDP workers, both variants (default 4)")
    ap.add_argument("--settle", type=float, default=6.0,
                    help="seconds before and after the load inside each run (default 6: tm's 5 s wait timer)")
    ap.add_argument("--idle", type=float, default=2.0,
                    help="seconds of idle CPU measured after each run (default 2)")
    ap.add_argument("--app", choices=("default", "conference"), default="default",
                    help="approute app: default = round_robin, no affinity (default); "
                         "conference = least_loaded + affinity")
    ap.add_argument("--log-decisions", choices=("default", "on", "off"), default="default",
                    help="approute handler's log_decisions (default: as in the example settings, i.e. off)")
    ap.add_argument("--source", choices=("repo", "installed"), default="repo",
                    help="approute Python files Kamailio loads: the repository's (default) or "
                         "the installed ones")
    ap.add_argument("--only", choices=("A", "B"), help="run only one variant")
    ap.add_argument("--capacity", type=int, default=0,
                    help="A's nodes get this capacity (calls and conference; default none: no check)")
    ap.add_argument("--cluster", action="store_true",
                    help="A with cluster: on a redis-server started here (the cluster placement)")
    ap.add_argument("--reserve-block", type=int, default=None,
                    help="with --cluster: cluster.reserve_block (reservation blocks; default: the "
                         "configuration's default)")
    ap.add_argument("--profile", nargs="?", const="timing", choices=("timing", "cprofile"),
                    help="A only: time the handler's python_exec entry points (timing, default) "
                         "or run them under cProfile (cprofile); prints the merged figures")
    ap.add_argument("--timeout", type=int, default=120, help="SIPp global timeout per load, s (default 120)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--json", help="also write the per-run results to this JSON file")
    args = ap.parse_args(argv)
    if args.profile:
        args.only = "A"
    for exe in (KAMAILIO, SIPP):
        if not os.path.exists(exe):
            print("missing %s (run scripts/setup.sh)" % exe, file=sys.stderr)
            return 2
    command = " ".join(["bench/kamailio/run.py"] + (sys.argv[1:] if argv is None else list(argv)))
    mach = machine()
    bench = Bench(args)
    results: List[Dict] = []
    interrupted = False

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        bench.start_nodes()
        if args.cluster:
            bench.start_redis()
        bench.write_configs()
        order = [args.only] if args.only else ["A", "B"]
        n = 0
        for _ in range(args.runs):
            for v in order:
                n += 1
                r = bench.run_one(n, v)
                results.append(r)
                print("run %2d %s: %5s/%d calls ok in %5.1f s, CPU %.2f s (user %.2f sys %.2f) "
                      "= %4.0f us/call (schedstat %4.0f us/call), idle %.1f ms/s, host busy %.0f%%%s" % (
                          n, "A approute  " if v == "A" else "B dispatcher", r["ok"], r["calls"],
                          r["wall"], r["cpu"], r["user"], r["sys"], r["us_per_call"],
                          r["sched_us_per_call"], r["idle_ms_per_s"] or 0, r["host_busy"],
                          ("  redis %.0f us/call" % r["redis_us_per_call"]
                           if r.get("redis_us_per_call") is not None and v == "A" else "")
                          + ("  WARNING " + r["warning"] if r.get("warning") else "")), flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted", file=sys.stderr)
    finally:
        prof = profile_report(results, args.profile) if args.profile and results else None
        bench.close()
        if args.keep:
            print("kept %s" % bench.tmp)
    if results:
        print()
        print(report(results, args, mach, command, bench.ds_ping))
        if prof:
            print()
            print(prof)
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": mach, "command": command,
                                                   "args": vars(args), "runs": results}, indent=1))
    return 1 if interrupted or any(r.get("warning") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

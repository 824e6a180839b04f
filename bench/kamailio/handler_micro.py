#!/work/main/.venv/bin/python
"""The approute Kamailio handler's own Python cost per call, in a hot loop.

A minimal fake KSR (PV reads are dict lookups, logging does nothing) and a
private router with three nodes; each call is do_app_routing + on_reply +
on_bye, as in run.py's load (R-URI user "bench": app `default`,
round_robin, the example settings' rules).  Inside Kamailio the same
work costs 10-15x more (see docs/BENCHMARKS.md, "Kamailio CPU per call"):
use this to compare versions of python/approute/kamailio/, not to predict
Kamailio's CPU.

    .venv/bin/python bench/kamailio/handler_micro.py [--calls N] [--pkg DIR]

--pkg DIR: a directory holding the approute package to measure (default:
the repository's python/approute with the installed compiled _core).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def overlay() -> str:
    """A temporary package: the repository's .py files + the installed _core."""
    import importlib.util
    spec = importlib.util.find_spec("approute")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("approute is not installed (run scripts/setup.sh)")
    inst = Path(list(spec.submodule_search_locations)[0])
    d = Path(tempfile.mkdtemp(prefix="approute-micro-"))
    atexit.register(shutil.rmtree, str(d), True)
    (d / "approute").mkdir()
    for f in (REPO / "python" / "approute").iterdir():
        if f.suffix in (".py", ".pyi") or (f.is_dir() and (f / "__init__.py").exists()):
            os.symlink(f, d / "approute" / f.name)
    for f in inst.iterdir():
        if f.name.startswith("_core") and f.suffix == ".so":
            os.symlink(f, d / "approute" / f.name)
    return str(d)


class _PV:
    def __init__(self, v):
        self.v = v

    def get(self, name):
        return self.v.get(name)

    def sets(self, name, value):
        self.v[name] = value

    seti = sets


class _Hdr:
    def is_present(self, name):
        return -1

    def remove(self, name):
        return 1

    def append(self, text):
        return 1


class FakeKSR:
    def __init__(self):
        self.v = {"$ci": "x", "$fU": "bench", "$fd": "example.com", "$fu": "sip:bench@example.com",
                  "$tU": "bench", "$td": "service.example.com",
                  "$tu": "sip:bench@service.example.com", "$rU": "bench",
                  "$rd": "service.example.com", "$ru": "sip:bench@service.example.com",
                  "$si": "127.0.0.1", "$rm": "INVITE", "$rs": "200",
                  "$hdr(X-Exec-App-Data)": "1000"}
        self.pv = _PV(self.v)
        self.hdr = _Hdr()

    def setdsturi(self, uri):
        return 1

    def info(self, text):
        pass

    err = warn = dbg = info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--pkg", help="directory holding the approute package to measure")
    args = ap.parse_args()
    pkg = args.pkg or overlay()
    sys.path.insert(0, pkg)
    import approute.kamailio as kam
    settings = kam.Settings({
        "router": {"nodes": [{"id": "ast%d" % i, "uri": "sip:127.0.0.1:%d" % (5080 + i),
                              "pool": "media"} for i in (1, 2, 3)],
                   "apps": {"default": {"pool": "media", "strategy": "round_robin",
                                        "retry": {"codes": [503, 408], "max_attempts": 3}}}},
        "shared": None,
        "default_app": "default",  # "bench" is not an app: routed as the fallback
        "rules": [{"ruri_user": "^conf-(?P<room>[0-9]+)$", "app": "conference", "data": "{room}"},
                  {"ruri_user": "^q-(?P<queue>[a-z0-9]+)$", "app": "queue", "data": "{queue}"}],
        "apps": {"conference": {"key": "{from_domain}", "exec_app": "Conference"},
                 "queue": {"key": "{hdr:X-Tenant}/{app_data}", "exec_app": "Queue"}},
    })
    ksr = FakeKSR()
    h = kam.create_handler(settings, ksr=ksr)
    pc = time.perf_counter

    def run(n, tag):
        t = [0.0, 0.0, 0.0]
        for i in range(n):
            ksr.v["$ci"] = "%s-%d" % (tag, i)
            a = pc()
            if h.do_app_routing(None) != kam.OK:
                raise SystemExit("do_app_routing failed: %s" % (ksr.v.get("$avp(approute_reason)"),))
            b = pc()
            h.on_reply(None)
            c = pc()
            h.on_bye(None)
            d = pc()
            t[0] += b - a
            t[1] += c - b
            t[2] += d - c
        return [x / n * 1e6 for x in t]

    run(2000, "warm")
    best = min((run(args.calls, "r%d" % k) for k in range(3)), key=sum)
    r = h.router
    a = pc()
    for i in range(args.calls):
        cid = "core-%d" % i
        r.route("bench", call_id=cid, attrs={"from": "sip:bench@example.com"})
        r.confirm(cid)
        r.end(cid)
    core = (pc() - a) / args.calls * 1e6
    print("%s\nus per call (best of 3 x %d): do_app_routing %.1f, on_reply %.1f, on_bye %.1f, "
          "total %.1f; router.route + confirm + end alone %.1f"
          % (kam.__file__, args.calls, best[0], best[1], best[2], sum(best), core))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Route+end from Python with the cluster placement (Redis on loopback)
against this host's region alone, side by side in one run.

Starts a redis-server on a free loopback port in a temporary directory (no
persistence) and stops it by its pid. For each case, the same YAML with and
without ``cluster:`` (a private region each), rounds alternated:

  plain      no affinity, nodes without a capacity (nothing to check)
  plain-cap  no affinity, nodes with a capacity (far above the load) for
             the app's resource: the reservation is checked over the
             deployment
  conf-known affinity, a key seen before (100 keys over the calls)
  conf-new   affinity, a new key on every call

Each call is ``route()`` then ``end()``, timed together with
time.perf_counter_ns. Prints p50/p99 in microseconds, the Redis round trips
per call (router.cluster()["round_trips"]) and the round trip's own p50/p99
as the router measured it over the run (router.cluster() "rtt_p50_us" /
"rtt_p99_us": power-of-two bucket bounds), so that "cluster p99 within two
round trips of local" can be read off one run.

    .venv/bin/python bench/cluster_python.py                 # 5000 calls x 3 rounds
    .venv/bin/python bench/cluster_python.py --calls 20000 --rounds 5
    .venv/bin/python bench/cluster_python.py --reserve-block 16   # reservation blocks
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import approute
from approute._procs import start_redis

NODES = "".join('  - {id: ast%d, uri: "sip:10.0.0.%d:5060", capacity: {seats: 1000000}}\n' % (i, i)
                for i in range(1, 5))
APPS = ("apps:\n"
        "  conf: {strategy: random, resource: conference, affinity: {grace: 30}}\n"
        "  plain: {strategy: random, resource: conference}\n"
        "  plaincap: {strategy: random, resource: seats}\n")





def measure(router, app: str, calls: int, new_keys: bool, tag: str) -> List[float]:
    out = []
    route, end, ns = router.route, router.end, time.perf_counter_ns
    for i in range(calls):
        cid = "%s-%d" % (tag, i)
        key = "%s-k%d" % (tag, i) if new_keys else "k%d" % (i % 100)
        t0 = ns()
        d = route(app, call_id=cid, key=key)
        end(cid)
        out.append((ns() - t0) / 1000.0)
        if not d.ok:
            raise RuntimeError("not routed: %r" % (d,))
    return out


def q(v: List[float], p: float) -> float:
    s = sorted(v)
    return s[int(p * (len(s) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=5000, help="calls per case per round (default 5000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, cluster and local alternated (default 3)")
    ap.add_argument("--timeout-ms", type=int, default=50, help="cluster.timeout_ms (default 50)")
    ap.add_argument("--reserve-block", type=int, default=1, help="cluster.reserve_block (default 1: off)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="approute-clbench-"))
    try:
        proc, url = start_redis(tmp)
    except (FileNotFoundError, RuntimeError) as e:
        sys.exit(str(e))
    try:
        head = "cluster: {redis: \"%s\", name: bench, proxy: py1, timeout_ms: %d, reserve_block: %d}\n" % (
            url, a.timeout_ms, a.reserve_block)
        cluster_yaml = head + "nodes:\n%s%s" % (NODES, APPS)
        local_yaml = "nodes:\n%s%s" % (NODES, APPS)
        cl = approute.Router.from_yaml(cluster_yaml)
        lo = approute.Router.from_yaml(local_yaml)
        cases = [("plain", "plain", False), ("plain-cap", "plaincap", False), ("conf-known", "conf", False),
                 ("conf-new", "conf", True)]
        res: Dict[str, Dict[str, List[float]]] = {c[0]: {"cluster": [], "local": []} for c in cases}
        trips: Dict[str, List[float]] = {c[0]: [] for c in cases}
        for r in range(a.rounds):
            for name, app, new in cases:
                t0 = cl.cluster()["round_trips"]
                res[name]["cluster"] += measure(cl, app, a.calls, new, "c%d%s" % (r, name))
                trips[name].append((cl.cluster()["round_trips"] - t0) / a.calls)
                res[name]["local"] += measure(lo, app, a.calls, new, "l%d%s" % (r, name))
        c = cl.cluster()
        print("route+end from Python, %d calls x %d rounds per case, Redis %s, degraded %d, failures %d; "
              "a round trip p50 <= %d us, p99 <= %d us" % (a.calls, a.rounds, url, c["degraded_placements"],
                                                         c["failures"], c["rtt_p50_us"], c["rtt_p99_us"]))
        print("| case | cluster p50 us | cluster p99 us | round trips/call | local p50 us | local p99 us |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, _, _ in cases:
            cv, lv = res[name]["cluster"], res[name]["local"]
            print("| %s | %.0f | %.0f | %.1f | %.1f | %.1f |" % (
                name, q(cv, 0.5), q(cv, 0.99), statistics.mean(trips[name]), q(lv, 0.5), q(lv, 0.99)))
    finally:
        proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

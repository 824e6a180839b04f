"""Distribution quality of every built-in strategy on a heterogeneous pool.

Ten nodes with weights 1..4 and conference capacity 40 x weight; calls arrive
as a Poisson stream (virtual time, the router's test clock), last an
exponential time, and carry a tenant key drawn from a Zipf law (a few tenants
bring most calls). Once a second of virtual time the script samples each
node's utilisation (sessions / capacity) and reports, per strategy:

  max/mean   the mean over samples of (max utilisation / mean utilisation)
  worst      the worst sample of that ratio
  rejected   calls no node could take (all candidates full)

For consistent_bounded the bound applies to session counts when a call is
placed (departures afterwards can leave a node above a later, lower bound, as
in Mirrokni et al.): the script checks, at every placement, that the chosen
node's sessions <= ceil((1 + epsilon) x total / n) over the nodes that could
take the call, and reports the largest chosen/mean ratio seen at placement.

    .venv/bin/python bench/distribution.py [--seconds 600] [--rate 20] [--seed 1]
"""
from __future__ import annotations

import argparse
import heapq
import math
import random

import approute

WEIGHTS = [1, 1, 2, 2, 2, 3, 3, 4, 4, 4]
STRATEGIES = [
    "round_robin", "weighted_round_robin", "random", "weighted_random", "{name: hash, by: key}",
    "{name: least_loaded, mode: relative}", "least_loaded", "p2c",
    "{name: consistent_bounded, by: key, epsilon: 0.25}", "utilization", "latency",
]


def config(strategy: str) -> str:
    lines = ["state: {max_sessions: 20000, max_affinities: 1000}", "nodes:"]
    for i, w in enumerate(WEIGHTS):
        lines.append(f'  - {{id: n{i}, uri: "sip:10.0.0.{i + 1}", pool: media, weight: {w}, '
                     f'capacity: {{conference: {40 * w}}}}}')
    lines += ["apps:", f"  conference: {{pool: media, resource: conference, strategy: {strategy}}}"]
    return "\n".join(lines) + "\n"


def zipf_keys(n: int, s: float, rng: random.Random):
    weights = [1.0 / (k ** s) for k in range(1, n + 1)]
    total = sum(weights)
    cum, acc = [], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    def draw() -> str:
        u = rng.random()
        lo, hi = 0, n - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if cum[mid] < u:
                lo = mid + 1
            else:
                hi = mid
        return f"tenant{lo}"
    return draw


def simulate(strategy: str, seconds: int, rate: float, mean_duration: float, seed: int) -> dict:
    rng = random.Random(seed)
    draw_key = zipf_keys(500, 1.1, rng)
    r = approute.Router.from_yaml(config(strategy))
    t0 = 1_800_000_000.0
    r._set_time(t0)
    # Nodes report a CPU figure that follows their utilisation, for `utilization`;
    # and latencies that grow with it, for `latency`.
    ends: list[tuple[float, str, str]] = []
    now, next_call, calls, rejected = 0.0, 0.0, 0, 0
    ratios, worst, bound_ok, placed_ratio = [], 0.0, True, 0.0
    cap = {f"n{i}": 40 * w for i, w in enumerate(WEIGHTS)}
    for second in range(1, seconds + 1):
        while next_call < second:
            now = next_call
            r._set_time(t0 + now)
            while ends and ends[0][0] <= now:
                _, call_id, node = heapq.heappop(ends)
                r.end(call_id)
            r._set_time(t0 + now)
            call_id = f"c{calls}"
            calls += 1
            d = r.route("conference", call_id=call_id, key=draw_key())
            if d.ok and "consistent_bounded" in strategy:
                counts = {n.id: n.sessions.get("conference", 0) for n in r.nodes()}
                open_nodes = [n for n in counts if n == d.node_id or counts[n] < cap[n]]
                total = sum(counts[n] for n in open_nodes)
                bound = math.ceil(1.25 * total / len(open_nodes))
                bound_ok = bound_ok and counts[d.node_id] <= bound
                if total >= 10 * len(open_nodes):  # ratios of tiny counts say nothing
                    placed_ratio = max(placed_ratio, counts[d.node_id] / (total / len(open_nodes)))
            if d.ok:
                heapq.heappush(ends, (now + rng.expovariate(1.0 / mean_duration), call_id, d.node_id))
            else:
                rejected += 1
            next_call = now + rng.expovariate(rate)
        sessions = {n.id: n.sessions.get("conference", 0) for n in r.nodes()}
        util = [sessions[n] / cap[n] for n in sessions]
        mean = sum(util) / len(util)
        for n, s in sessions.items():
            u = s / cap[n]
            r.report_load(n, cpu=min(1.0, u))
            r.report_result(n, 200, latency_ms=20 + 200 * u)
        if mean > 0 and second > 60:  # skip the warm-up minute
            ratio = max(util) / mean
            ratios.append(ratio)
            worst = max(worst, ratio)
    return {"strategy": strategy, "max_mean": sum(ratios) / max(1, len(ratios)), "worst": worst,
            "calls": calls, "rejected": rejected, "bound_ok": bound_ok,
            "placed_ratio": placed_ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--rate", type=float, default=20.0, help="calls per second")
    ap.add_argument("--duration", type=float, default=45.0, help="mean call duration, seconds")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"10 nodes, weights {WEIGHTS}, capacity 40 x weight; {args.rate}/s for {args.seconds} s, "
          f"mean duration {args.duration} s, Zipf(1.1) keys over 500 tenants, seed {args.seed}")
    print(f"{'strategy':<50} {'max/mean':>9} {'worst':>7} {'calls':>7} {'rejected':>9}")
    for s in STRATEGIES:
        res = simulate(s, args.seconds, args.rate, args.duration, args.seed)
        extra = "" if "consistent_bounded" not in s else (
            f"  at placement: max chosen/mean {res['placed_ratio']:.3f}, bound (1.25) "
            + ("held at every placement" if res["bound_ok"] else "BROKEN"))
        print(f"{s:<50} {res['max_mean']:>9.3f} {res['worst']:>7.3f} {res['calls']:>7} "
              f"{res['rejected']:>9}{extra}")


if __name__ == "__main__":
    main()

"""route()+end() per call through approute vs. a plain-Python router, side by side.

The plain-Python baseline implements the same policy the approute run uses
(affinity dict by app+key with a live-session count, round robin over the
pool, a session dict), but per process: it shares nothing. approute runs
with its state in a shared-memory segment, as under Kamailio.

    .venv/bin/python bench/bench_python.py [--calls 200000] [--nodes 64] [--rounds 5] \
        [--in-flight 100] [--clock cpu|wall]

Two runs: each call routed then ended at once, and `--in-flight` calls kept
live across calls (call i ends when call i + N is routed). Prints the median
per-call time of each router, the ratio approute / plain and the per-round
ratios (rounds alternate between the two, so machine noise hits both), and
the ratio of the two fastest rounds (noise only ever adds time).

`--clock cpu` (the default) times each round by the process's CPU time, so
time spent waiting for a CPU on a busy machine is not counted; `--clock
wall` uses the wall clock.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import approute


class PlainRouter:
    """The baseline: dicts and a counter, no sharing, no capacity checks."""

    def __init__(self, nodes: list[tuple[str, str]]) -> None:
        self.nodes = nodes
        self.cursor = 0
        self.affinity: dict[tuple[str, str], list] = {}  # (app, key) -> [node index, live sessions]
        self.sessions: dict[str, tuple[str, str, int]] = {}

    def route(self, app: str, call_id: str, key: str | None) -> tuple[str, str]:
        if key is not None:
            entry = self.affinity.get((app, key))
            if entry is not None:
                entry[1] += 1
                self.sessions[call_id] = (app, key, entry[0])
                return self.nodes[entry[0]]
        index = self.cursor % len(self.nodes)
        self.cursor += 1
        if key is not None:
            self.affinity[(app, key)] = [index, 1]
        self.sessions[call_id] = (app, key, index)
        return self.nodes[index]

    def end(self, call_id: str) -> None:
        app, key, index = self.sessions.pop(call_id)
        if key is not None:
            entry = self.affinity.get((app, key))
            if entry is not None and entry[0] == index:
                entry[1] -= 1


def config(nodes: int) -> str:
    lines = ["state: {max_nodes: 1100, max_sessions: 8192, max_affinities: 8192}", "nodes:"]
    for i in range(nodes):
        lines.append(f'  - {{id: n{i}, uri: "sip:10.0.{i // 250}.{i % 250 + 1}:5060", pool: media}}')
    lines += ["apps:", "  conference: {pool: media, strategy: round_robin, affinity: {grace: 300}}"]
    return "\n".join(lines) + "\n"


CLOCK: Callable[[], float] = time.process_time


def run_plain(plain: PlainRouter, call_ids, keys, in_flight: int = 0) -> float:
    start = CLOCK()
    if in_flight == 0:
        for call_id, key in zip(call_ids, keys):
            plain.route("conference", call_id, key)
            plain.end(call_id)
    else:  # `in_flight` calls stay up: call i ends when call i + in_flight starts
        for i, (call_id, key) in enumerate(zip(call_ids, keys)):
            plain.route("conference", call_id, key)
            if i >= in_flight:
                plain.end(call_ids[i - in_flight])
    elapsed = CLOCK() - start
    for call_id in call_ids[len(call_ids) - in_flight:] if in_flight else ():
        plain.end(call_id)
    return elapsed / len(call_ids)


def run_approute(router: approute.Router, call_ids, keys, in_flight: int = 0) -> float:
    start = CLOCK()
    if in_flight == 0:
        for call_id, key in zip(call_ids, keys):
            router.route("conference", call_id=call_id, key=key)
            router.end(call_id)
    else:
        for i, (call_id, key) in enumerate(zip(call_ids, keys)):
            router.route("conference", call_id=call_id, key=key)
            if i >= in_flight:
                router.end(call_ids[i - in_flight])
    elapsed = CLOCK() - start
    for call_id in call_ids[len(call_ids) - in_flight:] if in_flight else ():
        router.end(call_id)
    return elapsed / len(call_ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--keys", type=int, default=1000, help="distinct affinity keys (domains)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--in-flight", type=int, default=100,
                    help="live calls kept across calls in the second run")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: the process's CPU time (default); wall: the wall clock")
    ap.add_argument("--ir", choices=("plain", "approute"),
                    help="for bench/python_ir.sh: one router, 2,000 warm-up calls, then --calls calls "
                         "(--in-flight of them kept live) unless --ir-skip, and no output")
    ap.add_argument("--ir-skip", action="store_true", help="with --ir: everything but the measured calls")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    segment = f"approute-bench-py-{os.getpid()}"
    router = approute.Router.from_yaml(config(args.nodes), shared=segment)
    approute.Router.unlink(segment)  # the mapping stays; nothing is left behind
    plain = PlainRouter([(f"n{i}", f"sip:10.0.0.{i + 1}:5060") for i in range(args.nodes)])

    call_ids = [f"call-{i}@bench" for i in range(args.calls)]
    keys = [f"tenant{i % args.keys}.example.com" for i in range(args.calls)]

    if args.ir:  # under callgrind: the same setup with and without the loop, so the difference is the loop
        run = run_plain if args.ir == "plain" else run_approute
        target = plain if args.ir == "plain" else router
        run(target, [f"warm-{i}@bench" for i in range(2000)], keys[:2000], args.in_flight)  # type: ignore[arg-type]
        if not args.ir_skip:
            run(target, call_ids, keys, args.in_flight)  # type: ignore[arg-type]
        return

    print(f"calls per round: {args.calls}, nodes: {args.nodes}, keys: {args.keys}, rounds: {args.rounds}, "
          f"clock: {args.clock}, approute from {os.path.dirname(approute.__file__)}")
    for in_flight in (0, args.in_flight):
        ours, theirs = [], []
        for _ in range(args.rounds):  # alternate, so drift hits both alike
            theirs.append(run_plain(plain, call_ids, keys, in_flight))
            ours.append(run_approute(router, call_ids, keys, in_flight))
        a, p = statistics.median(ours), statistics.median(theirs)
        what = "route then end" if in_flight == 0 else f"{in_flight} calls in flight"
        print(f"[{what}]")
        print(f"  approute (shared segment) route+end: {a * 1e6:8.3f} us/call  (rounds: "
              + ", ".join(f"{x * 1e6:.3f}" for x in ours) + ")")
        print(f"  plain Python (per process) route+end: {p * 1e6:8.3f} us/call  (rounds: "
              + ", ".join(f"{x * 1e6:.3f}" for x in theirs) + ")")
        ratios = [x / y for x, y in zip(ours, theirs)]
        print(f"  ratio approute / plain: {a / p:.2f}x  (per-round ratios: "
              + ", ".join(f"{r:.2f}" for r in ratios) + f"; spread {min(ratios):.2f}-{max(ratios):.2f})")
        print(f"  ratio of the fastest rounds: {min(ours) / min(theirs):.2f}x")


if __name__ == "__main__":
    main()

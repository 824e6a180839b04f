"""Several processes route and end calls concurrently against one shared segment.

This is the Kamailio picture: the segment is created in the main process, then
worker processes (forked, or started fresh and attaching by name) share it.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import uuid
from collections import Counter, defaultdict
from typing import Any, Optional

import approute
import pytest

CONF = """
nodes:
  - {id: m1, uri: "sip:127.0.0.1:5071", pool: media, capacity: {conference: 5000}}
  - {id: m2, uri: "sip:127.0.0.1:5072", pool: media, capacity: {conference: 5000}}
  - {id: m3, uri: "sip:127.0.0.1:5073", pool: media, capacity: {conference: 5000}}
  - {id: r1, uri: "sip:127.0.0.1:5081", pool: rr}
  - {id: r2, uri: "sip:127.0.0.1:5082", pool: rr}
  - {id: r3, uri: "sip:127.0.0.1:5083", pool: rr}
apps:
  conference: {pool: media, strategy: least_loaded, resource: conference, affinity: {grace: 600}}
  rr: {pool: rr, strategy: round_robin}
"""

# Capacity is far above the 1500 calls left live, so no node can fill up and
# send a key's call elsewhere: a key on two nodes can only be a routing bug.
PROCS = 4
CALLS = 1500
KEYS = 30


def worker(segment: str, index: int, attach: bool, queue) -> None:
    router = approute.Router.attach(segment) if attach else approute.Router.from_yaml(CONF, shared=segment)
    placed = []
    rr: Counter[Optional[str]] = Counter()
    for i in range(CALLS):
        call_id = f"p{index}-{i}"
        key = f"tenant{(i * 7 + index) % KEYS}.example.com"
        d = router.route("conference", call_id=call_id, key=key)
        assert d.ok, d.detail
        live = i % 4 == 0
        placed.append((key, d.node_id, live))
        if not live:
            router.end(call_id)
        d2 = router.route("rr", call_id="rr-" + call_id)
        rr[d2.node_id] += 1
        router.end("rr-" + call_id)
    queue.put((placed, dict(rr)))


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_processes_share_one_state(start: str) -> None:
    segment = f"approute-mp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    parent = approute.Router.from_yaml(CONF, shared=segment)
    try:
        ctx: Any = mp.get_context(start)  # fork or spawn
        queue = ctx.Queue()
        # With fork the children attach by name; with spawn they load the same YAML (restart path).
        procs = [ctx.Process(target=worker, args=(segment, i, start == "fork", queue)) for i in range(PROCS)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        key_nodes = defaultdict(set)
        live: Counter[str] = Counter()
        rr_total: Counter[Optional[str]] = Counter()
        for placed, rr in results:
            for key, node, is_live in placed:
                key_nodes[key].add(node)
                if is_live:
                    live[node] += 1
            rr_total.update(rr)
        assert len(key_nodes) == KEYS
        split = {k: sorted(v) for k, v in key_nodes.items() if len(v) > 1}
        assert not split, f"every key went to one node only; split: {split}, live per node: {dict(live)}"
        for n in ("m1", "m2", "m3"):
            assert parent.node(n).sessions["conference"] == live[n], "per-node counts equal the live sessions"
        assert parent.stats()["sessions"] == sum(live.values())
        # Round robin's cursor lives in the segment: the spread across processes is exact.
        assert rr_total == {"r1": PROCS * CALLS // 3, "r2": PROCS * CALLS // 3, "r3": PROCS * CALLS // 3}
        for n in ("r1", "r2", "r3"):
            assert parent.node(n).sessions["calls"] == 0
    finally:
        approute.Router.unlink(segment)

"""Keep a tenant's conferences together, but at most `cap` of them per node.

    apps:
      conference:
        pool: media
        resource: conference
        strategy: {name: "python:tenant_cap:TenantCap", cap: 5, hold: 3600}

The tenant is the affinity key (route(..., key="acme.com")). A tenant's new
conference goes to the node that already has most of its conferences, as long
as that node has fewer than `cap` of them; otherwise to the least loaded node
the tenant does not use yet. A strategy sees placements, not call ends, so a
placement counts for `hold` seconds (about a conference's length; use the
router's `affinity:` as well when a node's exact session count matters).
Calls without a key, and anything that goes wrong, use the fallback.
"""
from __future__ import annotations

from collections import deque
from typing import Deque, Dict, List, Optional

import approute


def _load(c: approute.Candidate) -> float:
    return c.used / c.limit if c.limit else float(c.used)


class TenantCap(approute.Strategy):
    fallback = "least_loaded"

    def __init__(self, cap: int = 5, hold: float = 3600) -> None:
        super().__init__()
        if int(cap) < 1:
            raise ValueError("cap must be >= 1")
        self.cap = int(cap)
        self.hold = float(hold)
        self.placed: Dict[str, Dict[str, Deque[float]]] = {}  # tenant -> node -> placement times

    def select(self, request: approute.StrategyRequest,
               candidates: List[approute.Candidate]) -> Optional[str]:
        tenant = request.key
        if tenant is None:
            return None
        now = request.now
        nodes = self.placed.setdefault(tenant, {})
        for nid in list(nodes):
            times = nodes[nid]
            while times and times[0] <= now - self.hold:
                times.popleft()
            if not times:
                del nodes[nid]
        ids = {c.id for c in candidates}
        choice = None
        for nid, times in sorted(nodes.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            if nid in ids and len(times) < self.cap:
                choice = nid
                break
        if choice is None:
            fresh = [c for c in candidates if c.id not in nodes] or list(candidates)
            choice = min(fresh, key=lambda c: (_load(c), c.id)).id
        nodes.setdefault(choice, deque()).append(now)
        return choice

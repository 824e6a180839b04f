"""Least recently used: the candidate that was chosen longest ago (never first).

OpenSIPS users ask load_balancer for this: spread consecutive calls so that
no node gets two in a row while another sits idle, whatever the counts say.

    apps:
      default: {pool: media, strategy: "python:lru:LeastRecentlyUsed"}

State lives in the object (per process, per app): each Kamailio worker keeps
its own order, which is what "recently" means for the calls it sends.
"""
from __future__ import annotations

import itertools
from typing import Dict, List, Optional

import approute


class LeastRecentlyUsed(approute.Strategy):
    def __init__(self) -> None:
        super().__init__()
        self._tick = itertools.count(1)
        self.last_used: Dict[str, int] = {}  # node id -> tick of its last pick

    def select(self, request: approute.StrategyRequest,
               candidates: List[approute.Candidate]) -> Optional[str]:
        choice = min(candidates, key=lambda c: (self.last_used.get(c.id, 0), c.id)).id
        self.last_used[choice] = next(self._tick)
        return choice

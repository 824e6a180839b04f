"""Prefer nodes whose `region` attribute matches the caller's.

    nodes:
      - {id: ast1, uri: "sip:10.0.0.1", pool: media, attrs: {region: eu}}
    apps:
      conference: {pool: media, strategy: "python:prefer_region:PreferRegion"}

    router.route("conference", call_id=ci, attrs={"region": "eu"})

Among the candidates in the caller's region (request attribute `request_attr`,
node attribute `attr`, both "region" by default) the least loaded wins; when
none is there (or the caller names no region) the least loaded of all. On a
retry (a node bounced the call, usually because it is full) the least loaded
of all as well: the region is a preference, and retry() hands the strategy
the original attrs, so insisting on the region would bounce again.
"""
from __future__ import annotations

from typing import List, Optional

import approute


class PreferRegion(approute.Strategy):
    fallback = "least_loaded"

    def __init__(self, attr: str = "region", request_attr: str = "region") -> None:
        super().__init__()
        self.attr = str(attr)
        self.request_attr = str(request_attr)

    def select(self, request: approute.StrategyRequest,
               candidates: List[approute.Candidate]) -> Optional[str]:
        want = request.attrs.get(self.request_attr) if request.attempt == 1 else None
        local = [c for c in candidates if want is not None and c.attrs.get(self.attr) == want]
        pool = local or list(candidates)
        return min(pool, key=lambda c: (c.used / c.limit if c.limit else float(c.used), c.id)).id

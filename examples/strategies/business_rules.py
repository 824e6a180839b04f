"""A business rule table: tenant tier and time of day decide which nodes serve a call.

    apps:
      conference:
        pool: media
        strategy:
          name: "python:business_rules:BusinessRules"
          tiers: {acme.com: gold, example.com: silver}   # affinity key -> tier
          default_tier: bronze
          utc_offset: 1                                   # hours; the rules' clock
          rules:
            - {tier: gold, attrs: {class: premium}}                  # gold: premium nodes, always
            - {tier: silver, hours: [8, 18], attrs: {class: premium}}  # silver: premium in office hours
            - {hours: [0, 6], attrs: {class: night}}                 # everyone else at night: night nodes
            - {attrs: {class: standard}}                             # the rest: standard nodes

The tier comes from the request attribute `tier` when given, else from
`tiers` by the affinity key, else `default_tier`. Rules are tried in order; a
rule applies when its `tier` (if any) matches and the local hour is in
[start, end) (if `hours` is given; start > end wraps midnight). Among the
candidates whose attributes contain all of the rule's `attrs`, the least
loaded wins; a rule with no such candidate passes to the next. No rule left:
None, and the fallback picks. The clock is the router's (virtual in
`approute simulate`).
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

import approute


class BusinessRules(approute.Strategy):
    fallback = "least_loaded"

    def __init__(self, rules: Optional[List[Dict[str, Any]]] = None,
                 tiers: Optional[Dict[str, str]] = None, default_tier: str = "standard",
                 utc_offset: float = 0) -> None:
        super().__init__()
        self.rules = []
        for i, r in enumerate(rules or []):
            if not isinstance(r, dict) or set(r) - {"tier", "hours", "attrs"}:
                raise ValueError("rules[%d]: expected {tier, hours: [start, end], attrs: {...}}" % i)
            hours = r.get("hours")
            if hours is not None and not (isinstance(hours, list) and len(hours) == 2):
                raise ValueError("rules[%d].hours: expected [start, end]" % i)
            attrs = {str(k): str(v) for k, v in (r.get("attrs") or {}).items()}
            self.rules.append((r.get("tier"), hours, attrs))
        self.tiers = {str(k): str(v) for k, v in (tiers or {}).items()}
        self.default_tier = str(default_tier)
        self.utc_offset = float(utc_offset)

    def tier_of(self, request: approute.StrategyRequest) -> str:
        return request.attrs.get("tier") or self.tiers.get(request.key or "", self.default_tier)

    def hour_of(self, request: approute.StrategyRequest) -> int:
        return time.gmtime(request.now + self.utc_offset * 3600).tm_hour

    def select(self, request: approute.StrategyRequest,
               candidates: List[approute.Candidate]) -> Optional[str]:
        tier, hour = self.tier_of(request), self.hour_of(request)
        for rule_tier, hours, attrs in self.rules:
            if rule_tier is not None and rule_tier != tier:
                continue
            if hours is not None:
                start, end = int(hours[0]), int(hours[1])
                inside = start <= hour < end if start <= end else (hour >= start or hour < end)
                if not inside:
                    continue
            fit = [c for c in candidates if all(c.attrs.get(k) == v for k, v in attrs.items())]
            if fit:
                return min(fit, key=lambda c: (c.used / c.limit if c.limit else float(c.used), c.id)).id
        return None

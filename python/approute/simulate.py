"""``approute simulate``: replay a workload through the real router, strategy by strategy.

    approute simulate WORKLOAD.yaml [--strategy NAME ...] [--seed N]
                      [--json OUT.json] [--plot OUT.png] [--duration S] [--no-progress]

The workload (see ``examples/simulate/reference.yaml``) describes the pool
(a router configuration plus what the simulation needs to know about each
node: how many sessions it really takes before it bounces calls, and its
speed), the calls of each app (arrival rate over time, Zipf key popularity,
duration distribution, request attributes), changes of the pool over time
(nodes joining, failing, recovering, draining, leaving) and the strategies
to compare.  Each strategy runs in a fresh private router on a virtual
clock (``approute._core`` runs the event loop in C++; only Python
strategies call back into Python), with the same seed, so every strategy
sees the same arrivals.

Prints one table row per strategy: calls, max / mean / p99 sessions per
node, peak utilisation, affinity hit rate (calls whose key already had live
calls that joined one of those nodes), bounces, rejected and dropped calls,
and the run's speed.  Writes a JSON result and PNG plots (matplotlib) when
asked.
"""

from __future__ import annotations

import argparse
import calendar
import copy
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

from .cli_util import ProgressBar
from .plot import plot, plot_figure

__all__ = ["SimulationError", "load_workload", "run", "format_table", "format_rooms_table", "write_json",
           "plot", "plot_figure", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

_ACTIONS = ("join", "fail", "recover", "drain", "enable", "disable", "leave", "remove")
_NODE_SPEC_KEYS = ("uri", "pool", "weight", "priority", "capacity", "attrs", "state")
_NODE_SIM_KEYS = ("limit", "speed")


class SimulationError(ValueError):
    """The workload is invalid (the message names the key)."""


# --------------------------------------------------------------------------
# workload

def _yaml() -> Any:
    try:
        import yaml
    except ImportError as e:  # pragma: no cover - PyYAML is a dependency
        raise SimulationError("PyYAML is required to read workloads: %s" % e) from e
    return yaml


def load_workload(path: str) -> Dict[str, Any]:
    """Reads a workload YAML file; relative router paths are resolved beside it."""
    with open(path, "r", encoding="utf-8") as f:
        data = _yaml().safe_load(f)
    if not isinstance(data, dict):
        raise SimulationError("%s: the top level must be a mapping" % path)
    data = dict(data)
    data.setdefault("_base_dir", os.path.dirname(os.path.abspath(path)))
    return data


def _num(v: Any, where: str, lo: float = 0.0, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SimulationError("%s: expected a number, got %r" % (where, v))
    if v < lo or (positive and v <= 0):
        raise SimulationError("%s: %r is out of range" % (where, v))
    return float(v)


def _start_ms(v: Any) -> int:
    if v is None:
        return 1767225600000  # 2026-01-01T00:00:00Z
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return int(v * 1000)
    if hasattr(v, "timetuple"):  # YAML timestamps arrive as datetime
        return int(calendar.timegm(v.utctimetuple()) * 1000)
    try:
        t = time.strptime(str(v).replace("Z", ""), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise SimulationError("start: expected unix seconds or YYYY-MM-DDTHH:MM:SSZ, got %r" % (v,)) from None
    return int(calendar.timegm(t) * 1000)


def _router_config(data: Dict[str, Any]) -> Dict[str, Any]:
    router = data.get("router")
    if isinstance(router, str):
        path = router if os.path.isabs(router) else os.path.join(data.get("_base_dir", "."), router)
        with open(path, "r", encoding="utf-8") as f:
            router = _yaml().safe_load(f)
    if not isinstance(router, dict):
        raise SimulationError("router: expected a router configuration (mapping) or a file path")
    return copy.deepcopy(router)


def _app_spec(name: str, a: Any) -> Dict[str, Any]:
    where = "workload.%s" % name
    if not isinstance(a, dict):
        raise SimulationError("%s: expected a mapping" % where)
    unknown = set(a) - {"rate", "keys", "duration", "attrs", "rooms"}
    if unknown:
        raise SimulationError("%s: unknown key(s) %s" % (where, ", ".join(sorted(unknown))))
    rate = a.get("rate", 1.0)
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        points = [(0.0, _num(rate, where + ".rate"))]
    elif isinstance(rate, list) and rate:
        points = []
        for i, p in enumerate(rate):
            if not (isinstance(p, (list, tuple)) and len(p) == 2):
                raise SimulationError("%s.rate[%d]: expected [second, calls_per_second]" % (where, i))
            points.append((_num(p[0], "%s.rate[%d]" % (where, i)), _num(p[1], "%s.rate[%d]" % (where, i))))
    else:
        raise SimulationError("%s.rate: expected calls/s or a list of [second, calls/s]" % where)
    out: Dict[str, Any] = {"name": name, "rate": points}
    keys = a.get("keys")
    if isinstance(keys, int) and not isinstance(keys, bool):
        keys = {"count": keys}
    if keys is not None:
        if not isinstance(keys, dict):
            raise SimulationError("%s.keys: expected {count: N, zipf: S, prefix: P}" % where)
        out["keys"] = int(_num(keys.get("count", 0), where + ".keys.count"))
        out["zipf"] = _num(keys.get("zipf", 1.0), where + ".keys.zipf")
        out["key_prefix"] = str(keys.get("prefix", "key"))
    rooms = a.get("rooms")
    if rooms is not None:
        out.update(_rooms_spec(rooms, where + ".rooms"))
        if keys is not None:
            raise SimulationError("%s: rooms make their own keys (one per room): leave keys out" % where)
    dur = a.get("duration", {"dist": "exponential", "mean": 120})
    if isinstance(dur, (int, float)) and not isinstance(dur, bool):
        dur = {"dist": "exponential", "mean": dur}
    if not isinstance(dur, dict):
        raise SimulationError("%s.duration: expected seconds or {dist, mean, sigma, min, max}" % where)
    out["duration"] = str(dur.get("dist", "exponential"))
    out["duration_mean"] = _num(dur.get("mean", 120), where + ".duration.mean")
    out["duration_sigma"] = _num(dur.get("sigma", 1.0), where + ".duration.sigma")
    out["duration_min"] = _num(dur.get("min", 0), where + ".duration.min")
    out["duration_max"] = _num(dur.get("max", 0), where + ".duration.max")
    attrs = a.get("attrs") or {}
    if not isinstance(attrs, dict):
        raise SimulationError("%s.attrs: expected {name: {value: weight}}" % where)
    out["attrs"] = {}
    for k, values in attrs.items():
        if isinstance(values, list):
            values = {str(v): 1.0 for v in values}
        if not isinstance(values, dict) or not values:
            raise SimulationError("%s.attrs.%s: expected {value: weight} or a list of values" % (where, k))
        out["attrs"][str(k)] = [(str(v), _num(w, "%s.attrs.%s.%s" % (where, k, v)))
                                for v, w in values.items()]
    return out


def _rooms_spec(r: Any, where: str) -> Dict[str, Any]:
    """``rooms: {participants: [MIN, MAX] | N, domains: D, home_share: S, prefix: P, domain_prefix: Q}``."""
    if not isinstance(r, dict):
        raise SimulationError("%s: expected {participants: [min, max], domains: N, home_share: S}" % where)
    unknown = set(r) - {"participants", "domains", "home_share", "prefix", "domain_prefix"}
    if unknown:
        raise SimulationError("%s: unknown key(s) %s" % (where, ", ".join(sorted(unknown))))
    p = r.get("participants", [2, 10])
    if isinstance(p, int) and not isinstance(p, bool):
        p = [p, p]
    whole = isinstance(p, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in p)
    if not (whole and len(p) == 2 and 1 <= p[0] <= p[1] <= 100000):
        raise SimulationError("%s.participants: expected N or [min, max] with 1 <= min <= max <= 100000, "
                              "got %r" % (where, p))
    domains = r.get("domains", 10)
    if isinstance(domains, bool) or not isinstance(domains, int) or not 1 <= domains <= 1000000:
        raise SimulationError("%s.domains: expected 1..1000000, got %r" % (where, domains))
    share = _num(r.get("home_share", 0.7), where + ".home_share")
    if share > 1:
        raise SimulationError("%s.home_share: expected 0..1, got %r" % (where, share))
    return {"rooms_min": p[0], "rooms_max": p[1], "domains": domains, "home_share": share,
            "key_prefix": str(r.get("prefix", "room")),
            "domain_prefix": str(r.get("domain_prefix", "domain"))}


def _event_spec(i: int, e: Any) -> Dict[str, Any]:
    where = "events[%d]" % i
    if not isinstance(e, dict) or "at" not in e:
        raise SimulationError("%s: expected {at: SECONDS, ACTION: NODE, ...}" % where)
    acts = [a for a in _ACTIONS if a in e]
    if len(acts) != 1:
        raise SimulationError("%s: name exactly one of %s" % (where, ", ".join(_ACTIONS)))
    action = acts[0]
    out: Dict[str, Any] = {"at": _num(e["at"], where + ".at"), "action": action, "node": str(e[action])}
    unknown = set(e) - {"at", action, "deadline"} - set(_NODE_SPEC_KEYS) - set(_NODE_SIM_KEYS)
    if unknown:
        raise SimulationError("%s: unknown key(s) %s" % (where, ", ".join(sorted(unknown))))
    if "deadline" in e:
        if action not in ("drain", "leave"):
            raise SimulationError("%s.deadline: only drain and leave take a deadline" % where)
        out["deadline"] = _num(e["deadline"], where + ".deadline")
        if out["deadline"] < 0:
            raise SimulationError("%s.deadline: must be >= 0 seconds, got %s" % (where, e["deadline"]))
    if action == "join":
        if "uri" not in e:
            raise SimulationError("%s: join needs uri" % where)
        out["spec"] = {k: e[k] for k in _NODE_SPEC_KEYS + _NODE_SIM_KEYS if k in e}
    return out


def _strategy_label(s: Any) -> str:
    if isinstance(s, dict):
        if "label" in s:
            return str(s["label"])
        name = str(s.get("name", "?"))
        opts = ",".join("%s=%s" % (k, v) for k, v in sorted(s.items())
                        if k not in ("name", "label", "affinity"))
        aff = s.get("affinity")
        extra = ""
        if isinstance(aff, dict) and aff:
            extra = " " + ",".join("%s=%s" % (k, v) for k, v in sorted(aff.items()))
        return name + ("(%s)" % opts if opts else "") + extra
    return str(s)


def _plan(data: Dict[str, Any], seed: Optional[int], duration: Optional[float]) -> Dict[str, Any]:
    """Checks the workload; returns the router config and the engine's spec."""
    known = {"seed", "duration", "sample_interval", "report_interval", "start", "router", "nodes",
             "workload", "events", "strategies", "bounce_code", "_base_dir"}
    unknown = set(data) - known
    if unknown:
        raise SimulationError("unknown key(s): %s" % ", ".join(sorted(unknown)))
    router = _router_config(data)
    workload = data.get("workload")
    if not isinstance(workload, dict) or not workload:
        raise SimulationError("workload: expected {app: {rate, keys, duration, attrs}}")
    apps = [_app_spec(str(k), v) for k, v in workload.items()]
    nodes_sim = data.get("nodes") or {}
    if not isinstance(nodes_sim, dict):
        raise SimulationError("nodes: expected {node_id: {limit: N, speed: X}}")
    sim_nodes = []
    for nid, v in nodes_sim.items():
        v = v or {}
        if not isinstance(v, dict) or set(v) - set(_NODE_SIM_KEYS):
            raise SimulationError("nodes.%s: expected {limit: N, speed: X}" % nid)
        sim_nodes.append({"id": str(nid), "limit": int(v["limit"]) if "limit" in v else None,
                          "speed": _num(v.get("speed", 1.0), "nodes.%s.speed" % nid, positive=True)})
    events = [_event_spec(i, e) for i, e in enumerate(data.get("events") or [])]
    spec = {
        "seed": int(seed if seed is not None else data.get("seed", 1)),
        "duration": _num(duration if duration is not None else data.get("duration", 3600), "duration",
                         positive=True),
        "sample_interval": _num(data.get("sample_interval", 10), "sample_interval", positive=True),
        "report_interval": _num(data.get("report_interval", 0), "report_interval"),
        "start_ms": _start_ms(data.get("start")),
        "bounce_code": int(data.get("bounce_code", 503)),
        "apps": apps,
        "nodes": sim_nodes,
        "events": events,
    }
    # State limits sized for the workload when the config leaves them out.
    state = router.setdefault("state", {})
    peak = 0.0
    for a in apps:
        per = (a["rooms_max"] + a["rooms_min"]) / 2.0 if "rooms_max" in a else 1.0
        peak += max(r for _, r in a["rate"]) * max(a["duration_mean"], 1.0) * per
    n_nodes = len(router.get("nodes") or []) + sum(1 for e in events if e["action"] == "join")
    state.setdefault("max_sessions", int(min(1 << 22, max(4096, 2 ** math.ceil(math.log2(peak * 3 + 1024))))))
    room_keys = sum(int(max(r for _, r in a["rate"]) * spec["duration"]) + 16
                    for a in apps if "rooms_max" in a)
    keys = sum(a.get("keys", 0) for a in apps) + room_keys
    state.setdefault("max_affinities", int(min(1 << 22, max(4096, keys * 2))))
    state.setdefault("max_nodes", max(16, n_nodes + 8))
    return {"router": router, "spec": spec, "apps": [a["name"] for a in apps]}


# --------------------------------------------------------------------------
# running

def _config_with(router: Dict[str, Any], apps: Sequence[str], strategy: Any) -> str:
    cfg = copy.deepcopy(router)
    cfg_apps = cfg.setdefault("apps", {}) or {}
    cfg["apps"] = cfg_apps
    s = copy.deepcopy(strategy)
    affinity = None
    if isinstance(s, dict):
        s.pop("label", None)
        affinity = s.pop("affinity", None)
        if affinity is not None and not isinstance(affinity, dict):
            raise SimulationError("strategies: affinity: expected a mapping of affinity settings "
                                  "(grace, bound, strict, headroom), got %r" % (affinity,))
    for name in apps:
        app = cfg_apps.get(name)
        if app is None:
            app = cfg_apps[name] = {}
        app["strategy"] = s
        if affinity:  # this row's affinity settings over the app's own
            app["affinity"] = dict(app.get("affinity") or {}, **affinity)
    return json.dumps(cfg)  # JSON is YAML


def run(workload: Any, strategies: Optional[Sequence[Any]] = None, seed: Optional[int] = None,
        duration: Optional[float] = None,
        progress: Optional[Callable[[str, float], None]] = None) -> Dict[str, Any]:
    """Runs a workload (a path or a mapping) for each strategy; returns the result mapping.

    ``strategies`` overrides the workload's list.  ``progress(label, fraction)``
    is called now and then.  Raises SimulationError or approute.Error.
    """
    import approute

    data = load_workload(workload) if isinstance(workload, str) else dict(workload)
    plan = _plan(data, seed, duration)
    strategies = list(strategies if strategies else (data.get("strategies") or ["round_robin"]))
    base_dir = data.get("_base_dir")
    for d in (base_dir, os.getcwd()):  # python:module:Class next to the workload or here
        if d and d not in sys.path:
            sys.path.insert(0, d)
    results = []
    for s in strategies:
        label = _strategy_label(s)
        text = _config_with(plan["router"], plan["apps"], s)
        router = approute.Router.from_yaml(text, seed=plan["spec"]["seed"])
        cb = None
        if progress is not None:
            cb = (lambda lbl: (lambda f: progress(lbl, f)))(label)
        r = router._simulate(plan["spec"], cb)
        r = dict(r)
        r["label"] = label
        r["strategy"] = s
        r["affinity_hit_rate"] = (r["affinity_hits"] / r["keyed"]) if r["keyed"] else None
        r["calls_per_second"] = r["calls"] / r["wall_seconds"] if r["wall_seconds"] > 0 else None
        r["balance"] = balance(r, plan["spec"])
        r["drains"] = drains(r, plan["spec"])
        results.append(r)
        del router
    return {"seed": plan["spec"]["seed"], "duration": plan["spec"]["duration"],
            "sample_interval": plan["spec"]["sample_interval"], "apps": plan["apps"],
            "bounce_code": plan["spec"]["bounce_code"],
            # for the plot: the pool's changes and each node's real size
            "events": [{"at": e["at"], "action": e["action"], "node": e["node"]}
                       for e in plan["spec"]["events"]],
            "node_limits": _sizes(plan["spec"]),
            "results": results}


def _sizes(spec: Dict[str, Any]) -> Dict[str, float]:
    """Node id -> limit x speed, for the nodes that have a limit."""
    out = {}
    for n in spec["nodes"] + [dict(e["spec"], id=e["node"]) for e in spec["events"] if e["action"] == "join"]:
        if n.get("limit"):
            out[str(n["id"])] = float(n["limit"]) * float(n.get("speed", 1.0) or 1.0)
    return out


def balance(r: Dict[str, Any], spec: Dict[str, Any]) -> Optional[float]:
    """Time-averaged max/mean node load over the samples with load on present nodes.

    A node's load is its sessions relative to its limit x speed when every
    present node has a limit, its sessions otherwise.
    """
    sizes = _sizes(spec)
    ids = r["node_ids"]
    ratios = []
    for t in range(len(r["sample_t"])):
        present = [(ids[i], r["samples"][i][t]) for i in range(len(ids))
                   if t < len(r["samples"][i]) and r["samples"][i][t] >= 0]
        if not present:
            continue
        rel = all(n in sizes for n, _ in present)
        loads = [v / sizes[n] if rel else float(v) for n, v in present]
        mean = sum(loads) / len(loads)
        if mean > 0:
            ratios.append(max(loads) / mean)
    return sum(ratios) / len(ratios) if ratios else None


def drains(r: Dict[str, Any], spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per drain or leave event: seconds until its node held no session (None: never)."""
    out = []
    ids = r["node_ids"]
    for e in spec["events"]:
        if e["action"] not in ("drain", "leave") or e["node"] not in ids:
            continue
        row = r["samples"][ids.index(e["node"])]
        done = None
        for t, v in zip(r["sample_t"], row):
            if t >= e["at"] and v <= 0:
                done = t - e["at"]
                break
        left = next((v for t, v in zip(reversed(r["sample_t"]), reversed(row)) if v >= 0), 0)
        out.append({"node": e["node"], "action": e["action"], "at": e["at"],
                    "deadline": e.get("deadline"), "empty_after": done,
                    "left_at_end": 0 if done is not None else left})
    return out


# --------------------------------------------------------------------------
# output

def _f(v: Any, digits: int = 1, pct: bool = False) -> str:
    if v is None:
        return "-"
    if pct:
        return "%.*f%%" % (digits, 100.0 * v)
    if isinstance(v, float):
        return "%.*f" % (digits, v)
    return str(v)


def _columns(headers: List[str], rows: List[List[str]], text_last: bool = False) -> List[str]:
    """Aligned lines: the first column (and the last, when it is text) to
    the left, numbers to the right, a rule under the headers."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    last = len(headers) - 1

    def line(cells: List[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c if (text_last and i == last) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_table(result: Dict[str, Any]) -> str:
    headers = ["strategy", "calls", "max", "mean", "p99", "max/mean", "peak util", "affinity hit",
               "bounces", "rejected", "dropped", "drained", "wall s", "calls/s"]
    rows = []
    for r in result["results"]:
        drained = ", ".join(
            "%s %s" % (d["node"], "never (%d left)" % d["left_at_end"] if d["empty_after"] is None
                       else "%.0fs" % d["empty_after"]) for d in r.get("drains", []))
        rows.append([r["label"], str(r["calls"]), str(r["max_sessions"]), _f(r["mean_sessions"]),
                     _f(r["p99_sessions"], 0), _f(r.get("balance"), 2), _f(r["max_util"], 0, pct=True),
                     _f(r["affinity_hit_rate"], 1, pct=True), str(r["bounces"]), str(r["rejected"]),
                     str(r["dropped"]), drained or "-", _f(r["wall_seconds"], 2),
                     _f(r["calls_per_second"] and round(r["calls_per_second"]), 0)])
    out = _columns(headers, rows)
    out.append("max/mean/p99: sessions per node (mean and p99 over samples of present nodes); "
               "max/mean: time-averaged max over mean node load (sessions / (limit x speed) when every "
               "node has a limit); peak util: sessions / (limit x speed); drained: time from a drain "
               "or leave event until its node held no session")
    out.append("bounces: times a node at its limit x speed answered a call %s and the router "
               "retried it elsewhere (one call may bounce several times; it still counts once in "
               "calls); rejected: calls that got no node at all (the router answered no_node, or "
               "every retry bounced): the caller heard a failure; dropped: calls cut while up, "
               "because their node failed or was removed" % result.get("bounce_code", 503))
    if any(r.get("rooms") for r in result["results"]):
        out.append("")
        out.append(format_rooms_table(result))
    return "\n".join(out)


def format_rooms_table(result: Dict[str, Any]) -> str:
    """The room apps' figures, one row per strategy."""
    headers = ["strategy", "rooms", "participants", "split rooms", "max split at once", "split participants",
               "refused (room's node)", "new rooms refused", "refusal reasons"]
    rows = []
    for r in result["results"]:
        reasons = ", ".join("%s %d" % kv for kv in sorted(r.get("refusals", {}).items())) or "-"
        rows.append([r["label"], str(r["rooms"]), str(r["calls"]), str(r["split_rooms"]),
                     str(r["max_split_rooms"]), str(r["split_participants"]), str(r["participants_refused"]),
                     str(r["new_rooms_refused"]), reasons])
    out = _columns(headers, rows, text_last=True)
    out.append("split rooms: rooms that had live participants on two nodes at some moment (their "
               "participants cannot hear each other); refused (room's node): participants refused while "
               "their room had live participants; new rooms refused: participants refused while their "
               "room had none")
    return "\n".join(out)


def write_json(result: Dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)
        f.write("\n")


# --------------------------------------------------------------------------
# command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workload", metavar="WORKLOAD", nargs="?",
                   help="workload YAML (see examples/simulate/); or --replay")
    p.add_argument("--replay", metavar="CALLS",
                   help="replay recorded calls (a calls file: approute calls, docs/operations.md) "
                   "instead of a workload")
    p.add_argument("--config", action="append", metavar="ROUTER.yaml", default=[],
                   help="with --replay: a router configuration to replay through (repeat it to "
                   "compare, e.g. --config old.yaml --config new.yaml)")
    p.add_argument("--limit", action="append", metavar="NODE=N", default=[],
                   help="with --replay: the sessions NODE really takes before it bounces a call "
                   "with 503 (repeatable; default: no limit, the config's capacities decide)")
    p.add_argument("--sample", type=float, default=1.0, metavar="S",
                   help="with --replay: seconds between load samples (default 1)")
    p.add_argument("--strategy", action="append", metavar="NAME",
                   help="strategy to compare (repeatable; overrides the workload's list)")
    p.add_argument("--seed", type=int, help="random seed (default: the workload's)")
    p.add_argument("--duration", type=float, help="simulated seconds (default: the workload's)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--plot", metavar="PATH", help="write load per node over time as a PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_replay(args: argparse.Namespace, out: TextIO) -> int:
    from . import replay as _replay
    if args.workload or args.strategy:
        raise SimulationError("--replay takes no WORKLOAD and no --strategy (the configs name theirs)")
    if not args.config:
        raise SimulationError("--replay needs at least one --config ROUTER.yaml")
    if not args.sample > 0:
        raise SimulationError("--sample must be > 0 seconds")
    limits = {}
    for item in args.limit:
        node, sep, n = item.partition("=")
        if not sep or not node or not n.isdigit():
            raise SimulationError("--limit takes NODE=N (N sessions), not %r" % item)
        limits[node] = int(n)
    try:
        calls = _replay.load_calls(args.replay)
        result = _replay.replay(calls, args.config, limits, args.sample, args.seed or 1)
    except _replay.ReplayError as e:
        raise SimulationError(str(e)) from None
    return _emit(result, _replay.format_replay(result), args, out)


def _emit(result: Dict[str, Any], table: str, args: argparse.Namespace, out: TextIO) -> int:
    """The table, then the JSON and the plot when asked."""
    out.write(table + "\n")
    if args.json:
        write_json(result, args.json)
        out.write("wrote %s\n" % args.json)
    if args.plot:
        plot(result, args.plot)
        out.write("wrote %s\n" % args.plot)
    return EXIT_OK


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import approute
    if args.replay is None and args.workload is None:
        err.write("approute simulate: error: give a WORKLOAD or --replay CALLS\n")
        return EXIT_USAGE
    if args.replay is None and (args.config or args.limit):
        err.write("approute simulate: error: --config and --limit go with --replay\n")
        return EXIT_USAGE
    strategies = None
    if args.strategy:
        strategies = []
        for s in args.strategy:
            if s.startswith("{"):
                strategies.append(_yaml().safe_load(s))
            else:
                strategies.append(s)
    show = not args.no_progress and hasattr(err, "isatty") and err.isatty()
    try:
        if args.plot:  # fail before a long run, not after it
            try:
                import matplotlib  # noqa: F401
            except ImportError as e:
                raise SimulationError("--plot needs matplotlib (pip install matplotlib): %s" % e) from e
        if args.replay is not None:
            return _run_replay(args, out)
        result = run(args.workload, strategies, args.seed, args.duration, ProgressBar(err) if show else None)
        return _emit(result, format_table(result), args, out)
    except (SimulationError, approute.Error, OSError) as e:
        err.write("approute simulate: error: %s\n" % e)
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("\napproute simulate: interrupted\n")
        return EXIT_ERROR


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None,
         err: Optional[TextIO] = None) -> int:
    p = argparse.ArgumentParser(prog="approute simulate", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    try:
        args = p.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    return run_command(args, out or sys.stdout, err or sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

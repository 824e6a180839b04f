"""Replaying real traffic: the calls file, its converters, and the replay.

    approute simulate --replay CALLS.csv --config router.yaml [--config new.yaml]
                      [--limit NODE=N ...] [--sample S] [--json OUT] [--plot PNG]
    approute calls acc KAMAILIO.log [-o CALLS.csv] [--app APP]    # from acc log lines
    approute calls cdr CDRS.csv [-o CALLS.csv] [--map FIELD=COLUMN ...] [--app APP]

The calls file is CSV with this header (one call a line, any order)::

    start,call_id,app,key,prefer,duration,code

``start``     when the call arrived: unix seconds (``1767225600.25``) or ISO 8601
              (``2026-01-01T00:00:00Z``; no zone means UTC)
``call_id``   the call's Call-ID (names it in error messages)
``app``       the router app it was routed to
``key``       its affinity key (empty: none)
``prefer``    its preference (empty: none)
``duration``  seconds it was up after it was answered (0 when it was not)
``code``      its final SIP code: 2xx answered, anything else missed (busy,
              cancelled, failed)

A replay routes every call through a fresh private router built from each
``--config`` on a virtual clock: an answered call holds its node for its
duration, a missed one is abandoned right after its placement (it rang, so
it was routed). A node bounces calls (503, retried as the config says)
only above a ``--limit`` given for it; without limits the config's own
capacities decide.

The Kamailio ``acc`` module writes one log line per INVITE transaction
answered (``log_flag``: ``ACC: transaction answered: timestamp=...;method=
INVITE;...;call_id=...;code=200;...``) or missed (``log_missed_flag``: ``ACC:
call missed: ...``) and, with the flag set on BYE, one per BYE. The converter takes the answer (or
failure) time as the start, the BYE's time minus it as the duration, and
the app, key and preference from ``log_extra`` fields ``app=``, ``key=`` and
``prefer=`` (examples/kamailio/kamailio.cfg with ``-A WITH_ACC`` logs them).
"""

from __future__ import annotations

import argparse
import calendar
import csv
import re
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, TextIO, Tuple

FIELDS = ("start", "call_id", "app", "key", "prefer", "duration", "code")

#: Asterisk CDR dispositions, as final codes
DISPOSITIONS = {"ANSWERED": 200, "BUSY": 486, "NO ANSWER": 480, "FAILED": 500, "CONGESTION": 503}


class ReplayError(ValueError):
    """A calls file, acc log or CDR file that cannot be read (the message says where)."""


def parse_start(text: str, where: str) -> float:
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?", t)
    if not m:
        raise ReplayError("%s: start %r is neither unix seconds nor ISO 8601" % (where, text))
    base = calendar.timegm(time.strptime(m.group(1) + " " + m.group(2), "%Y-%m-%d %H:%M:%S"))
    frac = float(m.group(3)) if m.group(3) else 0.0
    zone = m.group(4)
    off = 0
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        z = zone[1:].replace(":", "")
        off = sign * (int(z[:2]) * 3600 + int(z[2:]) * 60)
    return base + frac - off


def _number(text: str, what: str, where: str, integer: bool = False) -> float:
    try:
        v = int(text) if integer else float(text)
    except ValueError:
        raise ReplayError("%s: %s %r is not a number" % (where, what, text)) from None
    if not (v >= 0 and v != float("inf")):
        raise ReplayError("%s: %s %r must be >= 0" % (where, what, text))
    return v


def check_call(row: Mapping[str, str], where: str) -> Dict[str, Any]:
    """One call of a calls file, checked: start (unix s), call_id, app, key,
    prefer, duration (s), code."""
    missing = [f for f in ("start", "call_id", "app") if not (row.get(f) or "").strip()]
    if missing:
        raise ReplayError("%s: %s is empty" % (where, ", ".join(missing)))
    code = int(_number((row.get("code") or "200").strip(), "code", where, integer=True))
    if not 100 <= code <= 699:
        raise ReplayError("%s: code %d is not a SIP final code" % (where, code))
    return {"start": parse_start(row["start"], where), "call_id": row["call_id"].strip(),
            "app": row["app"].strip(), "key": (row.get("key") or "").strip(),
            "prefer": (row.get("prefer") or "").strip(),
            "duration": _number((row.get("duration") or "0").strip() or "0", "duration", where),
            "code": code}


def load_calls(path: str) -> List[Dict[str, Any]]:
    """The calls of a calls file, sorted by start."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"start", "call_id", "app"} <= set(reader.fieldnames):
            raise ReplayError("%s: the first line must be the header %s" % (path, ",".join(FIELDS)))
        calls = [check_call(row, "%s:%d" % (path, reader.line_num)) for row in reader]
    if not calls:
        raise ReplayError("%s: no calls" % path)
    calls.sort(key=lambda c: c["start"])
    return calls


def write_calls(calls: Iterable[Mapping[str, Any]], out: TextIO) -> int:
    """Writes a calls file; returns how many calls."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(FIELDS)
    n = 0
    for c in sorted(calls, key=lambda c: c["start"]):
        w.writerow([("%.3f" % c["start"]).rstrip("0").rstrip("."), c["call_id"], c["app"], c.get("key") or "",
                    c.get("prefer") or "", ("%.3f" % c["duration"]).rstrip("0").rstrip("."), c["code"]])
        n += 1
    return n


# --------------------------------------------------------------------------
# converters

#: acc's log lines: "transaction answered" (log_flag), "call missed"
#: (log_missed_flag), "transaction failed" (failed_transaction_flag)
_ACC = re.compile(r"ACC: (transaction answered|call missed|transaction failed): (.*)$")
_EMPTY = ("", "n/a", "<null>", "<nil>")


def from_acc(lines: Iterable[str], default_app: Optional[str] = None) -> List[Dict[str, Any]]:
    """Calls from Kamailio ``acc`` log lines (syslog or ``-E`` stderr: "ACC:
    transaction answered", "ACC: call missed", "ACC: transaction failed";
    other lines are skipped). A call is answered when any INVITE line of it was
    answered (2xx), else missed with its last failure's code; serial forking
    logs one missed line per failed branch."""
    calls: Dict[str, Dict[str, Any]] = {}
    byes: Dict[str, float] = {}
    for no, line in enumerate(lines, 1):
        m = _ACC.search(line.rstrip("\n"))
        if not m:
            continue
        f: Dict[str, str] = {}
        for part in m.group(2).split(";"):
            k, sep, v = part.partition("=")
            if sep:
                f[k.strip()] = v.strip()
        where = "acc line %d" % no
        if "call_id" not in f or "timestamp" not in f:
            raise ReplayError("%s: no call_id or timestamp: %s" % (where, line.strip()))
        ts = _number(f["timestamp"], "timestamp", where)
        method = f.get("method", "INVITE").upper()
        if method == "BYE":
            byes.setdefault(f["call_id"], ts)
            continue
        if method != "INVITE":
            continue
        code = int(_number(f.get("code", "0"), "code", where, integer=True))
        answered = 200 <= code < 300
        app = f.get("app", "")
        if app in _EMPTY:
            app = default_app or ""
        if not app:
            raise ReplayError("%s: no app= field (acc log_extra) and no default app given" % where)
        c = calls.get(f["call_id"])
        if c is not None and c["code"] // 100 == 2:
            continue  # answered already: later lines are retransmissions
        rec = {"start": ts if c is None or answered else c["start"], "call_id": f["call_id"], "app": app,
               "key": "" if f.get("key", "") in _EMPTY else f["key"],
               "prefer": "" if f.get("prefer", "") in _EMPTY else f["prefer"], "duration": 0.0,
               "code": code}
        calls[f["call_id"]] = rec
    for cid, c in calls.items():
        if c["code"] // 100 == 2 and cid in byes:
            c["duration"] = max(0.0, byes[cid] - c["start"])
    return sorted(calls.values(), key=lambda c: c["start"])


def from_cdr_csv(path: str, columns: Optional[Mapping[str, str]] = None,
                 default_app: Optional[str] = None) -> List[Dict[str, Any]]:
    """Calls from a CSV of CDRs with a header line. ``columns`` maps a field
    of the calls file to the CDR's column (default: the field's own name);
    ``code`` may be a SIP code or an Asterisk disposition (ANSWERED, BUSY,
    NO ANSWER, FAILED, CONGESTION)."""
    cols = {f: f for f in FIELDS}
    cols.update(columns or {})
    unknown = set(cols) - set(FIELDS)
    if unknown:
        raise ReplayError("--map: unknown field(s) %s (fields: %s)" % (", ".join(sorted(unknown)),
                                                                      ", ".join(FIELDS)))
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        names = set(reader.fieldnames or [])
        need = [cols[x] for x in ("start", "call_id") if cols[x] not in names]
        if need:
            raise ReplayError("%s: no column %s (map one with --map FIELD=COLUMN)" % (path, ", ".join(need)))
        for row in reader:
            where = "%s:%d" % (path, reader.line_num)
            code = (row.get(cols["code"]) or "200").strip()
            code = str(DISPOSITIONS.get(code.upper(), code))
            call = {f: (row.get(cols[f]) or "") for f in FIELDS}
            call["code"] = code
            if not call["app"].strip() and default_app:
                call["app"] = default_app
            out.append(check_call(call, where))
    out.sort(key=lambda c: c["start"])
    return out


# --------------------------------------------------------------------------
# the replay

def replay(calls: Sequence[Mapping[str, Any]], configs: Sequence[str],
           limits: Optional[Mapping[str, int]] = None, sample: float = 1.0,
           seed: int = 1) -> Dict[str, Any]:
    """Replays ``calls`` through a router of each config file; the result has
    the shape of simulate.run()'s (one entry per config, in order)."""
    import approute

    from .simulate import balance

    if not configs:
        raise ReplayError("give at least one --config")
    t0 = calls[0]["start"]
    spec = {"seed": seed, "sample_interval": sample, "start_ms": int(t0 * 1000), "events": [],
            "nodes": [{"id": n, "limit": v} for n, v in sorted((limits or {}).items())],
            "calls": [{"at": c["start"] - t0, "call_id": c["call_id"], "app": c["app"], "key": c["key"],
                       "prefer": c["prefer"], "duration": c["duration"], "code": c["code"]} for c in calls]}
    results = []
    for path in configs:
        router = approute.Router.from_file(path, seed=seed)
        r = dict(router._simulate(spec, None))
        r["label"] = path
        r["config"] = path
        r["affinity_hit_rate"] = (r["affinity_hits"] / r["keyed"]) if r["keyed"] else None
        r["calls_per_second"] = r["calls"] / r["wall_seconds"] if r["wall_seconds"] > 0 else None
        r["balance"] = balance(r, spec)
        r["drains"] = []
        results.append(r)
        del router
    duration = max(c["start"] - t0 + c["duration"] for c in calls)
    return {"seed": seed, "duration": duration, "sample_interval": sample, "start": t0,
            "apps": sorted({c["app"] for c in calls}), "replay": True,
            "answered": sum(1 for c in calls if c["code"] // 100 == 2),
            "missed": sum(1 for c in calls if c["code"] // 100 != 2), "results": results}


def format_replay(result: Mapping[str, Any]) -> str:
    """The configs side by side: one column per config."""
    from .simulate import _f

    rs = result["results"]
    rows: List[Tuple[str, Callable[[Mapping[str, Any]], str]]] = [
        ("calls", lambda r: str(r["calls"])),
        ("answered (recorded)", lambda r: str(r["calls"] - r["missed"])),
        ("missed (recorded)", lambda r: str(r["missed"])),
        ("placed", lambda r: str(r["routed"])),
        ("refused", lambda r: str(r["rejected"])),
        ("refusal reasons", lambda r: ", ".join("%s %d" % kv for kv in sorted(r["refusals"].items())) or "-"),
        ("retries (bounces)", lambda r: str(r["bounces"])),
        ("max sessions on a node", lambda r: str(r["max_sessions"])),
        ("mean / p99 per node", lambda r: "%s / %s" % (_f(r["mean_sessions"]), _f(r["p99_sessions"], 0))),
        ("keys", lambda r: str(r["rooms"])),
        ("split keys (rooms)", lambda r: str(r["split_rooms"])),
        ("affinity hit", lambda r: _f(r["affinity_hit_rate"], 1, pct=True)),
        ("placed per node", lambda r: ", ".join("%s %d" % kv for kv in sorted(r["placed"].items()) if kv[1])
         or "-"),
    ]
    headers = [""] + [r["label"] for r in rs]
    table = [[name] + [fn(r) for r in rs] for name, fn in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = ["replay of %d calls (%d answered, %d missed) over %.0f s" % (
        len_calls(result), result["answered"], result["missed"], result["duration"]),
        line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in table)
    out.append("split keys: keys with live calls on two nodes at one moment; retries: calls a node "
               "above its --limit bounced (503) and the router placed again")
    return "\n".join(out)


def len_calls(result: Mapping[str, Any]) -> int:
    return int(result["answered"]) + int(result["missed"])


# --------------------------------------------------------------------------
# `approute calls`: the converters on the command line

def add_calls_command(sub: Any) -> None:
    sp = sub.add_parser(
        "calls", help="convert Kamailio acc log lines or CDRs into a calls file for simulate --replay",
        description="Writes the calls file `approute simulate --replay` reads (CSV: %s) from "
        "Kamailio acc log lines (acc to syslog or stderr; answered and missed INVITE transactions, "
        "BYEs for durations) or from a CSV of CDRs." % ",".join(FIELDS))
    sp.add_argument("source", choices=("acc", "cdr"), help="what INPUT is")
    sp.add_argument("input", metavar="INPUT", help="the log or CDR file ('-': standard input, acc only)")
    sp.add_argument("-o", "--output", metavar="CALLS", help="the calls file (default: standard output)")
    sp.add_argument("--app", metavar="APP", help="the app of calls that name none")
    sp.add_argument("--map", metavar="FIELD=COLUMN", action="append", default=[],
                    help="cdr: the CDR column holding a field (repeatable), e.g. start=calldate")


def run_calls_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        if args.source == "acc":
            if args.input == "-":
                calls = from_acc(sys.stdin, args.app)
            else:
                with open(args.input, encoding="utf-8", errors="replace") as f:
                    calls = from_acc(f, args.app)
        else:
            cols = {}
            for m in args.map:
                k, sep, v = m.partition("=")
                if not sep or not k or not v:
                    raise ReplayError("--map takes FIELD=COLUMN, not %r" % m)
                cols[k] = v
            calls = from_cdr_csv(args.input, cols, args.app)
        if args.output:
            with open(args.output, "w", newline="", encoding="utf-8") as f:
                n = write_calls(calls, f)
            err.write("wrote %d calls to %s\n" % (n, args.output))
        else:
            write_calls(calls, out)
        return 0
    except (ReplayError, OSError) as e:
        err.write("approute calls: error: %s\n" % e)
        return 1

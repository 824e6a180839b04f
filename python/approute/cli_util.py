"""What the ``approute`` commands share: exit codes, usage errors, the
attached router, plain-text tables of its figures, a progress bar."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Dict, List, TextIO

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _as_dict(value: Any) -> Dict[str, Any]:
    if value is None:
        return {}
    try:
        return dict(value)
    except (TypeError, ValueError):
        return {}


def node_to_dict(n: Any) -> Dict[str, Any]:
    """A NodeStatus as plain JSON-able data."""
    out: Dict[str, Any] = {}
    for field in ("id", "uri", "pool", "weight", "priority", "state", "health", "reported_down",
                  "routed_total",
                  # status reports and health feedback (docs/status-package.md)
                  "origin", "lease_expires", "ejected_until", "latency_ewma_ms", "error_rate",
                  # a 503 (busy until) and RFC 7339 overload control
                  "busy_until", "overload_percent", "overload_until"):
        if hasattr(n, field):
            v = getattr(n, field)
            out[field] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    for field in ("sessions", "capacity", "load", "attrs", "quality"):
        if hasattr(n, field):
            out[field] = _as_dict(getattr(n, field))
    return out


def attach(name: str) -> Any:
    """The running router of shared segment ``name`` (every command attaches
    through this, called as cli_util.attach: tests put a fake in its place)."""
    import approute
    return approute.Router.attach(name)


def _shared(args: argparse.Namespace) -> str:
    name = args.shared or os.environ.get("APPROUTE_SHARED")
    if not name:
        raise _Usage("--shared NAME is required (or set APPROUTE_SHARED)")
    return name


class _Usage(Exception):
    pass


def _fmt_counts(d: Dict[str, Any]) -> str:
    if not d:
        return "-"
    return ",".join("%s=%s" % (k, _num(v)) for k, v in sorted(d.items()))


def _num(v: Any) -> str:
    if isinstance(v, float):
        return ("%.3f" % v).rstrip("0").rstrip(".")
    return str(v)


def format_table(rows: List[List[str]], headers: List[str]) -> str:
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells: List[str]) -> str:
        return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def _seconds(text: str) -> float:
    """argparse type: a number of seconds >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds, got %r" % text) from None
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError("expected a number of seconds >= 0, got %r" % text)
    return v


class ProgressBar:
    """A one-line progress bar on a terminal stream."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.last = 0.0

    def __call__(self, label: str, f: float) -> None:
        now = time.monotonic()
        if f < 1.0 and now - self.last < 0.2:
            return
        self.last = now
        n = int(f * 30)
        self.stream.write("\r%-24s [%s%s] %3d%%" % (label[:24], "#" * n, "." * (30 - n), int(f * 100)))
        if f >= 1.0:
            self.stream.write("\n")
        self.stream.flush()

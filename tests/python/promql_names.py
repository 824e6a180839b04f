"""What the example alert rules and dashboard may name: the metric names approute
exports, read from a running router's ``approute metrics`` output and from the
table of router-wide figures in approute.metrics (families that appear only in
some set-ups, e.g. with ``cluster:``); and the metric names a PromQL expression
selects, read with a PromQL parser. Also: a required tool that is missing fails
the test where CI sets APPROUTE_E2E_REQUIRED=1 and skips it elsewhere."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from typing import List, Set

import approute
import promql_parser
import pytest
from approute import metrics
from prometheus_client.parser import text_string_to_metric_families

# Every per-node family has samples once a node has a capacity, sessions and a load report.
ROUTER_YAML = """
nodes:
  - {id: a, uri: "sip:127.0.0.1:5071", capacity: {calls: 40}}
  - {id: b, uri: "sip:127.0.0.1:5072"}
apps:
  default: {strategy: least_loaded, affinity: {grace: 60}}
"""


def required_binary(name: str, why: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    msg = "%s not found (%s; Debian installs it with .ci/install-deps)" % (name, why)
    if os.environ.get("APPROUTE_E2E_REQUIRED") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def exported_names() -> Set[str]:
    """Sample names (with _total, _bucket, ...) approute exports."""
    shared = "approute-names-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    try:
        r = approute.Router.from_yaml(ROUTER_YAML, shared=shared)
        for i in range(20):  # a few calls, so that the decision and latency families have samples
            r.route("default", call_id="c%d" % i, key="k%d" % i)
        r.retry("c0", code=503)
        r.report_load("a", cpu=0.5)  # per-node load is exported once a node has reported it
        env = dict(os.environ)
        env.pop("APPROUTE_SHARED", None)
        p = subprocess.run([sys.executable, "-m", "approute", "metrics", "--shared", shared],
                           capture_output=True, text=True, timeout=60, env=env, check=False)
        assert p.returncode == 0, p.stderr
    finally:
        approute.Router.unlink(shared)
    names = {s.name for fam in text_string_to_metric_families(p.stdout) for s in fam.samples}
    for m in metrics.ROUTER_METRICS:
        names.update([m.name + suffix for suffix in ("_bucket", "_sum", "_count")]
                     if m.type == "histogram" else [m.name])
    return names


# Grafana's interval variables stand where PromQL wants a duration.
_GRAFANA_DURATIONS = re.compile(r"\$(?:__rate_interval|__interval|__range)\b"
                                r"|\$\{(?:__rate_interval|__interval|__range)\}")


def selected_names(expr: str) -> List[str]:
    """The metric names ``expr`` selects. A selector without a plain name
    (a regular expression on __name__) is an error: it cannot be checked."""
    ast = promql_parser.parse(_GRAFANA_DURATIONS.sub("5m", expr))
    found: List[str] = []
    unnamed: List[str] = []

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                found.append(node.name)
            else:
                unnamed.append(str(node))
        return True

    promql_parser.walk(ast, visit)
    assert not unnamed, "%r: selectors without a metric name: %s" % (expr, unnamed)
    return found

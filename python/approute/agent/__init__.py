"""approute node agent: reports this server's status to the SIP proxy.

Runs beside an Asterisk server (``approute agent --config agent.yaml``, or
the systemd unit in ``examples/agent/``) and, every ``interval`` seconds,
sends a signed SIP PUBLISH of the ``approute-status`` event package
(docs/status-package.md) to the proxy over UDP:

* the body is the JSON report: node, URI, pool, state, weight, capacity,
  load (``cpu`` and ``mem`` from /proc, ``channels`` from Asterisk or
  another source, extra figures from a file), optional ``quality`` figures
  from a file, and a ``seq`` that only grows;
* ``Expires`` is the lease: the proxy keeps the node while reports keep
  coming; the first report is an initial PUBLISH, later ones carry the
  entity tag of the last 200 in ``SIP-If-Match`` (a body when the figures
  changed, none for a pure refresh);
* ``X-Approute-Auth: keyid=K,ts=T,sig=HEX`` is an HMAC-SHA256 over
  ``"{ts}\n{node}\n{etag}\n{expires}\n{body}"`` with the pool's shared key (see ``approute.sign_report``);
* a lost request is retransmitted (T1 doubling up to T2, RFC 3261
  section 17.1.2); a failed report is retried with exponential backoff and
  jitter; a 412 (the proxy forgot the entity tag) makes the next report a
  full initial one;
* SIGTERM (or SIGINT) sends a last PUBLISH with ``Expires: 0``: a graceful
  leave, the proxy routes no new calls to the node.

Configuration (YAML; paths are relative to the file)::

    node: ast5                       # node id (required)
    uri: "sip:10.0.0.5:5060"         # where the proxy sends calls (required)
    pool: media
    weight: 10
    state: null                      # active | draining; omitted: the proxy's admin state is left alone
    capacity: {channels: 500, conference: 50}
    proxy: "10.0.0.1:5060"           # the proxy's SIP address, UDP (required)
    bind: "0.0.0.0:0"                # local address of the agent's socket ([::]:0 for IPv6)
    publish_uri: null                # Request-URI (default sip:NODE@PROXY)
    keyid: k1                        # key id of the pool's shared key
    secret_file: /etc/approute/agent.key   # or secret: "..." (not both)
    interval: 10                     # seconds between reports
    expires: 60                      # lease asked for, seconds
    refresh_unchanged: true          # figures unchanged: refresh without body
    t1: 0.5                          # retransmission timer (seconds)
    transaction_timeout: 8           # give a request up after this long
    backoff: {initial: 1, max: 60}   # retry delays after failed reports
    channels:                        # where the channel count comes from
      source: asterisk               # asterisk | ami | command | file | none
      command: ["asterisk", "-rx", "core show channels count"]
      file: null                     # source file: integer or JSON object
      ami: {host: 127.0.0.1, port: 5038, username: approute, secret: "..."}
      timeout: 3
    load_file: null                  # JSON object merged into "load"
    quality_file: null               # JSON object sent as "quality"
    state_file: null                 # holds "draining" to drain from the node
    proc: /proc                      # where /proc/stat and /proc/meminfo are

The agent parses only the status line, ``SIP-ETag`` and ``Expires`` of the
responses (and checks the Via branch to ignore stray datagrams).
"""

from __future__ import annotations

from .collect import Collector, CpuSampler, ami_core_status, memory_usage, parse_channel_output, read_channels
from .config import (
    AUTH_HEADER,
    CONTENT_TYPE,
    EVENT,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    T2,
    USER_AGENT,
    AgentConfig,
    AgentError,
    ChannelsConfig,
    log,
)
from .message import Response, build_publish, default_signer, parse_response, sign_report_py
from .service import Agent, add_arguments, main, run_from_args

__all__ = [
    "AUTH_HEADER", "Agent", "AgentConfig", "AgentError", "CONTENT_TYPE", "ChannelsConfig",
    "Collector", "CpuSampler", "EVENT", "EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "Response", "T2",
    "USER_AGENT", "add_arguments", "ami_core_status", "build_publish", "default_signer", "log",
    "main", "memory_usage", "parse_channel_output", "parse_response", "read_channels",
    "run_from_args", "sign_report_py",
]

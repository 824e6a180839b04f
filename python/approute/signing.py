"""Signing approute-status reports (the X-Approute-Auth header).

The signature is HMAC-SHA256, under the pool's shared key, of
``"<ts>\\n<node>\\n<etag>\\n<expires>\\n<body>"``: it binds the reporting node,
the entity tag a refresh or leave names (SIP-If-Match, empty for an initial
report), the lease asked for (Expires) and the body, so a signature seen on
the wire cannot make another node leave or stretch another lease.
"""
from __future__ import annotations

import json
from typing import Optional

from ._core import sign_report as _sign_core


def report_node(body: str) -> str:
    """The ``node`` field of a JSON report body; ValueError if there is none."""
    try:
        data = json.loads(body)
    except ValueError as e:
        raise ValueError("the report body is not JSON (%s): pass node= explicitly" % e) from None
    node = data.get("node") if isinstance(data, dict) else None
    if not isinstance(node, str) or not node:
        raise ValueError('the report body has no "node" string: pass node= explicitly')
    return node


def sign_report(body: str, *, keyid: str, secret: str, node: Optional[str] = None, etag: str = "",
                expires: int = 3600, ts: Optional[int] = None) -> str:
    """The X-Approute-Auth value for one PUBLISH: ``keyid=K,ts=T,sig=HEX``.

    ``node`` defaults to the body's ``node`` field (a refresh or leave without
    a body must name it); ``etag`` is the SIP-If-Match the request carries;
    ``expires`` its Expires header; ``ts`` the unix time (default now).
    """
    if node is None:
        if not body:
            raise ValueError("a report without a body must name its node (node=...)")
        node = report_node(body)
    return _sign_core(body, keyid=keyid, secret=secret, node=node, etag=etag, expires=int(expires), ts=ts)

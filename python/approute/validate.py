"""Warnings for a router configuration the core accepts but that is probably wrong.

``approute validate`` prints them (exit 0; ``--strict`` makes them fail). Each one
names the key path and where it is in the file:

- an app whose pool has no configured node: every call to it fails with
  ``no_node``, unless nodes may join that pool by signed status report
  (``status.keys.<pool>``) or are added at run time;
- an app that counts its sessions against a resource (other than the default
  ``calls``) for which no node of its pool has a capacity: usually a misspelt
  resource, which leaves the app without any limit. (A capacity that no app
  counts against is not warned about: it documents a node's size, and status
  reports compare ``load.<resource>`` with it.)
- a status key secret that is still the example's placeholder (``CHANGE-ME...``).

The configuration is assumed valid (the core checked it first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

import yaml

DEFAULT_POOL = "default"
DEFAULT_RESOURCE = "calls"
PLACEHOLDER_PREFIX = "CHANGE-ME"


@dataclass(frozen=True)
class ConfigWarning:
    path: str      # key path, e.g. "apps.conference.pool"
    message: str
    line: int = 0  # 1-based; 0 when unknown
    column: int = 0


def _items(node: Optional[yaml.Node]) -> Iterator[Tuple[str, yaml.Node, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                yield k.value, k, v


def _get(node: Optional[yaml.Node], key: str) -> Optional[yaml.Node]:
    for k, _, v in _items(node):
        if k == key:
            return v
    return None


def _scalar(node: Optional[yaml.Node], default: str) -> str:
    if isinstance(node, yaml.ScalarNode) and node.value not in ("", "~", "null"):
        return str(node.value)
    return default


def _at(path: str, node: yaml.Node, message: str) -> ConfigWarning:
    m = node.start_mark
    return ConfigWarning(path, message, m.line + 1, m.column + 1)


def config_warnings(text: str) -> List[ConfigWarning]:
    """The warnings for a configuration text, in document order."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return []
    out: List[ConfigWarning] = []

    pools: Dict[str, Set[str]] = {}  # pool -> resources some node of it has a capacity for
    nodes = _get(root, "nodes")
    if isinstance(nodes, yaml.SequenceNode):
        for item in nodes.value:
            pool = _scalar(_get(item, "pool"), DEFAULT_POOL)
            caps = pools.setdefault(pool, set())
            caps.update(k for k, _, _ in _items(_get(item, "capacity")))

    report_pools: Set[str] = set()  # pools nodes may join by signed status report
    keys = _get(_get(root, "status"), "keys")
    for pool, _, ids in _items(keys):
        if any(True for _ in _items(ids)):
            report_pools.add(pool)
        for keyid, _, secret in _items(ids):
            if isinstance(secret, yaml.ScalarNode) and str(secret.value).startswith(PLACEHOLDER_PREFIX):
                out.append(_at("status.keys.%s.%s" % (pool, keyid), secret,
                               "the secret is the example's placeholder; anyone who read the example "
                               "can sign status reports: set a long random secret "
                               "(e.g. `openssl rand -hex 32`)"))

    for app, key, body in _items(_get(root, "apps")):
        pool_node = _get(body, "pool")
        pool = _scalar(pool_node, DEFAULT_POOL)
        if pool not in pools and pool not in report_pools:
            where = pool_node if pool_node is not None else key
            have = ", ".join(sorted(pools)) or "none"
            out.append(_at("apps.%s.pool" % app, where,
                           "no node is in pool \"%s\" (pools with nodes: %s): every call to %s fails "
                           "with no_node until a node joins it" % (pool, have, app)))
        res_node = _get(body, "resource")
        # resource: name, or resource: [name, ...] (each checked, each item located)
        named: List[Tuple[str, yaml.Node, str]] = []
        if isinstance(res_node, yaml.SequenceNode):
            named = [("apps.%s.resource[%d]" % (app, i), item, _scalar(item, DEFAULT_RESOURCE))
                     for i, item in enumerate(res_node.value)]
        elif res_node is not None:
            named = [("apps.%s.resource" % app, res_node, _scalar(res_node, DEFAULT_RESOURCE))]
        for path, where, resource in named:
            if resource != DEFAULT_RESOURCE and pool in pools and resource not in pools[pool]:
                known = ", ".join(sorted(pools[pool])) or "none"
                out.append(_at(path, where,
                               "no node of pool \"%s\" has a capacity for resource \"%s\" (capacities "
                               "there: %s), so %s is never limited by it; misspelt?"
                               % (pool, resource, known, app)))
    out.sort(key=lambda w: (w.line, w.column))
    return out

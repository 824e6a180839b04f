"""approute: application-aware routing of SIP calls to a pool of servers.

    import approute
    router = approute.Router.from_yaml(open("router.yaml").read(), shared="approute")
    d = router.route("conference", call_id=ci, key="example.com")
    if d.ok:
        relay_to(d.uri)

See docs/design.md ("Public contract") for the contract and README.md for the configuration.
"""
from __future__ import annotations

from importlib import metadata as _metadata

from ._core import (
    REFUSE,
    AffinityInfo,
    AlreadyExistsError,
    Candidate,
    ConfigError,
    Decision,
    Error,
    FailedPreconditionError,
    InvalidArgumentError,
    NodeStatus,
    NotFoundError,
    PermissionError,
    ReportResult,
    ResourceExhaustedError,
    Router,
    SessionInfo,
    Strategy,
    StrategyRequest,
    exclusion_names,
    strategies,
    strategy_request_attrs,
    validate_config,
)
from .signing import sign_report

try:  # the installed distribution's, which is VERSION's (pyproject.toml reads it)
    __version__ = _metadata.version("approute")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AffinityInfo",
    "AlreadyExistsError",
    "Candidate",
    "ConfigError",
    "Decision",
    "Error",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NodeStatus",
    "NotFoundError",
    "PermissionError",
    "REFUSE",
    "ReportResult",
    "ResourceExhaustedError",
    "Router",
    "SessionInfo",
    "Strategy",
    "exclusion_names",
    "StrategyRequest",
    "sign_report",
    "strategies",
    "strategy_request_attrs",
    "validate_config",
]

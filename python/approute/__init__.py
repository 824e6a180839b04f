"""approute: application-aware routing of SIP calls to a pool of servers.

    import approute
    router = approute.Router.from_yaml(open("router.yaml").read(), shared="approute")
    d = router.route("conference", call_id=ci, key="example.com")
    if d.ok:
        relay_to(d.uri)

See docs/design.md ("Public contract") for the contract and README.md for the configuration.
"""
from __future__ import annotations

from ._core import (
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
    REFUSE,
    PermissionError,
    ReportResult,
    ResourceExhaustedError,
    Router,
    SessionInfo,
    Strategy,
    StrategyRequest,
    strategies,
    validate_config,
)
from .signing import sign_report

__version__ = "0.1.0"

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
    "StrategyRequest",
    "sign_report",
    "strategies",
    "validate_config",
]

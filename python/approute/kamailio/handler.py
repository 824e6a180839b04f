"""``Handler``, the object ``mod_init()`` hands to app_python3: it composes
the parts (INVITE routing, the rest of the call, status reports, probes)
around one shared ``Context`` and names the entry points Kamailio calls,
for ``python_exec`` and (through ``KemiRoutes``) for KEMI."""

from __future__ import annotations

from typing import Any, Deque, Dict, Optional, Tuple

from .context import KAMAILIO_KSR, Context, entry_point
from .dialog import CallDialog
from .invite import InviteRouting
from .kemi import KemiRoutes
from .probes import Probes
from .publish import StatusReports
from .settings import Settings


class Handler(KemiRoutes):
    """One per Kamailio process (the workers fork after ``mod_init()``)."""

    def __init__(self, settings: Settings, router: Any = None, ksr: Any = None):
        self.ctx = Context(settings, router, ksr if ksr is not None else KAMAILIO_KSR)
        self.rank: Optional[int] = None
        self.invite = InviteRouting(self.ctx)
        self.dialog = CallDialog(self.ctx)
        self.status = StatusReports(self.ctx)
        self.probes = Probes(self.ctx)

    # the shared state, by the names callers (tests, tools) use
    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def router(self) -> Any:
        return self.ctx.router

    @router.setter
    def router(self, router: Any) -> None:
        self.ctx.router = router

    @property
    def ksr(self) -> Any:
        return self.ctx.ksr

    @ksr.setter
    def ksr(self, ksr: Any) -> None:
        self.ctx.ksr = ksr

    @property
    def recent(self) -> Deque[Tuple[float, str]]:
        return self.ctx.recent

    @property
    def counters(self) -> Dict[str, int]:
        return self.ctx.counters

    def log(self, level: str, text: str) -> None:
        self.ctx.log(level, text)

    # ----- app_python3 entry points (return codes: the package docstring) -----

    def child_init(self, rank: int) -> int:
        self.rank = rank
        return 0

    do_app_routing = entry_point(
        "do_app_routing", "invite.route",
        doc="Routes an initial INVITE: sets $du and the X-Exec-App headers.")
    on_failure = entry_point(
        "on_failure", "dialog.failure",
        doc="Failure route: retries on another node or gives up.")
    kemi_failure = entry_point("on_failure", "dialog.failure", KemiRoutes.KEMI_FAILURE)
    on_reply = entry_point(
        "on_reply", "dialog.reply",
        doc="Reply route of the INVITE: a 2xx confirms the session.")
    on_bye = entry_point(
        "on_bye", "dialog.bye",
        doc="An in-dialog BYE: 1 when the node sent it (the session ended), 2 "
            "when the script must arm the BYE's reply route (on_bye_reply).")
    on_bye_reply = entry_point(
        "on_bye_reply", "dialog.bye_reply",
        doc="Reply route of a relayed BYE: a 2xx from a node ends the session.")
    on_cancel = entry_point(
        "on_cancel", "dialog.cancel", doc="CANCEL: the session ends.")
    on_relay_error = entry_point(
        "on_relay_error", "dialog.relay_error",
        doc="t_relay() failed right after routing: the session ends.")
    on_timer = entry_point(
        "on_timer", "dialog.sweep",
        doc="rtimer housekeeping: expires lost sessions and old affinities.")
    on_publish = entry_point(
        "on_publish", "status.handle",
        doc="PUBLISH of the approute-status event package: applied and answered.")
    on_probe_timer = entry_point(
        "on_probe_timer", "probes.tick",
        doc="rtimer tick (every second): a round of probes when one is due.")
    on_probe_request = entry_point(
        "on_probe_request", "probes.request",
        doc="event_route[tm:local-request] of a probe: sets its final response timeout.")
    on_probe_reply = entry_point(
        "on_probe_reply", "probes.reply",
        doc="event_route[uac:reply]: the probe's final answer, or its timeout.")
